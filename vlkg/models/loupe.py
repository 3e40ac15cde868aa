"""LOUPE's model: CLIP's two towers plus the neural Shapley interaction estimator.

Li et al., "Fine-Grained Semantically Aligned Vision-Language Pre-Training",
NeurIPS 2022. Params are ``{img, txt, logit_scale,
logit_bias, shapley, region_head}``: the towers keep CLIP's names (CLIP checkpoints
load with ``model_init_new="^(shapley|region_head)/"``, and ``vlkg.api`` serves the
model unchanged); ``shapley`` is the ``ShapleyInteractionNet`` trained inside the
same step ("uncertainty-aware neural Shapley interaction learning", §4) and
``region_head`` scores candidate regions for the token-level objective (TSIM, §4
"Objectives").
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlkg.models.shapley_net import ShapleyInteractionNet
from vlkg.models.two_towers import TwoTowers

Array = jax.Array

# Player features: the player's normalised embedding, its cosine to the other
# modality's global embedding, and a one-hot of its type (region, phrase).
EXTRA_FEATURES = 3


class RegionHead(nn.Module):
  """Scores candidate regions of an image for a caption (LOUPE's TSIM head).

  A candidate's features are its normalised region embedding ``r`` (the mean of its
  projected patch tokens), ``r * t`` with the caption's embedding ``t``, and their
  cosine; a two-layer MLP maps them to one logit. Trained to rank candidates as
  their token-level interactions do, it learns which patch sets act as one
  semantic region for the caption.
  """

  width: int = 64
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, regions: Array, text: Array) -> Array:
    """regions [B, K, D] unit, text [B, D] unit -> logits [B, K]."""
    t = jnp.broadcast_to(text[:, None, :], regions.shape)
    cos = jnp.sum(regions * t, axis=-1, keepdims=True)
    x = jnp.concatenate([regions, regions * t, cos], axis=-1)
    x = nn.gelu(nn.Dense(self.width, param_dtype=self.param_dtype, name="hidden")(x))
    return nn.Dense(1, param_dtype=self.param_dtype, name="out")(x)[..., 0]


class LoupeModel(TwoTowers):
  """``TwoTowers`` with a ``shapley`` estimator over region and phrase players and
  a ``region_head`` over candidate regions.

  Attributes:
    shapley_width: hidden width of the estimator.
    shapley_depth: Transformer blocks over the players (0: pooled only).
  """

  shapley_width: int = 64
  shapley_depth: int = 0

  def setup(self):
    super().setup()
    self.shapley = ShapleyInteractionNet(width=self.shapley_width,
                                         depth=self.shapley_depth,
                                         dtype=jnp.float32, param_dtype=self.param_dtype)
    self.region_head = RegionHead(width=self.shapley_width, param_dtype=self.param_dtype)

  def estimate(self, features: Array, coalitions: Array,
               player_mask: Array | None = None) -> tuple[Array, Array]:
    """The estimator's (mean, variance) of I([S]) per candidate coalition."""
    return self.shapley(features, coalitions, player_mask)

  def score_regions(self, regions: Array, text: Array) -> Array:
    """The TSIM head's logits [B, K] of candidate regions for each caption."""
    return self.region_head(regions, text)

  def __call__(self, images, texts, return_tokens: bool = False, patch_mask=None,
               token_mask=None):
    """As ``TwoTowers.__call__``; while initialising, also runs the estimator on
    dummy players so that its parameters are created."""
    out = super().__call__(images, texts, return_tokens, patch_mask, token_mask)
    if self.is_initializing():
      features = jnp.zeros((1, 2, self.embed_dim + EXTRA_FEATURES), jnp.float32)
      self.estimate(features, jnp.ones((1, 1, 2), bool))
      unit = jnp.zeros((1, self.embed_dim), jnp.float32)
      self.score_regions(unit[:, None, :], unit)
    return out
