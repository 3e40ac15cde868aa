"""The VQA head (`vlkg.evaluators.answer_head`) and the world's knowledge VQA answered
through it (`vlkg.evaluators.vqa_head`): a head that learns what a linear one cannot,
selection on the held-out score, and the evaluator against a direct count."""

from __future__ import annotations

import collections
import types

import numpy as np
import pytest

from vlkg.data.benchmarks import okvqa
from tests import trainer_world
from vlkg.evaluators import answer_head, vqa_head, world_knowledge

SMALL = answer_head.HeadConfig(hidden=32, steps=600, batch_size=64, lr=1e-2,
                               select_every=200)


def _xor(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.choice([-1.0, 1.0], size=(n, 2)) + 0.1 * rng.normal(size=(n, 2))
  return x, (np.sign(x[:, 0]) != np.sign(x[:, 1])).astype(np.int64)


def test_the_head_learns_xor_and_is_reproducible():
  x, y = _xor(512, 0)
  vx, vy = _xor(128, 1)
  select = lambda logits: float(np.mean(np.argmax(logits(vx), 1) == vy))
  head = answer_head.fit(x, y, 2, select, SMALL)
  assert head.selected_score == 1.0  # no linear classifier does better than 3/4
  np.testing.assert_array_equal(np.argmax(head.logits(vx), 1), vy)
  again = answer_head.fit(x, y, 2, select, SMALL)
  np.testing.assert_array_equal(head.logits(vx), again.logits(vx))


def test_selection_keeps_the_best_candidate():
  x, y = _xor(64, 0)
  scores = iter([0.2, 0.7, 0.5])
  head = answer_head.fit(x, y, 2, lambda logits: next(scores), SMALL)
  assert (head.selected_score, head.selected_step) == (0.7, 400)


def test_bad_labels_are_named():
  with pytest.raises(ValueError, match=r"\[0, 2\)"):
    answer_head.fit(np.zeros((3, 2)), np.array([0, 1, 2]), 2, lambda f: 0.0, SMALL)
  with pytest.raises(ValueError, match="expected"):
    answer_head.fit(np.zeros((3, 2)), np.array([0, 1]), 2, lambda f: 0.0, SMALL)


def _item(answer, kind):
  return okvqa.VqaItem(0, 0, "q", (answer,) * 10, kind)


def test_labels_and_per_type_by_hand():
  vocabulary = ["yes", "no", "four"]
  qs = [_item("yes", "family"), _item("4", "corners"), _item("no", "family")]
  np.testing.assert_array_equal(vqa_head.labels(qs, vocabulary), [0, 2, 1])
  assert vqa_head.per_type(np.array([0, 1, 0]), qs, vocabulary) == {
      "corners": 0.0, "family": 0.5}


class _Towers:
  """Image -> its mean pixel; text -> its length."""

  def encode_images(self, images):
    return np.asarray(images, np.float32).mean((1, 2))

  def encode_texts(self, texts):
    return np.array([[len(t)] for t in texts], np.float32)


def test_features_are_the_towers_unless_the_encoder_gives_its_own():
  images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
  got = vqa_head.features(_Towers(), images, ["ab", "abc"], batch_size=1)
  np.testing.assert_allclose(got, np.concatenate(
      [images.astype(np.float32).mean((1, 2)), [[2], [3]]], 1))
  own = _Towers()
  own.question_features = lambda images, qs, fit: np.full((len(qs), 5), 7.0 + fit)
  np.testing.assert_array_equal(vqa_head.features(own, images, ["a", "b"], 8),
                                np.full((2, 5), 7.0))
  np.testing.assert_array_equal(vqa_head.features(own, images, ["a"], 8, fit=True),
                                np.full((1, 5), 8.0))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """The trainer tests' small world (256 train scenes)."""
  from vlkg.data import prepare
  return prepare.ensure_prepared(trainer_world.config(trainer_world.prepared(
      tmp_path_factory)))


def test_featureless_model_scores_the_train_prior(dataset):
  """A model whose features are constant gets one answer for every question: the
  most frequent train answer, so its test score is that answer's share of test."""
  from vlkg.data.world import knowledge_benchmarks
  constant = types.SimpleNamespace(
      encode_images=lambda images: np.ones((len(images), 3), np.float32),
      encode_texts=lambda texts: np.ones((len(texts), 3), np.float32))
  out = vqa_head.evaluate(constant, dataset, fit_scenes=96, hidden=16, steps=400,
                          batch_size=32, lr=1e-2, select_every=200)
  _, fit = knowledge_benchmarks.train_vqa_items(dataset, 96)
  counts = collections.Counter(q.answers[0] for q in fit)
  top = max(counts.values())
  test = world_knowledge.read(dataset, "test")["questions"]
  shares = {a: np.mean([q.answers[0] == a for q in test])
            for a, c in counts.items() if c == top}
  assert any(out["world/kvqa_head"] == pytest.approx(v) for v in shares.values())
  assert out["world/kvqa_head_n_fit"] == len(fit)
  kinds = {q.question_type for q in test}
  assert {k for k in out if k.startswith("world/kvqa_head/")} == {
      f"world/kvqa_head/{k}" for k in kinds}


def test_not_a_world_reports_nothing(tmp_path):
  assert vqa_head.evaluate(_Towers(), str(tmp_path)) == {}


def test_several_heads_report_their_mean_and_standard_error(dataset):
  """``heads`` = 2 fits seeds 0 and 1 on the same features: each score is the
  mean of the two single-head evaluations."""
  kw = dict(fit_scenes=96, hidden=16, steps=200, batch_size=32, lr=1e-2,
            select_every=100)
  one, two = (vqa_head.evaluate(_Towers(), dataset, seed=s, **kw) for s in (0, 1))
  both = vqa_head.evaluate(_Towers(), dataset, heads=2, seed=0, **kw)
  for key in one:
    if key != "world/kvqa_head_n_fit":
      assert both[key] == pytest.approx((one[key] + two[key]) / 2), key
  a, b = one["world/kvqa_head"], two["world/kvqa_head"]
  assert both["world/kvqa_head_se"] == pytest.approx(abs(a - b) / 2)
  assert "world/kvqa_head_se" not in one
  with pytest.raises(ValueError, match="heads=0"):
    vqa_head.evaluate(_Towers(), dataset, heads=0, **kw)
