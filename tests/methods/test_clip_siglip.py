"""Tests for the CLIP and SigLIP losses and their method-module interface."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vlkg.methods import clip, siglip
from vlkg.models import two_towers


def np_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def np_clip_loss(zimg, ztxt, scale):
  logits = scale * np.asarray(zimg, np.float64) @ np.asarray(ztxt, np.float64).T
  n = len(logits)
  i2t = -np.mean(np_log_softmax(logits, 1)[np.arange(n), np.arange(n)])
  t2i = -np.mean(np_log_softmax(logits, 0)[np.arange(n), np.arange(n)])
  return (i2t + t2i) / 2


def np_siglip_loss(zimg, ztxt, scale, bias):
  logits = scale * np.asarray(zimg, np.float64) @ np.asarray(ztxt, np.float64).T
  logits += bias
  labels = 2 * np.eye(len(logits)) - 1
  # log sigmoid(x) = -log(1 + exp(-x)), written overflow-free.
  return np.sum(np.logaddexp(0.0, -labels * logits)) / len(logits)


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
  z = np.random.default_rng(seed).normal(size=(n, d))
  return (z / np.linalg.norm(z, axis=-1, keepdims=True)).astype(np.float32)


# A hand-made 3x3 case: with zimg = I, logits[i, j] = scale * ztxt[j, i].
HAND_LOGITS = np.array([[0.9, 0.5, 0.1],
                        [0.8, 0.7, 0.0],
                        [0.2, 0.3, 0.6]], np.float32)
# Rows: argmax 0, 0, 2 -> i2t 2/3. Columns: argmax 0, 1, 2 -> t2i 1.


@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_clip_loss_matches_numpy(scale):
  zimg, ztxt = random_unit(8, 6, 0), random_unit(8, 6, 1)
  loss, metrics = clip.clip_loss(zimg, ztxt, jnp.float32(scale))
  np.testing.assert_allclose(loss, np_clip_loss(zimg, ztxt, scale), rtol=1e-5)
  logits = scale * zimg.astype(np.float64) @ ztxt.T
  np.testing.assert_allclose(metrics["pos_logit_mean"], np.trace(logits) / 8,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrics["neg_logit_mean"],
                             (logits.sum() - np.trace(logits)) / 56,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrics["logit_scale"], scale)


def test_clip_metrics_on_hand_made_case():
  scale = 10.0
  loss, m = clip.clip_loss(np.eye(3, dtype=np.float32), HAND_LOGITS.T,
                           jnp.float32(scale))
  np.testing.assert_allclose(m["i2t_acc"], 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(m["t2i_acc"], 1.0)
  np.testing.assert_allclose(m["pos_logit_mean"], scale * 2.2 / 3, rtol=1e-6)
  np.testing.assert_allclose(m["neg_logit_mean"], scale * 1.9 / 6, rtol=1e-6)
  np.testing.assert_allclose(
      loss, np_clip_loss(np.eye(3), HAND_LOGITS.T, scale), rtol=1e-6)


def test_clip_loss_of_perfect_and_swapped_pairs():
  eye = np.eye(4, dtype=np.float32)
  loss, m = clip.clip_loss(eye, eye, jnp.float32(100.0))
  # log(1 + 3 exp(-100)) underflows to 0 in float32.
  assert float(loss) < 1e-6 and float(m["i2t_acc"]) == 1.0
  loss, m = clip.clip_loss(eye, eye[[1, 0, 2, 3]], jnp.float32(1.0))
  np.testing.assert_allclose(m["i2t_acc"], 0.5)
  np.testing.assert_allclose(m["t2i_acc"], 0.5)
  # The swapped pairs cost log(3 + e) - 0 each, the others log(3 + e) - 1.
  np.testing.assert_allclose(loss, math.log(3 + math.e) - 0.5, rtol=1e-6)


def test_clip_loss_scale_gradient_matches_finite_difference():
  zimg, ztxt = random_unit(6, 5, 2), random_unit(6, 5, 3)
  g = jax.grad(lambda s: clip.clip_loss(zimg, ztxt, s)[0])(jnp.float32(7.0))
  eps = 1e-4
  fd = (np_clip_loss(zimg, ztxt, 7.0 + eps)
        - np_clip_loss(zimg, ztxt, 7.0 - eps)) / (2 * eps)
  assert np.isfinite(g)
  np.testing.assert_allclose(g, fd, rtol=1e-3)


@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (3.0, 0.5), (100.0, -2.0)])
def test_siglip_loss_matches_numpy(scale, bias):
  zimg, ztxt = random_unit(8, 6, 4), random_unit(8, 6, 5)
  loss, m = siglip.siglip_loss(zimg, ztxt, jnp.float32(scale), jnp.float32(bias))
  np.testing.assert_allclose(loss, np_siglip_loss(zimg, ztxt, scale, bias),
                             rtol=1e-5)
  logits = scale * zimg.astype(np.float64) @ ztxt.T + bias
  np.testing.assert_allclose(m["pos_logit_mean"], np.trace(logits) / 8,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(m["logit_bias"], bias)
  np.testing.assert_allclose(m["logit_scale"], scale)


def test_siglip_hand_made_case():
  eye = np.eye(4, dtype=np.float32)
  # Init of the paper: positives get logit 0, negatives -10.
  loss, m = siglip.siglip_loss(eye, eye, jnp.float32(10.0), jnp.float32(-10.0))
  expected = (4 * math.log(2) + 12 * math.log1p(math.exp(-10.0))) / 4
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(m["pos_logit_mean"], 0.0, atol=1e-6)
  np.testing.assert_allclose(m["neg_logit_mean"], -10.0, rtol=1e-6)
  loss, m = siglip.siglip_loss(np.eye(3, dtype=np.float32), HAND_LOGITS.T,
                               jnp.float32(10.0), jnp.float32(-5.0))
  np.testing.assert_allclose(m["i2t_acc"], 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(m["t2i_acc"], 1.0)


# --- method modules on a tiny model -----------------------------------------


def tiny_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = dict(
      embed_dim=16,
      image=dict(width=32, depth=2, heads=4, patch_size=8, act="quick_gelu"),
      text=dict(width=32, depth=2, heads=4, vocab_size=16, context_length=8),
  )
  return config


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  text = rng.integers(1, 15, size=(3, 8)).astype(np.int32)
  text[:, 5] = 15  # EOT = max id
  text[:, 6:] = 0
  return {"image": rng.normal(size=(3, 16, 16, 3)).astype(np.float32),
          "text": text}


def fake_params(model, batch):
  """Random parameters of the right tree, without compiling an init."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), batch["image"],
                          batch["text"])["params"]
  rng = np.random.default_rng(1)
  return jax.tree.map(
      lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype), shapes)


