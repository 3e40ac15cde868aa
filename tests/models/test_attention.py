"""``model.attention``: every implementation of attention.dot_product_attention against
a numpy softmax attention, with masks and a bias; the config key and its errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vlkg.errors import ConfigError
from vlkg.models import attention
from vlkg.models.two_towers import build_model

B, L, H, D = 2, 7, 3, 8
GPU = jax.default_backend() == "gpu"


def reference(q, k, v, mask=None, bias=None):
  """softmax(q k^T / sqrt(d) + bias, masked) v in float64; [B, L, H, D] layout."""
  q, k, v = (np.asarray(t, np.float64).transpose(0, 2, 1, 3) for t in (q, k, v))
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
  if bias is not None:
    logits = logits + np.asarray(bias, np.float64)
  if mask is not None:
    # A fully masked row attends uniformly, as vlkg's attention defines it.
    logits = np.where(mask, logits, np.finfo(np.float64).min)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return (p @ v).transpose(0, 2, 1, 3)


@pytest.fixture(scope="module")
def qkv():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(B, L, H, D)), jnp.float32) for _ in range(3))
  pad = np.ones((B, L), bool)
  pad[1, 4:] = False  # key padding on the second example
  causal = np.tril(np.ones((L, L), bool))
  mask = pad[:, None, None, :] & causal[None, None]
  bias = jnp.asarray(rng.normal(0, 0.5, size=(B, H, L, L)), jnp.float32)
  return q, k, v, jnp.asarray(mask), bias


def cudnn_on_cpu(monkeypatch):
  """Runs layers' cuDNN path (its odd-length padding, its masks) with jax.nn's
  XLA kernel in place of cuDNN's, so that the wrapping is tested anywhere."""
  original = jax.nn.dot_product_attention

  def xla(*args, implementation=None, **kwargs):
    assert implementation == "cudnn"
    return original(*args, implementation="xla", **kwargs)

  monkeypatch.setattr(jax.nn, "dot_product_attention", xla)


@pytest.mark.parametrize("with_mask,with_bias", [(False, False), (True, False),
                                                 (True, True), (False, True)])
def test_xla_matches_numpy(qkv, with_mask, with_bias):
  q, k, v, mask, bias = qkv
  mask = mask if with_mask else None
  bias = bias if with_bias else None
  out = jax.jit(attention.dot_product_attention)(q, k, v, mask, bias)
  np.testing.assert_allclose(out, reference(q, k, v, mask, bias), atol=1e-5)


@pytest.mark.parametrize("length", [L, L + 1])  # odd: padded by one; even: as is
def test_cudnn_wrapping_matches_numpy(qkv, monkeypatch, length):
  cudnn_on_cpu(monkeypatch)
  q, k, v, mask, bias = qkv
  if length != L:
    grow = lambda t: jnp.concatenate([t, t[:, :1]], axis=1)
    q, k, v = grow(q), grow(k), grow(v)
    mask = jnp.pad(mask, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=True)
    bias = jnp.pad(bias, ((0, 0), (0, 0), (0, 1), (0, 1)))
  key_pad = mask[:, :, -1:, :]  # [B, 1, 1, L] key padding only
  for m, b in ((mask, None), (mask, bias), (key_pad, None), (None, bias)):
    out = attention._cudnn_attention(q, k, v, m, b)
    np.testing.assert_allclose(out, reference(q, k, v, m, b), atol=1e-5)


@pytest.mark.skipif(not GPU, reason="cuDNN attention needs an NVIDIA GPU")
def test_cudnn_matches_numpy_on_gpu(qkv):
  q, k, v, mask, bias = qkv
  q, k, v = (t.astype(jnp.bfloat16) for t in (q, k, v))
  out = jax.jit(attention.dot_product_attention, static_argnums=5)(
      q, k, v, mask, None, "cudnn")
  np.testing.assert_allclose(np.asarray(out, np.float32),
                             reference(q, k, v, mask), atol=3e-2)


