"""Knowledge-CLIP end to end on a tiny prepared world: the triplet table and the
draws in the records, the step's constants held on device, training from scratch
and fine-tuning with the distillation teacher, and the KG evaluation."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from configs import knowledge_clip as kc_config
from vlkg import methods, train
from vlkg.data import input_pipeline, kg_table, records
from vlkg.methods import knowledge_clip as kc
import tiny_world

STEPS = ",total_steps=3,log_every_steps=1,checkpoint_every_steps=3,input.batch_size=8"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  config, directory = tiny_world.prepared(kc_config, root, STEPS + ",evals={}")
  return root, config, directory


def test_prepared_world_has_triplets_and_draws(setup):
  _, config, directory = setup
  table = kg_table.read(directory)
  s = config.model.image_size
  assert table.images.shape[1:] == (s, s, 3) and table.is_image.sum() > 100
  assert table.heldout.any() and all(len(table.training(g)) for g in kg_table.GROUPS)
  assert methods.batch_keys(config) == ("image", "text", "kg_draw")
  layout = records.layout_of(records.read_manifest(directory))
  assert [f.to_json() for f in layout.features] == [
      {"name": "kg_draw", "dtype": "int32", "shape": [3]}]
  batch = next(input_pipeline.train_iterator(directory, batch_size=8, seed=0,
                                             fields=methods.batch_keys(config),
                                             shuffle_buffer=16))
  draws = batch["kg_draw"]
  assert draws.shape == (8, 3) and draws.min() >= 0 and len(np.unique(draws)) > 20


def test_the_step_holds_the_table_as_an_argument(setup):
  _, config, _ = setup
  trainer = train.Trainer(config)
  assert isinstance(trainer.update_step, train.BoundStep)
  images = trainer.update_step.constants["images"]
  assert isinstance(images, jax.Array) and images.dtype == np.uint8
  state = jax.eval_shape(trainer.init_state)
  b, s, l = 8, config.model.image_size, config.input.text_len
  batch = {"image": jax.ShapeDtypeStruct((b, s, s, 3), np.uint8),
           "text": jax.ShapeDtypeStruct((b, l), np.int32),
           "kg_draw": jax.ShapeDtypeStruct((b, 3), np.int32)}
  text = trainer.update_step.lower(state, batch).lowered.as_text()
  # The table's pixels are not compiled into the program as a literal.
  assert len(text) < images.size


def _tiny(extra: str, root) -> str:
  return tiny_world.TINY + f",data_dir='{root}'" + STEPS + extra


def test_finetune_from_clip_with_the_teacher(setup):
  """The paper continues from a pre-trained CLIP: the base here is a CLIP run."""
  root, config, directory = setup
  # CLIP's towers as a params.npz (what `configs/clip.py:base` ends with).
  from vlkg import checkpoint
  from vlkg.methods import clip
  base = os.path.join(root, "clip")
  os.makedirs(base)
  checkpoint.save_params_npz(os.path.join(base, "params.npz"), methods.init_params(
      clip.build_model(config), config, jax.random.key(1)))
  tuned = kc_config.get_config(_tiny(
      f",total_steps=2,eval_every_steps=0,model_init='{base}',select_metric='',"
      "optim.warmup_steps=0,"
      "knowledge_clip.fusion_depth=1,evals={'kg': {'type': 'kg'}}", root))
  workdir = os.path.join(root, "tuned")
  last = train.train_and_evaluate(tuned, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  kd = [m["kd"] for m in logged if "kd" in m]
  # The student starts as the teacher, then moves away from it.
  assert kd[0] == pytest.approx(0.0, abs=1e-5) and kd[-1] > 0
  assert all(np.isfinite(last[k]) for k in ("loss", "clip", "e2e", "e2r", "g2e", "kd"))
  assert {"kg/tail_R@1", "kg/tail_R@5", "kg/relation_acc"} <= set(last)
  assert last["kg/n_items"] == kg_table.read(directory).heldout.sum()
  teacher = kc.load_teacher(train.resolve_config(tuned, directory))
  assert set(teacher) == {"img", "txt", "logit_scale", "logit_bias"}


@pytest.mark.slow  # ~2 min on 2 loaded cores, most of it compiling
def test_train_from_scratch_without_a_teacher(setup):
  root, config, _ = setup
  last = train.train_and_evaluate(config, os.path.join(root, "scratch"))
  assert last["kd"] == 0.0
  assert all(np.isfinite(last[k]) for k in ("loss", "clip", "e2e", "e2r", "g2e"))


def test_a_corpus_gets_its_table_from_a_knowledge_graph_file(tmp_path):
  from tests.data.corpora import corpus_fixtures as fx
  from vlkg.data import prepare
  path = fx.captions_jsonl(str(tmp_path / "corpus"), n=12)
  conceptnet = tmp_path / "assertions.csv"
  conceptnet.write_text(
      "/a/1\t/r/IsA\t/c/en/dog/n\t/c/en/animal\t{\"weight\": 1.0}\n"
      "/a/2\t/r/IsA\t/c/en/cat/n\t/c/en/animal\t{\"weight\": 2.0}\n")
  config = kc_config.get_config(
      f"smoke,input.data='captions',input.path='{path}',input.val_size=3,"
      f"world.workers=1,data_dir='{tmp_path}',knowledge_clip.kg_path='{conceptnet}',"
      "knowledge_clip.kg_format='conceptnet'")
  directory = prepare.ensure_prepared(config)
  config = train.resolve_config(config, directory)
  assert not os.path.exists(os.path.join(directory, kg_table.TABLE))
  table, tokenizer = kc.dataset_table(config)
  assert table.entity_text.tolist() == ["dog", "animal", "cat"]
  assert os.path.exists(os.path.join(directory, kg_table.TABLE))
  loss_fn = kc.make_loss_fn(kc.build_model(config), config)
  # Text triplets only: the mixed and image groups are empty and skipped.
  c = loss_fn.constants
  assert len(c["train_text_text"]) == 2 and not len(c["train_mixed"])
  assert c["entity_tokens"].shape == (3, 16) and (c["entity_tokens"][:, 0] != 0).all()
