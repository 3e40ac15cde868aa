"""LOUPE's model: CLIP's two towers plus the neural Shapley interaction estimator.

Li et al., "Fine-Grained Semantically Aligned Vision-Language Pre-Training",
NeurIPS 2022; ``../shared/PAPERS.md`` §4. Params are ``{img, txt, logit_scale,
logit_bias, shapley}``: the towers keep CLIP's names (CLIP checkpoints load with
``model_init_new="^shapley/"``, and ``vlkg.api`` serves the model unchanged) and
``shapley`` is the ``ShapleyInteractionNet`` trained inside the same step
("uncertainty-aware neural Shapley interaction learning", §4).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vlkg.models.shapley_net import ShapleyInteractionNet
from vlkg.models.two_towers import TwoTowers

Array = jax.Array

# Player features: the player's normalised embedding, its cosine to the other
# modality's global embedding, and a one-hot of its type (region, phrase).
EXTRA_FEATURES = 3


class LoupeModel(TwoTowers):
  """``TwoTowers`` with a ``shapley`` estimator over region and phrase players.

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

  def estimate(self, features: Array, coalitions: Array,
               player_mask: Array | None = None) -> tuple[Array, Array]:
    """The estimator's (mean, variance) of I([S]) per candidate coalition."""
    return self.shapley(features, coalitions, player_mask)

  def __call__(self, images, texts, return_tokens: bool = False, patch_mask=None,
               token_mask=None):
    """As ``TwoTowers.__call__``; while initialising, also runs the estimator on
    dummy players so that its parameters are created."""
    out = super().__call__(images, texts, return_tokens, patch_mask, token_mask)
    if self.is_initializing():
      features = jnp.zeros((1, 2, self.embed_dim + EXTRA_FEATURES), jnp.float32)
      self.estimate(features, jnp.ones((1, 1, 2), bool))
    return out