def test_fully_masked_rows_are_finite_and_uniform(qkv):
  q, k, v, _, _ = qkv
  out = attention.dot_product_attention(q, k, v, jnp.zeros((B, 1, L, L), bool))
  np.testing.assert_allclose(out, jnp.broadcast_to(v.mean(1, keepdims=True), out.shape),
                             atol=1e-5)


def numeric_gradient(f, x, eps=1e-6):
  """Central differences of the scalar f at x, in float64."""
  x = np.array(x, np.float64)
  grad = np.zeros_like(x)
  for i in np.ndindex(x.shape):
    step = np.zeros_like(x)
    step[i] = eps
    grad[i] = (f(x + step) - f(x - step)) / (2 * eps)
  return grad


@pytest.mark.parametrize("case", ["self, causal, a fully masked row, per-head bias",
                                  "cross, key padding, per-key bias", "no mask, no bias"])
def test_hand_written_backward_matches_numeric_gradients(case):
  """The xla path's backward pass (dQ, dK, dV, dBias) against central differences
  of the float64 numpy reference, for self- and cross-attention."""
  rng = np.random.default_rng(1)
  lq, lk = (L, L) if case.startswith(("self", "no")) else (3, L)
  q = rng.normal(size=(B, lq, H, D))
  k, v = (rng.normal(size=(B, lk, H, D)) for _ in range(2))
  mask = bias = None
  if case.startswith("self"):
    mask = np.tril(np.ones((lq, lk), bool))[None, None].repeat(B, 0)
    mask[1, :, 2, :] = False  # uniform attention, and no gradient to its logits
    bias = rng.normal(0, 0.5, size=(1, H, lq, lk))
  elif case.startswith("cross"):
    mask = np.ones((B, 1, 1, lk), bool)
    mask[0, ..., 5:] = False
    bias = rng.normal(0, 0.5, size=(B, 1, 1, lk))
  weights = rng.normal(size=(B, lq, H, D))
  args = {"q": q, "k": k, "v": v, "bias": bias}
  names = [n for n in args if args[n] is not None]

  def loss(*xs):
    a = dict(args, **dict(zip(names, xs)))
    out = attention.dot_product_attention(a["q"], a["k"], a["v"], mask, a["bias"])
    return jnp.sum(out * weights)

  grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(names)))))(
      *(jnp.asarray(args[n], jnp.float32) for n in names))
  for name, grad in zip(names, grads):
    def numpy_loss(x, name=name):
      a = dict(args, **{name: x})
      return np.sum(reference(a["q"], a["k"], a["v"], mask, a["bias"]) * weights)
    np.testing.assert_allclose(grad, numeric_gradient(numpy_loss, args[name]),
                               atol=2e-4, err_msg=name)


def _config(**model):
  config = ml_collections.ConfigDict()
  config.model = dict(embed_dim=8,
                      image=dict(width=16, depth=1, heads=2, patch_size=8),
                      text=dict(width=16, depth=1, heads=2, vocab_size=16,
                                context_length=8, eot_id=15), **model)
  return config


def test_attention_key_reaches_every_block():
  model = build_model(_config(attention="xla"))
  assert model.attention == "xla"
  assert build_model(_config()).attention == "xla"  # configs without the key
  with pytest.raises(ConfigError, match="model.attention='flash'"):
    build_model(_config(attention="flash"))


@pytest.mark.skipif(GPU, reason="the error is for backends without cuDNN")
def test_cudnn_off_gpu_is_an_error_that_names_the_key():
  with pytest.raises(ConfigError, match=r"model\.attention='cudnn' needs a GPU"):
    build_model(_config(attention="cudnn", dtype="bfloat16"))
  with pytest.raises(ConfigError, match="model.attention"):
    attention.dot_product_attention(*(jnp.zeros((1, 2, 1, 8), jnp.bfloat16),) * 3,
                                    implementation="cudnn")
