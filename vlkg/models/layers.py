"""Pre-LN Transformer building blocks shared by the image and text towers.

The blocks follow the residual attention block of OpenAI CLIP (Radford et al. 2021,
"Learning Transferable Visual Models From Natural Language Supervision", §2.4 and the
released ``clip/model.py``), which open_clip (Ilharco et al. 2021) reuses unchanged:

  x = x + attn(ln_1(x))
  x = x + mlp(ln_2(x))

Submodule and parameter names mirror open_clip's state-dict keys
(``resblocks.{i}.ln_1``, ``attn.in_proj_weight``, ``attn.out_proj``, ``mlp.c_fc``,
``mlp.c_proj``) so that pretrained OpenAI/open_clip weights map 1:1, up to the
transposes between torch ``Linear`` and flax ``Dense`` kernels.

Initialisation follows CLIP's ``TextTransformer.initialize_parameters``: attention
input projection std ``width**-0.5``, MLP input std ``(2 * width)**-0.5``, and the two
residual output projections std ``width**-0.5 * (2 * depth)**-0.5`` so that the
residual stream's variance does not grow with depth.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
DType = Any

# PyTorch's nn.LayerNorm default; CLIP checkpoints were trained with it.
LN_EPS = 1e-5


def quick_gelu(x: Array) -> Array:
  """The sigmoid GELU approximation used by OpenAI CLIP checkpoints."""
  return x * jax.nn.sigmoid(1.702 * x)


def get_activation(name: str) -> Callable[[Array], Array]:
  """Maps an activation name to its function.

  Args:
    name: ``"gelu"`` (exact, erf-based, as torch's default ``nn.GELU``) or
      ``"quick_gelu"`` (as OpenAI CLIP).

  Returns:
    The activation function.
  """
  if name == "gelu":
    return lambda x: nn.gelu(x, approximate=False)
  if name == "quick_gelu":
    return quick_gelu
  raise ValueError(f"Unknown activation {name!r}; expected 'gelu' or 'quick_gelu'.")


def layer_norm(
    dtype: DType, param_dtype: DType, name: str | None = None
) -> nn.LayerNorm:
  """A LayerNorm with torch's epsilon; flax reduces in float32 even for bf16 inputs.

  ``name`` must stay None inside ``setup`` (flax names those by attribute).
  """
  return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, param_dtype=param_dtype, name=name)


def broadcast_mask(mask: Array | None) -> Array | None:
  """Brings an attention mask to the 4-D shape [B, 1 or H, Lq, Lk].

  Args:
    mask: None, a [B, Lk] key-padding mask, a [B, Lq, Lk] mask, or an already 4-D
      mask. True means "may attend".

  Returns:
    A boolean mask that broadcasts against [B, H, Lq, Lk] logits, or None.
  """
  if mask is None:
    return None
  mask = mask.astype(bool)
  if mask.ndim == 2:
    return mask[:, None, None, :]
  if mask.ndim == 3:
    return mask[:, None, :, :]
  if mask.ndim == 4:
    return mask
  raise ValueError(f"Attention mask must be 2-, 3- or 4-D, got shape {mask.shape}.")


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


def _xla_attention(q: Array, k: Array, v: Array, mask: Array | None,
                   bias: Array | None) -> Array:
  """Softmax attention as batched einsums; q, k, v [B, L, H, Dh] -> [B, L, H, Dh].

  Heads before positions ([B, H, L, Dh]) inside: with the batch dimensions leading
  and contiguous, XLA's batched matmuls run 4x faster on CPU than on the
  [B, L, H, Dh] layout (measured by the step benchmark), and no slower elsewhere.
  ``jax.nn.dot_product_attention(implementation="xla")`` gives CLIP's step within
  ±4% of this one, either way (docs/results.md, "Training step"); this one is kept.
  """
  q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
  # Logits and softmax in float32 even under bf16 compute: bf16 logits saturate
  # and the exponentials lose most of their mantissa.
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits * q.shape[-1]**-0.5
  if bias is not None:
    # Added in float32 for the same reason the softmax is: a bf16 bias would
    # quantise the small per-edge offsets it is meant to learn.
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    # `where`, not `+ mask_bias`: adding finfo.min to a negative logit overflows
    # to -inf, and a fully masked row would then give NaNs. With `where`, such a
    # row becomes a finite uniform distribution instead.
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bhkd->bhqd", weights, v).transpose(0, 2, 1, 3)


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


class MultiHeadAttention(nn.Module):
  """Self-attention with a fused QKV projection, as torch's nn.MultiheadAttention.

  Attributes:
    num_heads: number of attention heads; must divide the input width.
    out_std: init std of ``out_proj`` (a residual output projection).
    dtype: compute dtype of the projections.
    param_dtype: storage dtype of the parameters.
    attention: the implementation of ``dot_product_attention`` (``model.attention``).
  """

  num_heads: int
  out_std: float | None = None
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(
      self, x: Array, mask: Array | None = None, bias: Array | None = None
  ) -> Array:
    """Attends x to itself.

    Args:
      x: [B, L, W] inputs.
      mask: boolean attention mask (see ``broadcast_mask``); True = attend.
      bias: optional additive attention bias, [B, H or 1, L, L] (anything that
        broadcasts against the [B, H, L, L] logits), added to the scaled float32
        logits before the mask is applied, as Graphormer's spatial and edge
        encodings (Ying et al. 2021, §3.1).

    Returns:
      [B, L, W] outputs.
    """
    b, l, w = x.shape
    if w % self.num_heads:
      raise ValueError(f"width {w} is not divisible by num_heads {self.num_heads}.")
    head_dim = w // self.num_heads
    out_std = self.out_std if self.out_std is not None else w**-0.5
    # One fused projection, so that torch's in_proj_weight [3W, W] is a single
    # transpose away from this kernel [W, 3W] (q, k, v blocks in that order).
    qkv = nn.Dense(
        3 * w,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=nn.initializers.normal(w**-0.5),
        name="in_proj",
    )(x)
    qkv = qkv.reshape(b, l, 3, self.num_heads, head_dim)
    out = dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2],
                                broadcast_mask(mask), bias, self.attention)
    return nn.Dense(
        w,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=nn.initializers.normal(out_std),
        name="out_proj",
    )(out.reshape(b, l, w))


class MlpBlock(nn.Module):
  """The position-wise MLP: c_fc -> activation -> c_proj.

  Attributes:
    mlp_dim: hidden width.
    act: ``"gelu"`` or ``"quick_gelu"``.
    out_std: init std of ``c_proj`` (a residual output projection).
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
  """

  mlp_dim: int
  act: str = "gelu"
  out_std: float | None = None
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    w = x.shape[-1]
    out_std = self.out_std if self.out_std is not None else w**-0.5
    x = nn.Dense(
        self.mlp_dim,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=nn.initializers.normal((2 * w) ** -0.5),
        name="c_fc",
    )(x)
    x = get_activation(self.act)(x)
    return nn.Dense(
        w,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=nn.initializers.normal(out_std),
        name="c_proj",
    )(x)


class ResidualAttentionBlock(nn.Module):
  """One pre-LN Transformer block: x + attn(ln_1(x)); x + mlp(ln_2(x)).

  Attributes:
    num_heads: number of attention heads.
    mlp_ratio: MLP hidden width as a multiple of the model width.
    act: MLP activation name.
    depth: depth of the enclosing stack; only scales the residual output
      projections' init (CLIP's ``proj_std``).
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
    attention: the implementation of ``dot_product_attention`` (``model.attention``).
  """

  num_heads: int
  mlp_ratio: float = 4.0
  act: str = "gelu"
  depth: int = 1
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(
      self, x: Array, mask: Array | None = None, bias: Array | None = None
  ) -> Array:
    """Applies the block; ``mask`` and ``bias`` as in ``MultiHeadAttention``."""
    w = x.shape[-1]
    out_std = w**-0.5 * (2 * self.depth) ** -0.5
    y = layer_norm(self.dtype, self.param_dtype, "ln_1")(x)
    x = x + MultiHeadAttention(
        self.num_heads, out_std, self.dtype, self.param_dtype, self.attention,
        name="attn"
    )(y, mask, bias)
    y = layer_norm(self.dtype, self.param_dtype, "ln_2")(x)
    x = x + MlpBlock(
        int(w * self.mlp_ratio), self.act, out_std, self.dtype, self.param_dtype,
        name="mlp",
    )(y)
    return x


class Transformer(nn.Module):
  """A stack of ``depth`` residual attention blocks named ``resblocks_{i}``.

  The input width is taken from the input, so the same class serves both towers.

  Attributes:
    depth: number of blocks.
    num_heads: attention heads per block.
    mlp_ratio: MLP hidden width as a multiple of the model width.
    act: MLP activation name.
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
    attention: the implementation of ``dot_product_attention`` (``model.attention``).
  """

  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  act: str = "gelu"
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(
      self, x: Array, mask: Array | None = None, bias: Array | None = None
  ) -> Array:
    """Runs the stack.

    Args:
      x: [B, L, W] inputs.
      mask: boolean attention mask, [B, L] key padding or [B, 1|H, L, L].
      bias: optional additive float attention bias [B, H|1, L, L], the same for
        every block (see ``MultiHeadAttention``).

    Returns:
      [B, L, W] outputs.
    """
    mask = broadcast_mask(mask)
    for i in range(self.depth):
      x = ResidualAttentionBlock(
          num_heads=self.num_heads,
          mlp_ratio=self.mlp_ratio,
          act=self.act,
          depth=self.depth,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          attention=self.attention,
          name=f"resblocks_{i}",
      )(x, mask, bias)
    return x
