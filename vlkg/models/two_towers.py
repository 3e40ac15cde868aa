"""Two-tower (dual-encoder) image-text model shared by the contrastive methods.

An image tower (``img``, a ViT) and a text tower (``txt``, a Transformer) map into a
joint space where both embeddings are L2-normalised, plus the learned temperature
``logit_scale`` and the bias ``logit_bias``:

* CLIP (Radford et al. 2021, §2.5): "The learnable temperature parameter τ was
  initialized to the equivalent of 0.07 [...] and clipped to prevent scaling the
  logits by more than 100". The scale is stored as a log, as in CLIP, so that it
  stays positive and its updates are multiplicative.
* SigLIP (Zhai et al. 2023, §3): the sigmoid loss adds a learned bias, initialised
  to t' = log 10 and b = -10 so that training starts near the prior of mostly
  negative pairs.

The same module therefore serves both methods; only the inits differ.
"""

from __future__ import annotations

import dataclasses

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vlkg.models import attention as attention_lib
from vlkg.models.text_transformer import TextTransformer
from vlkg.models.vit import VisionTransformer

Array = jax.Array

CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)
SIGLIP_INIT_LOGIT_BIAS = -10.0


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
  """L2-normalises the last axis in float32; eps keeps the gradient finite at 0."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


class TwoTowers(nn.Module):
  """Image and text encoders with a shared embedding space.

  Attributes:
    image: keyword arguments of ``VisionTransformer`` other than ``embed_dim``,
      ``dtype``, ``param_dtype`` and ``attention``.
    text: keyword arguments of ``TextTransformer`` other than those four.
    embed_dim: joint embedding dimension.
    init_logit_scale: initial value of the log-scale parameter.
    init_logit_bias: initial value of the bias parameter (unused by CLIP).
    max_logit_scale: the effective scale exp(logit_scale) is clipped here; None
      disables clipping.
    min_logit_scale: the effective scale's floor; None (CLIP) = none. A floor above
      the learned scale holds the temperature fixed (no gradient reaches it).
    dtype: compute dtype of both towers; embeddings are returned in float32.
    param_dtype: storage dtype of the towers' parameters.
    attention: how the towers compute attention, ``"xla"`` or ``"cudnn"``
      (``attention.dot_product_attention``); subclasses pass it to their own
      Transformers.
  """

  image: Mapping[str, Any]
  text: Mapping[str, Any]
  embed_dim: int
  init_logit_scale: float = CLIP_INIT_LOGIT_SCALE
  init_logit_bias: float = 0.0
  max_logit_scale: float | None = 100.0
  min_logit_scale: float | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"

  def setup(self):
    common = dict(embed_dim=self.embed_dim, dtype=self.dtype,
                  param_dtype=self.param_dtype, attention=self.attention)
    self.img = VisionTransformer(**dict(self.image), **common)
    self.txt = TextTransformer(**dict(self.text), **common)
    # Kept in float32 whatever param_dtype is: tiny updates to a bf16 log-scale
    # would round away.
    self.logit_scale = self.param(
        "logit_scale", nn.initializers.constant(self.init_logit_scale), (),
        jnp.float32,
    )
    self.logit_bias = self.param(
        "logit_bias", nn.initializers.constant(self.init_logit_bias), (),
        jnp.float32,
    )

  def scalars(self) -> dict[str, Array]:
    """The effective (exp'd and clipped) logit scale and the logit bias."""
    scale = jnp.exp(self.logit_scale)
    if self.max_logit_scale is not None:
      scale = jnp.minimum(scale, self.max_logit_scale)
    if self.min_logit_scale is not None:
      scale = jnp.maximum(scale, self.min_logit_scale)
    return {"logit_scale": scale, "logit_bias": self.logit_bias}

  def embed_images(
      self,
      images: Array,
      return_tokens: bool = False,
      patch_mask: Array | None = None,
  ) -> Array | tuple[Array, Array]:
    """Normalised float32 image embeddings [B, D] (and raw patch tokens [B, N, D]).

    ``patch_mask`` ([B, N] bool, True = keep) removes patches through the attention
    mask; see ``VisionTransformer``.
    """
    out = self.img(images, return_tokens=return_tokens, patch_mask=patch_mask)
    if return_tokens:
      return l2_normalize(out[0]), out[1].astype(jnp.float32)
    return l2_normalize(out)

  def embed_texts(
      self,
      texts: Array,
      return_tokens: bool = False,
      token_mask: Array | None = None,
  ) -> Array | tuple[Array, Array]:
    """Normalised float32 text embeddings [B, D] (and raw token outputs [B, L, D]).

    ``token_mask`` ([B, L] bool, True = keep) removes tokens through the attention
    mask; the pooled (EOT) token is always kept. See ``TextTransformer``.
    """
    out = self.txt(texts, return_tokens=return_tokens, token_mask=token_mask)
    if return_tokens:
      return l2_normalize(out[0]), out[1].astype(jnp.float32)
    return l2_normalize(out)

  def embed_packed_texts(self, ids: Array, segments: Array, positions: Array,
                         pool_rows: Array, pool_cols: Array) -> Array:
    """Normalised float32 embeddings [N, D] of texts packed several to a row;
    see ``TextTransformer.encode_packed`` and ``vlkg.models.text_packing``."""
    return l2_normalize(self.txt.encode_packed(ids, segments, positions, pool_rows,
                                               pool_cols))

  def pooled_span(self, ids: Array) -> Array:
    """[B] leading tokens each text's embedding depends on (``TextTransformer``)."""
    return self.txt.pooled_span(ids)

  def pool_index(self, ids: Array) -> Array:
    """[B] position each text is pooled at (``TextTransformer``)."""
    return self.txt.pool_index(ids)

  def embed_text_tokens(self, ids: Array) -> Array:
    """Input word embeddings [..., text width] from the text tower's table."""
    return self.txt.embed_tokens(ids)

  def __call__(
      self,
      images: Array | None,
      texts: Array | None,
      return_tokens: bool = False,
      patch_mask: Array | None = None,
      token_mask: Array | None = None,
  ) -> tuple[Array | None, Array | None, dict[str, Array]]:
    """Embeds whichever inputs are given.

    Args:
      images: [B, H, W, 3] normalised float images, or None.
      texts: [B, L] int token ids, or None.
      return_tokens: also put the towers' per-token outputs (projected, not
        normalised, float32) into extras as ``img_tokens`` / ``txt_tokens``.
      patch_mask: optional [B, N] keep-mask over the image patches.
      token_mask: optional [B, L] keep-mask over the text tokens.

    Returns:
      ``(zimg, ztxt, extras)``: L2-normalised float32 embeddings (None for a
      missing input) and a dict with ``logit_scale`` (exp'd and clipped),
      ``logit_bias`` and optionally the tokens.
    """
    extras = self.scalars()
    zimg = ztxt = None
    if images is not None:
      out = self.embed_images(images, return_tokens, patch_mask)
      if return_tokens:
        zimg, extras["img_tokens"] = out
      else:
        zimg = out
    if texts is not None:
      out = self.embed_texts(texts, return_tokens, token_mask)
      if return_tokens:
        ztxt, extras["txt_tokens"] = out
      else:
        ztxt = out
    return zimg, ztxt, extras


def tower_fields(towers: TwoTowers) -> dict[str, Any]:
  """The ``TwoTowers`` fields of ``towers``, as keyword arguments: a method's model
  (a ``TwoTowers`` subclass with heads of its own) is built as
  ``Model(**tower_fields(build_model(config)), its_field=...)``."""
  names = [f.name for f in dataclasses.fields(TwoTowers) if f.name not in ("parent", "name")]
  return {n: getattr(towers, n) for n in names}


def build_model(
    config: ml_collections.ConfigDict,
    *,
    init_logit_scale: float = CLIP_INIT_LOGIT_SCALE,
    init_logit_bias: float = 0.0,
) -> TwoTowers:
  """Builds ``TwoTowers`` from ``config.model``.

  Fields of ``config.model`` (optional ones have the default in brackets):
    embed_dim: joint embedding dimension.
    image.width / image.depth / image.heads: ViT width, blocks, attention heads.
    image.patch_size: square patch side; image sides must be multiples of it.
    image.mlp_ratio [4.0]: MLP hidden width / width.
    image.act ["gelu"]: "gelu" (exact) or "quick_gelu" (OpenAI checkpoints).
    image.pool_type ["cls"]: "cls" or "gap".
    image.stem ["patch"]: "patch" (CLIP) or "conv" (Xiao et al. 2021).
    text.width / text.depth / text.heads: text Transformer width, blocks, heads.
    text.vocab_size: tokenizer vocabulary size.
    text.context_length: maximum token sequence length.
    text.mlp_ratio [4.0], text.act ["gelu"]: as for the image tower.
    text.causal [True]: causal attention (CLIP); False = bidirectional.
    text.pool ["eot"]: "eot" (CLIP) or "last" (last non-pad token).
    text.pad_id [0]: padding token id.
    text.eot_id [None]: end-of-text id; None pools at argmax(ids) as OpenAI CLIP.
    text.mask_pad [True]: mask pad keys; False for OpenAI CLIP weights, whose pad
      id 0 is also the symbol "!" (see ``TextTransformer``).
    max_logit_scale [100.0]: clip of exp(logit_scale); None = no clip.
    min_logit_scale [None]: floor of exp(logit_scale); None = no floor.
    dtype ["float32"]: compute dtype: "float32", or "bfloat16" for mixed
      precision (bf16 matmuls and convolutions; float32 parameters, attention
      softmax, embeddings, contrastive logits and loss).
    param_dtype ["float32"]: parameter storage dtype.
    attention ["xla"]: "xla", or "cudnn" (cuDNN's fused attention; NVIDIA GPU
      and dtype "bfloat16" only, checked here).

  Args:
    config: the experiment config; only ``config.model`` is read.
    init_logit_scale: initial log of the logit scale: the method's, CLIP's
      log(1/0.07) by default (SigLIP's comes from ``config.siglip``).
    init_logit_bias: initial logit bias (SigLIP's -10).

  Returns:
    The unbound module.
  """
  m = config.model
  img, txt = m.image, m.text
  image = dict(
      patch_size=img.patch_size,
      width=img.width,
      depth=img.depth,
      heads=img.heads,
      mlp_ratio=img.get("mlp_ratio", 4.0),
      act=img.get("act", "gelu"),
      pool_type=img.get("pool_type", "cls"),
      stem=img.get("stem", "patch"),
  )
  text = dict(
      vocab_size=txt.vocab_size,
      context_length=txt.context_length,
      width=txt.width,
      depth=txt.depth,
      heads=txt.heads,
      mlp_ratio=txt.get("mlp_ratio", 4.0),
      act=txt.get("act", "gelu"),
      causal=txt.get("causal", True),
      pool=txt.get("pool", "eot"),
      pad_id=txt.get("pad_id", 0),
      eot_id=txt.get("eot_id", None),
      mask_pad=txt.get("mask_pad", True),
  )
  dtype = jnp.dtype(m.get("dtype", "float32"))
  attention = m.get("attention", "xla")
  attention_lib.check_attention(attention, dtype)
  return TwoTowers(
      image=image,
      text=text,
      embed_dim=m.embed_dim,
      init_logit_scale=init_logit_scale,
      init_logit_bias=init_logit_bias,
      max_logit_scale=m.get("max_logit_scale", 100.0),
      min_logit_scale=m.get("min_logit_scale", None),
      dtype=dtype,
      param_dtype=jnp.dtype(m.get("param_dtype", "float32")),
      attention=attention,
  )
