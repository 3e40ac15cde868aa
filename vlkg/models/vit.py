"""The CLIP image tower: a pre-LN Vision Transformer.

Architecture of Radford et al. 2021 (CLIP) §2.4 ("we add an additional layer
normalization to the combined patch and position embeddings before the transformer")
and OpenAI's ``VisionTransformer`` in ``clip/model.py``, itself the ViT of Dosovitskiy
et al. 2021 (ViT) §3.1: non-overlapping patch embedding without bias, a learned class
token, learned absolute position embeddings, ``ln_pre``, the Transformer, ``ln_post``
and a bias-free projection ``proj`` into the joint embedding space.

Parameter names follow open_clip (``conv1``, ``class_embedding``,
``positional_embedding``, ``ln_pre``, ``transformer``, ``ln_post``, ``proj``) so that
pretrained weights load without renaming.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlkg.models import layers

Array = jax.Array


class VisionTransformer(nn.Module):
  """CLIP's ViT image encoder.

  Attributes:
    patch_size: side of the square patches; the image sides must be multiples.
    width: Transformer width.
    depth: number of Transformer blocks.
    heads: attention heads.
    embed_dim: output (joint embedding) dimension.
    mlp_ratio: MLP hidden width as a multiple of ``width``.
    act: ``"gelu"`` or ``"quick_gelu"`` (OpenAI checkpoints).
    pool_type: ``"cls"`` (CLIP) pools the class token; ``"gap"`` averages the patch
      tokens (open_clip's ``pool_type="avg"``; the class token is still computed so
      the parameter layout stays that of CLIP).
    stem: ``"patch"`` (CLIP, ViT §3.1) embeds each p x p patch with one strided
      convolution ``conv1``. ``"conv"`` is the convolutional stem of Xiao et al. 2021
      ("Early Convolutions Help Transformers See Better", §3): log2(p) 3x3
      stride-2 convolutions, each followed by a LayerNorm over channels and GELU,
      with channels doubling up to ``width``, then a 1x1 convolution ``conv1``.
      The token grid is the same. Its receptive fields overlap neighbouring
      patches, so with ``patch_mask`` a kept token still sees the pixels next to
      it. Imported CLIP weights need ``"patch"``; docs/results.md has what it
      changed on the world.
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
    attention: how attention is computed (``attention.dot_product_attention``).
  """

  patch_size: int
  width: int
  depth: int
  heads: int
  embed_dim: int
  mlp_ratio: float = 4.0
  act: str = "gelu"
  pool_type: str = "cls"
  stem: str = "patch"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(
      self,
      images: Array,
      return_tokens: bool = False,
      patch_mask: Array | None = None,
  ) -> Array | tuple[Array, Array]:
    """Encodes images.

    Args:
      images: [B, H, W, 3] float images, already normalised.
      return_tokens: also return the projected patch tokens.
      patch_mask: optional [B, N] bool, True = keep the patch (N = (H/p)*(W/p),
        row-major over the patch grid). Removed patches are masked as attention
        keys for every query, so the class token and the kept patches compute
        exactly what they would on the kept subset alone (with its positional
        embeddings); ``"gap"`` averages the kept patches only. This is how LOUPE
        removes players from a game (LOUPE, Li et al., NeurIPS 2022 "Game"). The class token is
        always kept. The outputs at removed positions are meaningless. None
        (default) keeps every patch and leaves the computation unchanged.

    Returns:
      The [B, embed_dim] embedding (not L2-normalised) or, with ``return_tokens``,
      ``(embedding, tokens)`` where tokens are the [B, N, embed_dim] patch tokens
      after ``ln_post`` and ``proj`` (N = (H/p)*(W/p), class token excluded), in the
      same space as the pooled embedding, for fine-grained (region-word) objectives.
    """
    if self.pool_type not in ("cls", "gap"):
      raise ValueError(f"pool_type must be 'cls' or 'gap', got {self.pool_type!r}.")
    if self.stem not in ("patch", "conv"):
      raise ValueError(f"stem must be 'patch' or 'conv', got {self.stem!r}.")
    x = self._embed_patches(images.astype(self.dtype))
    b, gh, gw, w = x.shape
    x = x.reshape(b, gh * gw, w)

    # CLIP scales these by width**-0.5 so that they start at roughly the same
    # magnitude as the patch embeddings they are added to.
    scale = self.width**-0.5
    cls = self.param(
        "class_embedding", nn.initializers.normal(scale), (w,), self.param_dtype
    )
    pos = self.param(
        "positional_embedding",
        nn.initializers.normal(scale),
        (gh * gw + 1, w),
        self.param_dtype,
    )
    cls = jnp.broadcast_to(cls.astype(self.dtype), (b, 1, w))
    x = jnp.concatenate([cls, x], axis=1) + pos.astype(self.dtype)[None]

    key_mask = None
    if patch_mask is not None:
      if patch_mask.shape != (b, gh * gw):
        raise ValueError(
            f"patch_mask must be [B, N] = {(b, gh * gw)}, got {patch_mask.shape}.")
      key_mask = jnp.concatenate(
          [jnp.ones((b, 1), bool), patch_mask.astype(bool)], axis=1)

    x = layers.layer_norm(self.dtype, self.param_dtype, "ln_pre")(x)
    x = layers.Transformer(
        depth=self.depth,
        num_heads=self.heads,
        mlp_ratio=self.mlp_ratio,
        act=self.act,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        attention=self.attention,
        name="transformer",
    )(x, key_mask)
    # LayerNorm is per token, so normalising all tokens and then pooling the class
    # token equals OpenAI's ln_post(x[:, 0]); the patch tokens need it anyway.
    x = layers.layer_norm(self.dtype, self.param_dtype, "ln_post")(x)
    if self.pool_type == "cls":
      pooled = x[:, 0]
    elif patch_mask is None:
      pooled = jnp.mean(x[:, 1:], axis=1)
    else:
      # No kept patch gives a zero embedding rather than a 0/0.
      weights = patch_mask.astype(x.dtype)[..., None]
      pooled = jnp.sum(x[:, 1:] * weights, axis=1) / jnp.maximum(
          jnp.sum(weights, axis=1), 1)

    proj = self.param(
        "proj", nn.initializers.normal(scale), (w, self.embed_dim), self.param_dtype
    ).astype(self.dtype)
    emb = pooled @ proj
    if not return_tokens:
      return emb
    return emb, x[:, 1:] @ proj

  def _conv(self, features: int, kernel: int, stride: int, name: str,
            use_bias: bool) -> nn.Conv:
    return nn.Conv(
        features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding="VALID" if kernel == stride else "SAME",
        use_bias=use_bias,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=name,
    )

  def _embed_patches(self, x: Array) -> Array:
    """[B, H, W, 3] -> [B, H/p, W/p, width] with the configured stem."""
    p = self.patch_size
    if self.stem == "patch":
      return self._conv(self.width, p, p, "conv1", use_bias=False)(x)
    halvings = p.bit_length() - 1
    if p != 1 << halvings:
      raise ValueError(f"stem='conv' needs a power-of-two patch_size, got {p}.")
    for i in range(halvings):
      features = max(self.width >> (halvings - i), 16)
      x = self._conv(features, 3, 2, f"stem_conv{i}", use_bias=False)(x)
      x = layers.layer_norm(self.dtype, self.param_dtype, f"stem_ln{i}")(x)
      x = layers.exact_gelu(x)
    return self._conv(self.width, 1, 1, "conv1", use_bias=True)(x)
