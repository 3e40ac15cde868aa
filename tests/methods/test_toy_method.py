"""A method defined in this file alone, with a field of its own (the number of words
of each caption), prepared and trained on a tiny world and on a tiny caption corpus
with nothing under vlkg/ knowing it: the method interface of ``vlkg.methods`` and
``vlkg.graphs.fields`` is the whole of what a new field needs."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vlkg import methods, train
from vlkg.data import input_pipeline, prepare, records
from vlkg.data import tokenizer as tok_lib
from vlkg.graphs import fields as F
from vlkg.methods import clip
from vlkg.models import two_towers

# config.method: this very file, as a module path.
METHOD = "tests.methods.test_toy_method"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ----------------------------------------------------------------- the toy method


def _num_words(caption: F.Caption, rng) -> dict:
  del rng
  return {"num_words": len(caption.text.split())}


def fields(config) -> tuple[F.Field, ...]:
  del config
  return (F.Field((F.Feature("num_words", "int32"),), _num_words),)


def default_config() -> dict:
  return {}


def build_model(config):
  return two_towers.build_model(config)


def make_loss_fn(model, config):
  del config

  def loss_fn(params, batch, rng, step):
    del rng, step
    zimg, ztxt, extras = model.apply({"params": params}, batch["image"], batch["text"])
    loss, metrics = clip.clip_loss(zimg, ztxt, extras["logit_scale"])
    metrics["mean_words"] = jnp.mean(batch["num_words"].astype(jnp.float32))
    return loss, metrics

  return loss_fn


# -------------------------------------------------------------------------- tests

STEPS = ",total_steps=3,log_every_steps=1,checkpoint_every_steps=3,input.batch_size=8"


def _config(extra: str) -> ml_collections.ConfigDict:
  from configs import clip as clip_config
  config = clip_config.get_config(f"smoke,method='{METHOD}'{STEPS}{extra}")
  config.unlock()
  config.evals = ml_collections.ConfigDict()  # training is what is tested here
  config.lock()
  return config


def _check_and_train(config, workdir) -> None:
  directory = prepare.ensure_prepared(config)
  layout = records.layout_of(records.read_manifest(directory))
  assert [f.to_json() for f in layout.features] == [
      {"name": "num_words", "dtype": "int32", "shape": []}]
  tokenizer = tok_lib.from_description(records.read_manifest(directory)["tokenizer"],
                                       base_dir=directory)
  keys = methods.batch_keys(config)
  assert keys == ("image", "text", "num_words")
  batch = next(input_pipeline.train_iterator(directory, batch_size=8, seed=0, fields=keys,
                                             shuffle_buffer=16))
  assert batch["num_words"].dtype == np.int32 and batch["num_words"].shape == (8,)
  # The count travels with the caption the pipeline picked.
  words = [len(t.split()) for t in tokenizer.decode(batch["text"])]
  assert batch["num_words"].tolist() == words and min(words) >= 2
  # Evaluation batches carry it for every caption of the image.
  held_out = next(input_pipeline.eval_iterator(directory, "val", batch_size=2,
                                               fields=keys))
  assert held_out["num_words"].shape == (2, layout.captions_per_image)
  for ids, counts in zip(held_out["texts"], held_out["num_words"]):
    real = (ids != tokenizer.pad_id).any(-1)  # a corpus pads missing captions
    assert counts[real].tolist() == [len(t.split()) for t in tokenizer.decode(ids[real])]
    assert not counts[~real].any()

  last = train.train_and_evaluate(config, str(workdir))
  assert last["mean_words"] == pytest.approx(np.mean(words), abs=10)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  assert [m["step"] for m in logged if "mean_words" in m] == [1, 2, 3]
  assert all(m["mean_words"] >= 2 for m in logged if "mean_words" in m)


def test_methods_load_a_module_path():
  import sys
  assert methods.load(METHOD) is sys.modules[METHOD]
  with pytest.raises(ValueError, match="no module no_such.method"):
    methods.load("no_such.method")


def test_toy_method_on_the_world(tmp_path):
  _check_and_train(_config(",world.num_train=64,world.num_val=8,world.num_test=8,"
                           f"world.num_test_comp=8,world.workers=1,data_dir='{tmp_path}'"),
                   tmp_path / "run")


def test_toy_method_on_a_caption_corpus(tmp_path):
  from tests.data.corpora import corpus_fixtures as fx
  path = fx.captions_jsonl(str(tmp_path / "corpus"), n=12)
  _check_and_train(_config(f",input.data='captions',input.path='{path}',input.val_size=3,"
                           f"world.workers=1,data_dir='{tmp_path}'"), tmp_path / "run")


def test_nothing_under_vlkg_names_the_toy_field():
  for base, _, files in os.walk(os.path.join(ROOT, "vlkg")):
    for name in files:
      if name.endswith(".py"):
        with open(os.path.join(base, name)) as f:
          assert "num_words" not in f.read(), os.path.join(base, name)