@pytest.mark.parametrize("method", [clip, siglip])
def test_method_interface(method, batch):
  config = tiny_config()
  assert method.fields(config) == ()
  model = method.build_model(config)
  assert isinstance(model, two_towers.TwoTowers)
  if method is clip:
    assert model.init_logit_scale == pytest.approx(math.log(1 / 0.07))
  else:
    assert model.init_logit_scale == pytest.approx(math.log(10.0))
    assert model.init_logit_bias == -10.0
  params = fake_params(model, batch)
  params["logit_scale"] = np.float32(math.log(20.0))
  params["logit_bias"] = np.float32(-3.0)
  loss, metrics = jax.jit(method.make_loss_fn(model, config))(
      params, batch, jax.random.key(0), 0)
  zimg, ztxt, _ = model.apply({"params": params}, batch["image"], batch["text"])
  if method is clip:
    expected = np_clip_loss(zimg, ztxt, 20.0)
  else:
    expected = np_siglip_loss(zimg, ztxt, 20.0, -3.0)
  np.testing.assert_allclose(loss, expected, rtol=1e-4)
  np.testing.assert_allclose(metrics["logit_scale"], 20.0, rtol=1e-5)


def test_clip_param_gradients_are_finite(batch):
  config = tiny_config()
  model = clip.build_model(config)
  params = fake_params(model, batch)
  loss_fn = clip.make_loss_fn(model, config)
  grad_fn = jax.jit(jax.grad(lambda p: loss_fn(p, batch, jax.random.key(0), 0)[0]))
  for log_scale in (math.log(1 / 0.07), math.log(1000.0)):
    params["logit_scale"] = np.float32(log_scale)
    grads = grad_fn(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    g_scale = float(grads["logit_scale"])
    if log_scale < math.log(100.0):
      assert g_scale != 0.0
    else:
      # Clipped: the effective scale no longer depends on the parameter.
      assert g_scale == 0.0


def test_siglip_inits_are_its_config_section():
  """SigLIP's t' and b are written once (``default_config``) and apply as set."""
  from configs import siglip as siglip_config
  config = siglip_config.get_config("smoke,siglip.init_logit_bias=-5.0")
  assert config.siglip.init_logit_scale == pytest.approx(math.log(10.0))
  assert "init_logit_scale" not in config.model
  model = siglip.build_model(config)
  assert model.init_logit_bias == -5.0
  assert model.init_logit_scale == pytest.approx(math.log(10.0))
  assert clip.default_config() == {}
