"""Recall of the concept a knowledge-VQA question needs, on a tiny prepared world:
the needed concepts checked against the knowledge graph and the answers, and the
evaluator's recall against counts made here for retrievers whose rankings are
known."""

from __future__ import annotations

import re

import numpy as np
import pytest

from configs import clip
from vlkg.data import prepare
from vlkg.data.world import knowledge_benchmarks as kb_lib
from vlkg.data.world import knowledge_queries as kq
from vlkg.data.world import ontology
from vlkg.evaluators import question_recall
from vlkg.methods.reavl_index import entity_hash

TINY = ("smoke,world.num_train=32,world.num_val=8,world.num_test=48,"
        "world.num_test_comp=8,world.num_shards=2,world.workers=1")
COUNTS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
          "nine", "ten", "eleven", "twelve")
SHAPES = [s.name for s in ontology.SHAPES]
COLORS = [c.name for c in ontology.COLORS]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  dataset = prepare.ensure_prepared(clip.get_config(TINY + f",data_dir='{root}'"))
  seed = int(kb_lib.prepared_spec(dataset)["seed"])
  graph = kb_lib.knowledge_graph(dataset)
  return dataset, graph, kb_lib.vqa_questions(kb_lib.split_scenes(dataset, "test"),
                                              seed, graph)


def test_each_question_needs_the_concept_its_answer_comes_from(world):
  _, graph, pairs = world
  needed = question_recall.needed_concepts(pairs)
  assert len(pairs) > 20 and len({q.type for _, q in pairs}) == 5
  for (_, q), concept in zip(pairs, needed):
    facts = kq.concepts_of(graph, concept)
    if q.type == "corners":
      assert graph.nodes[facts["corners"]]["count"] == COUNTS.index(q.answer)
    elif q.type == "family":
      assert (f"a {facts['family']}?" in q.question) == (q.answer == "yes"), q
    elif q.type == "alias_shape":
      word = re.fullmatch(r"what shape is the (.+) one\?", q.question).group(1)
      assert concept in COLORS and word in facts["aliases"]
    elif q.type == "alias_color":
      word = re.fullmatch(r"what color is the (.+)\?", q.question).group(1)
      assert concept in SHAPES and word in facts["aliases"]
    else:
      assert q.type == "shape_class" and concept in SHAPES


class _Tokenizer:
  def __init__(self):
    self.texts = []

  def encode(self, texts):
    start = len(self.texts)
    self.texts += list(texts)
    return np.arange(start, start + len(texts))[:, None]


class _FixedRanking:
  """A retriever over the world's shapes and colours that returns ``ranking`` (names)
  for every input, or, with ``ranking=None``, the names the question itself says."""

  def __init__(self, ranking):
    self.names = SHAPES + COLORS
    self.rows = {entity_hash(n): r for r, n in enumerate(self.names)}
    self.ranking, self.tokenizer = ranking, _Tokenizer()

  def gold_rows(self, hashes):
    return np.vectorize(lambda h: self.rows.get(int(h), -1))(hashes)

  def retrieve(self, images, token_ids, n):
    out = np.full((len(images), n), -1)
    for k, i in enumerate(np.asarray(token_ids)[:, 0]):
      words = self.tokenizer.texts[i].rstrip("?").split()
      names = self.ranking or [w for w in words if w in self.names]
      rows = [self.names.index(name) for name in names][:n]
      out[k, :len(rows)] = rows
    return out


def _expected(pairs, needed, in_top):
  types = sorted({q.type for _, q in pairs})
  hits = {t: [in_top(q, c) for (_, q), c in zip(pairs, needed) if q.type == t]
          for t in types}
  return {t: float(np.mean(h)) for t, h in hits.items()}


def test_recall_counts_the_needed_concept_among_the_top_n(world):
  dataset, _, pairs = world
  needed = question_recall.needed_concepts(pairs)
  ranking = SHAPES[::-1] + COLORS  # shapes first: every shape within 9, colours after
  out = question_recall.evaluate(_FixedRanking(ranking), dataset, "test", ns=(3, 12))
  assert out["reavl/question_n_items"] == len(pairs)
  for n in (3, 12):
    want = _expected(pairs, needed, lambda q, c: ranking.index(c) < n)
    for t, value in want.items():
      assert out[f"reavl/question_recall@{n}/{t}"] == pytest.approx(value), (n, t)
    total = np.mean([ranking.index(c) < n for c in needed])
    assert out[f"reavl/question_recall@{n}"] == pytest.approx(total)
  # Shapes are all within 12, colours 9..11 only: the colour types lose.
  assert out["reavl/question_recall@12/corners"] == 1.0
  assert out["reavl/question_recall@12/family"] < 1.0


def test_a_retriever_that_reads_only_the_question_finds_what_it_names(world):
  """The question describes its object without the needed attribute, so a text-only
  retriever finds the concept only where another object's description names it
  ("the shape smaller than the large hexagon" about another hexagon)."""
  dataset, _, pairs = world
  needed = question_recall.needed_concepts(pairs)
  out = question_recall.evaluate(_FixedRanking(None), dataset, "test", ns=(16,))
  named = [c in q.question.rstrip("?").split() for (_, q), c in zip(pairs, needed)]
  assert out["reavl/question_recall@16"] == pytest.approx(np.mean(named))
  assert np.mean(named) < 0.2


def test_no_retriever_no_metrics(world):
  dataset, _, _ = world
  assert question_recall.evaluate(object(), dataset) == {}
