"""Scaled softmax attention, the one place every Transformer of vlkg computes it.

``model.attention`` chooses the implementation: ``"xla"`` (batched einsums with a
hand-written backward pass, any backend) or ``"cudnn"`` (cuDNN's fused attention
through ``jax.nn.dot_product_attention``, NVIDIA GPUs, bf16/fp16).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
DType = Any


# ``model.attention``: how softmax attention is computed (`dot_product_attention`).
ATTENTION = ("xla", "cudnn")


def check_attention(implementation: str, dtype: DType = jnp.float32) -> None:
  """Raises a ConfigError naming ``model.attention`` when it cannot run here.

  cuDNN's fused attention exists only on NVIDIA GPUs and takes fp16/bf16 inputs,
  so ``"cudnn"`` needs a GPU backend and ``model.dtype="bfloat16"``.
  """
  from vlkg.errors import ConfigError
  if implementation not in ATTENTION:
    raise ConfigError(f"model.attention={implementation!r}: expected one of {ATTENTION}")
  if implementation != "cudnn":
    return
  backend = jax.default_backend()
  if backend != "gpu":
    raise ConfigError(f"model.attention='cudnn' needs a GPU, but JAX's backend is "
                      f"{backend!r}; use model.attention='xla'")
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    raise ConfigError(f"model.attention='cudnn' computes in bf16/fp16 only, but "
                      f"model.dtype={jnp.dtype(dtype).name!r}; set "
                      "model.dtype='bfloat16'")


def _scaled_logits(q: Array, k: Array, mask: Array | None, bias: Array | None) -> Array:
  """q k^T / sqrt(Dh) (+ bias, masked) in float32, [B, H, Lq, Lk].

  Logits and softmax stay float32 even under bf16 compute: bf16 logits saturate
  and the exponentials lose most of their mantissa. The bias is added in float32
  for the same reason: a bf16 bias would quantise the small per-edge offsets it is
  meant to learn.
  """
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits * q.shape[-1]**-0.5
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    # `where`, not `+ mask_bias`: adding finfo.min to a negative logit overflows
    # to -inf, and a fully masked row would then give NaNs. With `where`, such a
    # row becomes a finite uniform distribution instead.
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return logits


@jax.custom_vjp
def _head_major_attention(q: Array, k: Array, v: Array, mask: Array | None,
                          bias: Array | None) -> Array:
  """softmax(logits) v on [B, H, L, Dh] operands, with a hand-written backward pass.

  The backward pass is the standard one (as in FlashAttention, Dao et al. 2022,
  §B.2, without the tiling): with P = softmax(S) and dO the output's cotangent,

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dP * P)),
    dQ = dS K / sqrt(Dh),   dK = dS^T Q / sqrt(Dh),   dBias = dS (summed to its shape).

  Six batched matmuls and one elementwise pass. XLA's own derivative of the
  einsum formulation keeps the softmax's intermediate broadcasts and runs 2x slower
  on CPU (docs/results.md, "Training step"); the two agree to float rounding
  (tests/models/test_attention.py).
  """
  return _head_major_forward(q, k, v, mask, bias)[0]


def _head_major_forward(q, k, v, mask, bias):
  weights = jax.nn.softmax(_scaled_logits(q, k, mask, bias), axis=-1)
  out = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v)
  return out, (q, k, v, mask, bias, weights)


def _head_major_backward(residuals, d_out):
  q, k, v, mask, bias, weights = residuals
  d_v = jnp.einsum("bhqk,bhqd->bhkd", weights.astype(v.dtype), d_out)
  d_weights = jnp.einsum("bhqd,bhkd->bhqk", d_out, v, preferred_element_type=jnp.float32)
  d_logits = weights * (d_weights - jnp.sum(d_weights * weights, axis=-1, keepdims=True))
  if mask is not None:  # `where` passes no gradient to the masked logits
    d_logits = jnp.where(mask, d_logits, 0.0)
  d_bias = None
  if bias is not None:
    summed = tuple(i for i, n in enumerate(bias.shape) if n == 1 and d_logits.shape[i] != 1)
    d_bias = jnp.sum(d_logits, axis=summed, keepdims=True).astype(bias.dtype)
  d_scaled = (d_logits * q.shape[-1]**-0.5).astype(q.dtype)
  d_q = jnp.einsum("bhqk,bhkd->bhqd", d_scaled, k)
  d_k = jnp.einsum("bhqk,bhqd->bhkd", d_scaled, q)
  return d_q, d_k, d_v, None, d_bias


_head_major_attention.defvjp(_head_major_forward, _head_major_backward)


def _xla_attention(q: Array, k: Array, v: Array, mask: Array | None,
                   bias: Array | None) -> Array:
  """Softmax attention as batched einsums; q, k, v [B, L, H, Dh] -> [B, L, H, Dh].

  Heads before positions ([B, H, L, Dh]) inside: with the batch dimensions leading
  and contiguous, XLA's batched matmuls run 4x faster on CPU than on the
  [B, L, H, Dh] layout (measured by the step benchmark), and no slower elsewhere.
  The backward pass is ``_head_major_attention``'s own (docs/results.md, "Training
  step").
  """
  q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
  return _head_major_attention(q, k, v, mask, bias).transpose(0, 2, 1, 3)


def _cudnn_attention(q: Array, k: Array, v: Array, mask: Array | None,
                     bias: Array | None) -> Array:
  """cuDNN's fused (flash) attention through ``jax.nn.dot_product_attention``.

  cuDNN trains with a mask or bias only on even sequence lengths, so an odd length
  (a 65-token ViT, CLIP's 77-token context) gets one extra key that is masked out
  and one extra query whose output is dropped. The mask joins the bias in the
  compute dtype there (cuDNN's own rule); the softmax is float32 inside the kernel.
  """
  length = q.shape[1]
  if length % 2 and (mask is not None or bias is not None):
    pad = lambda t: jnp.pad(t, ((0, 0), (0, 1), (0, 0), (0, 0)))
    q, k, v = pad(q), pad(k), pad(v)
    keys = jnp.arange(length + 1) < length
    if mask is None:
      mask = keys[None, None, None, :]
    else:
      rows = int(mask.shape[2] > 1)
      mask = jnp.pad(mask, ((0, 0), (0, 0), (0, rows), (0, 0)), constant_values=True)
      mask = jnp.pad(mask, ((0, 0), (0, 0), (0, 0), (0, 1)))
    if bias is not None:
      bias = jnp.pad(bias, ((0, 0), (0, 0), (0, int(bias.shape[2] > 1)), (0, 1)))
  if bias is not None:
    bias = bias.astype(q.dtype)
  out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask,
                                     implementation="cudnn")
  return out[:, :length]


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array | None = None,
                          bias: Array | None = None,
                          implementation: str = "xla") -> Array:
  """Scaled softmax attention, the one place every Transformer of vlkg computes it.

  softmax(q k^T / sqrt(Dh) + bias, masked) v (Vaswani et al. 2017, "Attention Is
  All You Need", §3.2.1), with the softmax in float32 whatever the compute dtype.

  Args:
    q, k, v: [B, L, H, Dh] queries, keys and values (jax.nn's layout).
    mask: boolean mask broadcasting against [B, H, Lq, Lk] (``broadcast_mask``);
      True = attend. A fully masked row attends uniformly instead of giving NaNs.
    bias: optional additive bias broadcasting against [B, H, Lq, Lk], added to the
      scaled logits before the mask.
    implementation: ``model.attention``: ``"xla"`` (batched einsums, any backend)
      or ``"cudnn"`` (cuDNN's fused attention, NVIDIA GPUs, bf16/fp16).

  Returns:
    [B, L, H, Dh] outputs in v's dtype.
  """
  if bias is not None and bias.ndim != 4:
    raise ValueError(f"Attention bias must be 4-D [B, H|1, L, L], got {bias.shape}.")
  if implementation == "xla":
    return _xla_attention(q, k, v, mask, bias)
  check_attention(implementation, q.dtype)
  return _cudnn_attention(q, k, v, mask, bias)

