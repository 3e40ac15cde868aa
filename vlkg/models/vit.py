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
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
  """

  patch_size: int
  width: int
  depth: int
  heads: int
  embed_dim: int
  mlp_ratio: float = 4.0
  act: str = "gelu"
  pool_type: str = "cls"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self, images: Array, return_tokens: bool = False
  ) -> Array | tuple[Array, Array]:
    """Encodes images.

    Args:
      images: [B, H, W, 3] float images, already normalised.
      return_tokens: also return the projected patch tokens.

    Returns:
      The [B, embed_dim] embedding (not L2-normalised) or, with ``return_tokens``,
      ``(embedding, tokens)`` where tokens are the [B, N, embed_dim] patch tokens
      after ``ln_post`` and ``proj`` (N = (H/p)*(W/p), class token excluded), in the
      same space as the pooled embedding, for fine-grained (region-word) objectives.
    """
    if self.pool_type not in ("cls", "gap"):
      raise ValueError(f"pool_type must be 'cls' or 'gap', got {self.pool_type!r}.")
    p = self.patch_size
    x = nn.Conv(
        self.width,
        kernel_size=(p, p),
        strides=(p, p),
        padding="VALID",
        use_bias=False,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="conv1",
    )(images.astype(self.dtype))
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

    x = layers.layer_norm(self.dtype, self.param_dtype, "ln_pre")(x)
    x = layers.Transformer(
        depth=self.depth,
        num_heads=self.heads,
        mlp_ratio=self.mlp_ratio,
        act=self.act,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="transformer",
    )(x)
    # LayerNorm is per token, so normalising all tokens and then pooling the class
    # token equals OpenAI's ln_post(x[:, 0]); the patch tokens need it anyway.
    x = layers.layer_norm(self.dtype, self.param_dtype, "ln_post")(x)
    pooled = x[:, 0] if self.pool_type == "cls" else jnp.mean(x[:, 1:], axis=1)

    proj = self.param(
        "proj", nn.initializers.normal(scale), (w, self.embed_dim), self.param_dtype
    ).astype(self.dtype)
    emb = pooled @ proj
    if not return_tokens:
      return emb
    return emb, x[:, 1:] @ proj
