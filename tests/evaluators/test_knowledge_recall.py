"""The recall of gold entities (vlkg.evaluators.knowledge_recall) by hand."""

import numpy as np

from vlkg.evaluators import knowledge_recall


def test_recall_normalises_by_what_n_slots_hold():
  retrieved = np.array([[3, 1, 4], [9, 2, 6], [0, 0, 0]])
  gold = np.array([[4, 7, -1], [9, 2, 6], [-1, -1, -1]])
  np.testing.assert_allclose(knowledge_recall.recall(retrieved, gold, 2)[:2], [0, 1])
  np.testing.assert_allclose(knowledge_recall.recall(retrieved, gold, 3)[:2], [0.5, 1])
  assert np.isnan(knowledge_recall.recall(retrieved, gold, 3)[2])


def test_an_encoder_without_a_retriever_has_no_metrics(tmp_path):
  class Towers:
    def encode_images(self, images):
      return np.zeros((len(images), 2))
  assert knowledge_recall.evaluate(Towers(), str(tmp_path)) == {}
