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

from vlkg.models.attention import dot_product_attention

Array = jax.Array
DType = Any

# PyTorch's nn.LayerNorm default; CLIP checkpoints were trained with it.
LN_EPS = 1e-5


def quick_gelu(x: Array) -> Array:
  """The sigmoid GELU approximation used by OpenAI CLIP checkpoints."""
  return x * jax.nn.sigmoid(1.702 * x)


def exact_gelu(x: Array) -> Array:
  """GELU, x * Phi(x) = x/2 * (1 + erf(x / sqrt(2))) (Hendrycks & Gimpel 2016), exactly.

  The same function as flax's ``nn.gelu(approximate=False)``, which XLA lowers
  through ``erfc``: a branchy polynomial per element that made the GELUs and their
  derivatives an eighth of CLIP's step on CPU. ``lax.erf`` is one rational
  polynomial; the two agree to 1e-6 (docs/results.md, "Training step").
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * 2.0**-0.5))


def get_activation(name: str) -> Callable[[Array], Array]:
  """Maps an activation name to its function.

  Args:
    name: ``"gelu"`` (exact, erf-based, as torch's default ``nn.GELU``) or
      ``"quick_gelu"`` (as OpenAI CLIP).

  Returns:
    The activation function.
  """
  if name == "gelu":
    return exact_gelu
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
      self, x: Array, mask: Array | None = None, bias: Array | None = None,
      query_len: int | None = None
  ) -> Array:
    """Attends x to itself.

    Args:
      x: [B, L, W] inputs.
      mask: boolean attention mask (see ``broadcast_mask``); True = attend.
      bias: optional additive attention bias, [B, H or 1, L, L] (anything that
        broadcasts against the [B, H, L, L] logits), added to the scaled float32
        logits before the mask is applied, as Graphormer's spatial and edge
        encodings (Ying et al. 2021, §3.1).
      query_len: only the first ``query_len`` positions' outputs (every position
        is still a key and value); a [B, 1 or H, L, L] mask or bias is cut to
        those rows by the caller.

    Returns:
      [B, L, W] outputs ([B, query_len, W] with ``query_len``).
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
    lq = l if query_len is None else query_len
    out = dot_product_attention(qkv[:, :lq, 0], qkv[:, :, 1], qkv[:, :, 2],
                                broadcast_mask(mask), bias, self.attention)
    return nn.Dense(
        w,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=nn.initializers.normal(out_std),
        name="out_proj",
    )(out.reshape(b, lq, w))


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
