"""``model.dtype="bfloat16"``: bf16 compute with float32 params, float32 softmaxes
and a float32 loss; a training step runs and its loss is float32's up to rounding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import clip, mosaiclip
from vlkg import methods, preprocess, sharding, train
from vlkg.tools import bench_step

VOCAB = 64
SMALL = f"smoke,model.text.vocab_size={VOCAB},input.batch_size=8"


def _batch(config):
  batch = bench_step.synthetic_batch(config, VOCAB)
  if config.method == "mosaiclip":
    rng = np.random.default_rng(1)
    b, length = batch["text"].shape
    texts = rng.integers(4, VOCAB, size=(b, 10, length)).astype(np.int32)
    cut = rng.integers(2, length, size=(b, 10))
    texts[np.arange(length)[None, None] > cut[..., None]] = 0
    texts[np.arange(b)[:, None], np.arange(10)[None], cut] = 3  # EOT
    batch.update(mosaic_texts=texts, mosaic_valid=rng.random((b, 10)) < 0.7)
  return batch


@pytest.mark.parametrize("config_module", [clip, mosaiclip])
def test_bfloat16_step_keeps_float32_params_and_loss(config_module):
  config = config_module.get_config(SMALL + ",model.dtype='bfloat16'")
  trainer = train.Trainer(config)
  assert trainer.model.dtype == jnp.bfloat16
  state = trainer.init_state()
  params = jax.tree.map(np.asarray, state["params"])  # the step donates the state
  host = _batch(config)
  state, metrics = trainer.update_step(state, sharding.global_batch(host, trainer.mesh))
  assert metrics["loss"].dtype == jnp.float32 and np.isfinite(metrics["loss"])
  assert np.isfinite(metrics["grad_norm"]) and float(metrics["grad_norm"]) > 0
  assert {x.dtype for x in jax.tree.leaves(state["params"])} == {jnp.dtype(jnp.float32)}
  assert int(state["step"]) == 1
  # The same params and batch in float32: the loss agrees up to bf16 rounding.
  f32 = config_module.get_config(SMALL)
  model = methods.build_model(f32)
  batch = dict(host, image=preprocess.normalize_images(host["image"]))
  loss, _ = jax.jit(methods.load(f32.method).make_loss_fn(model, f32))(
      params, batch, jax.random.key(0), jnp.asarray(0))
  np.testing.assert_allclose(metrics["loss"], loss, rtol=2e-2)
