"""MosaiCLIP end to end on a tiny prepared world: the prebuilt texts in the records,
the pipeline's fields, and the loss function against the loss on its own inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mosaiclip as mosaic_config
from vlkg import methods, preprocess
from vlkg.data import input_pipeline, prepare, records
from vlkg.data import tokenizer as tok_lib
from vlkg.graphs import negatives, world_parser
import tiny_world
from vlkg.methods import mosaiclip, mosaiclip_loss



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  config, directory = tiny_world.prepared(mosaic_config, root, ",total_steps=10")
  return config, directory


def test_fields_and_fingerprint(setup):
  config, directory = setup
  assert methods.batch_keys(config) == ("image", "text", "mosaic_texts", "mosaic_valid")
  layout = records.layout_of(records.read_manifest(directory))
  assert [(f.name, f.dtype, f.shape) for f in layout.features] == [
      ("mosaic_texts", "int32", (3 + 6 + 1, config.input.text_len)),
      ("mosaic_valid", "bool", (3 + 6 + 1,))]
  # The slot sizes are the method's, and in the fingerprint.
  from configs import mosaiclip as mosaic_cfg
  assert prepare.dataset_dir(mosaic_cfg.get_config(tiny_world.TINY + ",mosaiclip.max_neg=5")
                             ) != prepare.dataset_dir(mosaic_cfg.get_config(tiny_world.TINY))
  # CLIP's dataset is not MosaiCLIP's: its fingerprint ignores the mosaic sizes.
  from configs import clip
  assert prepare.dataset_dir(clip.get_config(tiny_world.TINY)) != prepare.dataset_dir(config)


def test_records_hold_valid_mosaic_texts(setup):
  config, directory = setup
  tok = tok_lib.SentencePieceTokenizer(f"{directory}/tokenizer.model", config.input.text_len)
  it = input_pipeline.train_iterator(directory, batch_size=16, seed=0,
                                     fields=methods.batch_keys(config), shuffle_buffer=64)
  batch = next(it)
  texts, valid = batch["mosaic_texts"], batch["mosaic_valid"]
  assert texts.shape == (16, 10, config.input.text_len) and valid.shape == (16, 10)
  layout = mosaiclip_loss.slot_layout(3, 6)
  vocab = negatives.world_vocabulary()
  n_checked = 0
  for i in range(16):
    caption = world_parser.parse(tok.decode(batch["text"][i:i + 1])[0])
    for k in range(10):
      decoded = tok.decode(texts[i, k:k + 1])[0]
      assert bool(decoded) == bool(valid[i, k]), (i, k, decoded)
      if not valid[i, k]:
        continue
      graph = world_parser.parse(decoded, strict=True)
      slot = k + 1  # slot 0 of the loss layout is the caption
      if layout["positives"].start <= slot < layout["positives"].stop:
        # A sub-caption is true of the caption: the caption entails it.
        assert not negatives.is_negative_of(graph, caption, synonyms=vocab.synonyms)
      else:
        assert negatives.is_negative_of(graph, caption, synonyms=vocab.synonyms)
      n_checked += 1
  assert n_checked > 16


def test_loss_fn_equals_the_loss_on_its_inputs(setup):
  config, directory = setup
  model = methods.build_model(config)
  params = jax.jit(lambda r: methods.init_params(model, config, r))(jax.random.key(0))
  loss_fn = mosaiclip.make_loss_fn(model, config)
  batch = next(input_pipeline.train_iterator(directory, batch_size=8, seed=1,
                                             fields=methods.batch_keys(config), shuffle_buffer=64))
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  batch["image"] = preprocess.normalize_images(batch["image"])
  boundary = mosaiclip.stage1_steps(config)
  assert boundary == 3  # 0.3 of 10 steps

  texts = jnp.concatenate([batch["text"][:, None], batch["mosaic_texts"]], axis=1)
  zimg, ztxt, extras = jax.jit(model.apply)({"params": params}, batch["image"],
                                            texts.reshape(-1, texts.shape[-1]))
  valid = np.concatenate([np.ones((8, 1), bool), np.asarray(batch["mosaic_valid"])], 1)

  @jax.jit
  def expected_loss(step):
    mask = mosaiclip_loss.curriculum_valid(jnp.asarray(valid), step, boundary, 3, 6)
    return mosaiclip_loss.mosaic_loss(
        zimg, ztxt.reshape(8, 11, -1), mosaiclip_loss.positive_slots(3, 6), mask,
        extras["logit_scale"])[0]

  jitted = jax.jit(loss_fn)
  for step, stage in ((0, 1.0), (5, 2.0)):
    loss, metrics = jitted(params, batch, jax.random.key(0), jnp.asarray(step))
    np.testing.assert_allclose(loss, expected_loss(step), rtol=1e-5)
    assert float(metrics["stage"]) == stage
  assert jitted._cache_size() == 1
  # Stage 1 sees fewer texts than stage 2 whenever an image has extras to drop.
  stage1 = mosaiclip_loss.curriculum_valid(jnp.asarray(valid), 0, boundary, 3, 6)
  assert int(stage1.sum()) <= int(valid.sum())


def _old_loss_fn(model, config):
  """MosaiCLIP's step before packing: every slot's text in a row of its own."""
  boundary = mosaiclip.stage1_steps(config)
  positive = mosaiclip_loss.positive_slots(3, 6)

  def loss_fn(params, batch, step):
    b, length = batch["text"].shape
    texts = jnp.concatenate([batch["text"][:, None], batch["mosaic_texts"]], axis=1)
    valid = jnp.concatenate([jnp.ones((b, 1), bool), batch["mosaic_valid"]], axis=1)
    valid = mosaiclip_loss.curriculum_valid(valid, step, boundary, 3, 6)
    zimg, ztxt, extras = model.apply({"params": params}, batch["image"],
                                     texts.reshape(-1, length))
    return mosaiclip_loss.mosaic_loss(zimg, ztxt.reshape(b, 11, -1), positive, valid,
                                      extras["logit_scale"])

  return loss_fn


@pytest.mark.parametrize("row_share", [mosaiclip.PACK_ROW_SHARE, 0.01])
def test_packed_step_has_the_old_loss_and_gradients(setup, monkeypatch, row_share):
  """Packing the texts (and its fallback, when they do not fit) changes neither the
  loss, nor the metrics, nor the gradients of the one-text-per-row formulation."""
  config, directory = setup
  monkeypatch.setattr(mosaiclip, "PACK_ROW_SHARE", row_share)
  model = methods.build_model(config)
  params = jax.jit(lambda r: methods.init_params(model, config, r))(jax.random.key(0))
  batch = next(input_pipeline.train_iterator(directory, batch_size=8, seed=2,
                                             fields=methods.batch_keys(config), shuffle_buffer=64))
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  batch["image"] = preprocess.normalize_images(batch["image"])
  new = jax.jit(jax.value_and_grad(
      lambda p, s: mosaiclip.make_loss_fn(model, config)(p, batch, None, s), has_aux=True))
  old = jax.jit(jax.value_and_grad(
      lambda p, s: _old_loss_fn(model, config)(p, batch, s), has_aux=True))
  for step in (0, 5):  # both curriculum stages
    (loss, metrics), grads = new(params, jnp.asarray(step))
    (old_loss, old_metrics), old_grads = old(params, jnp.asarray(step))
    assert float(metrics["packed"]) == (1.0 if row_share > 0.1 else 0.0)
    np.testing.assert_allclose(loss, old_loss, atol=1e-5)
    for name, value in old_metrics.items():
      np.testing.assert_allclose(metrics[name], value, atol=1e-5, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max()))), grads, old_grads)


def test_unknown_mosaiclip_key_is_named():
  with pytest.raises(KeyError, match="no_such"):
    mosaic_config.get_config("smoke,mosaiclip.no_such=1")
