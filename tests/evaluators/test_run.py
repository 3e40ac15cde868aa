"""vlkg.evaluators: evaluator types by module, the evals that apply to the data, and
the retrieval evaluator on a tiny prepared world, against an encoder whose ranks are
known."""

from __future__ import annotations

import hashlib

import ml_collections
import numpy as np
import pytest

from configs import clip, structure_clip
from vlkg import evaluators
from vlkg.data import prepare
from vlkg.evaluators import retrieval, world

TINY = ("smoke,world.num_train=64,world.num_val=16,world.num_test=16,"
        "world.num_test_comp=16,world.num_shards=2,world.workers=1")
N_IMAGES, CAPTIONS_PER_IMAGE = 16, 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  return prepare.ensure_prepared(clip.get_config(TINY + f",data_dir='{root}'"))


def _unit_rows(keys: list[bytes], dim: int = 64) -> np.ndarray:
  """A deterministic pseudo-random unit vector per key."""
  rows = [np.random.default_rng(int.from_bytes(hashlib.sha1(k).digest()[:8], "little"))
          .normal(size=dim) for k in keys]
  rows = np.asarray(rows, np.float32)
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class HashEncoder:
  """Embeds each distinct image and caption as its own random unit vector."""

  def encode_images(self, images):
    return _unit_rows([np.ascontiguousarray(im).tobytes() for im in images])

  def encode_texts(self, texts):
    return _unit_rows([t.encode() for t in texts])


class ConstantEncoder:
  """Every embedding equal: every score ties, and ties count against the model."""

  def encode_images(self, images):
    return np.ones((len(images), 4), np.float32) / 2

  def encode_texts(self, texts):
    return np.ones((len(texts), 4), np.float32) / 2


def _config(arg: str = "", module=clip, evals=None) -> ml_collections.ConfigDict:
  config = module.get_config(TINY + arg)
  if evals is not None:
    config.evals = ml_collections.ConfigDict(evals)
  return config


# ------------------------------------------------------------------- types


def test_an_unknown_type_names_itself_and_lists_the_types():
  with pytest.raises(ValueError) as e:
    evaluators.load("retreival")
  message = str(e.value)
  assert "unknown evaluator type 'retreival'" in message
  for name in ("retrieval", "world", "real_benchmarks", "grounding"):
    assert f"'{name}'" in message
  # A helper module of the package is no evaluator either.
  with pytest.raises(ValueError, match="unknown evaluator type 'common'"):
    evaluators.load("common")
  assert evaluators.load("retrieval") is retrieval
  assert evaluators.names() == ["grounding", "kg", "knowledge_recall", "probe",
                                "question_recall", "real_benchmarks", "retrieval",
                                "text_prior", "vqa_head", "world"]


def test_run_with_an_unknown_type_fails_before_evaluating(dataset):
  config = _config(evals={"x": {"type": "no_such_evaluator"}})
  with pytest.raises(ValueError, match="unknown evaluator type 'no_such_evaluator'"):
    evaluators.run(config, ConstantEncoder(), dataset)


# ---------------------------------------------------------------- for_data


def test_on_the_world_the_evals_are_as_written():
  config = structure_clip.get_config("smoke")
  evals, select = evaluators.for_data(config)
  assert evals == {"world": {"type": "world", "splits": ("val", "test", "test_comp"),
                             "max_items": 0},
                   "kg": {"type": "kg"}}
  assert select == "world_val/attribute_swap"


def test_on_a_corpus_retrieval_takes_the_place_of_the_world_suites():
  config = _config(",input.data='coco'", structure_clip, evals={
      "world": {"type": "world", "splits": ("val", "test")},
      "aro": {"type": "real_benchmarks", "benchmark": "aro_relation", "data": "x.json"}})
  evals, select = evaluators.for_data(config)
  assert evals == {
      "aro": {"type": "real_benchmarks", "benchmark": "aro_relation", "data": "x.json"},
      "retrieval": {"type": "retrieval", "split": "val"}}
  assert select == evaluators.RETRIEVAL_SELECT_METRIC == "retrieval/val/image_to_text_R@1"
  assert sorted(config.evals) == ["aro", "world"]  # the config itself is not changed
  # A select_metric that is not a world one is kept; no world evals, no retrieval.
  config = _config(",input.data='coco',select_metric='aro_relation/macro_accuracy'",
                   evals={})
  assert evaluators.for_data(config) == ({}, "aro_relation/macro_accuracy")


# --------------------------------------------------------------- retrieval


def test_retrieval_evaluator_ranks_a_world_split(dataset):
  """type "retrieval" scores what the world evaluator's retrieval scored."""
  config = _config(evals={"r": {"type": "retrieval", "split": "test"}})
  got = evaluators.run(config, HashEncoder(), dataset)
  want = world.evaluate(HashEncoder(), dataset, splits=(), retrieval_split="test",
                        grounding=False)
  assert got == want
  assert set(got) == ({f"retrieval/test/{m}" for m in retrieval.metric_names()}
                      | {"retrieval/test/n_items", "retrieval/test/missing_images"})
  assert got["retrieval/test/n_items"] == N_IMAGES
  assert got["retrieval/test/missing_images"] == 0.0


def test_retrieval_evaluator_with_every_score_tied(dataset):
  """Ties count against the model: each image is ranked below every caption of the
  other images, each caption below every image."""
  got = retrieval.evaluate(ConstantEncoder(), dataset, split="test", batch_size=5)
  n_texts = N_IMAGES * CAPTIONS_PER_IMAGE
  assert got["retrieval/test/image_to_text_mean_rank"] == n_texts - CAPTIONS_PER_IMAGE + 1
  assert got["retrieval/test/text_to_image_mean_rank"] == N_IMAGES
  for direction in ("image_to_text", "text_to_image"):
    for k in (1, 5, 10):
      assert got[f"retrieval/test/{direction}_R@{k}"] == 0.0
  # The default split is the held-out "val" (what a real corpus's run ranks).
  assert "retrieval/val/n_items" in retrieval.evaluate(ConstantEncoder(), dataset)
  with pytest.raises(ValueError, match="needs a prepared dataset_dir or a Karpathy file"):
    retrieval.evaluate(ConstantEncoder())
