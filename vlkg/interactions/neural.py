"""Uncertainty-aware neural Shapley interactions, with a sampling fallback (LOUPE).

LOUPE (Li et al., NeurIPS 2022) "Uncertainty-aware neural Shapley interaction
learning": a light network (``vlkg.models.shapley_net``) predicts the interactions
I([S]) of candidate coalitions from the players' features, each with a variance.
It is trained on Monte Carlo estimates with a Gaussian negative log-likelihood;
when the predicted variance is above ``uncertainty_threshold``, the item falls back
to Monte Carlo sampling, and the fallback rate is reported.

Choices (ours; the paper does not fix them):

* The NLL of a Monte Carlo target y with standard error se is that of
  y ~ N(mean, variance + se^2): the sampling noise of the target is known, so the
  predicted variance is left to describe the network's own error, which is what
  the fallback should test.
* Features (per dimension) and targets are standardised with the training set's
  statistics (interactions of a cosine similarity are small numbers);
  predictions and variances are returned in the targets' units, as is
  ``mean_nll``.
* Training is one jitted ``lax.scan`` over AdamW steps on random minibatches of
  games (a warm-up then cosine learning-rate schedule).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlkg.interactions import shapley
from vlkg.interactions.games import Game
from vlkg.models.shapley_net import ShapleyInteractionNet

Array = jax.Array


def gaussian_nll(mean: Array, variance: Array, target: Array,
                 target_variance: Array | float = 0.0) -> Array:
  """Per-item -log N(target; mean, variance + target_variance)."""
  total = variance + target_variance
  return 0.5 * (jnp.log(2 * math.pi * total) + (target - mean) ** 2 / total)


@flax.struct.dataclass
class NeuralEstimator:
  """A trained ``ShapleyInteractionNet`` with its features' and targets' scales.

  Attributes:
    net: the (unbound) network.
    params: its parameters.
    feature_shift / feature_scale: [d]; the network sees
      (features - feature_shift) / feature_scale (training-set statistics).
    shift / scale: prediction = shift + scale * network output; variance likewise
      scaled by scale^2.
  """

  net: ShapleyInteractionNet = flax.struct.field(pytree_node=False)
  params: Any
  feature_shift: Array
  feature_scale: Array
  shift: Array
  scale: Array


@jax.jit
def predict(estimator: NeuralEstimator, features: Array, coalitions: Array,
            player_mask: Array | None = None) -> tuple[Array, Array]:
  """``(mean, variance)`` of I([S]) in the targets' units; shapes as the net's."""
  x = (features - estimator.feature_shift) / estimator.feature_scale
  mean, var = estimator.net.apply({"params": estimator.params}, x, coalitions,
                                  player_mask)
  return estimator.shift + estimator.scale * mean, estimator.scale**2 * var


@jax.jit
def mean_nll(estimator: NeuralEstimator, features: Array, coalitions: Array,
             targets: Array, target_se: Array | None = None) -> Array:
  """Mean Gaussian NLL of the targets under the estimator (targets' units)."""
  mean, var = predict(estimator, features, coalitions)
  se2 = 0.0 if target_se is None else target_se**2
  return jnp.mean(gaussian_nll(mean, var, targets, se2))


class Training(NamedTuple):
  """What ``train`` returns.

  Attributes:
    estimator: the trained estimator.
    history: [steps] minibatch NLL (standardised units) per step.
    initial_nll / final_nll: ``mean_nll`` on the whole training set before and
      after training (targets' units).
  """

  estimator: NeuralEstimator
  history: np.ndarray
  initial_nll: float
  final_nll: float


@functools.partial(jax.jit, static_argnames=("net", "steps", "batch_size",
                                             "learning_rate", "weight_decay"))
def _fit(net, params, features, coalitions, y, y_var, key, steps, batch_size,
         learning_rate, weight_decay):
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(1, steps // 20), steps, learning_rate * 0.05)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(schedule, weight_decay=weight_decay))

  def loss_fn(p, x, idx):
    mean, var = net.apply({"params": p}, x, coalitions[idx])
    return jnp.mean(gaussian_nll(mean, var, y[idx], y_var[idx]))

  def step(carry, k):
    p, opt = carry
    idx = jax.random.randint(k, (batch_size,), 0, features.shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(p, features[idx], idx)
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), loss

  (params, _), history = jax.lax.scan(step, (params, tx.init(params)),
                                      jax.random.split(key, steps))
  return params, history


def train(features: Any, coalitions: Any, targets: Any, target_se: Any = None, *,
          key: Array, net: ShapleyInteractionNet | None = None, steps: int = 2000,
          batch_size: int = 32, learning_rate: float = 3e-3,
          weight_decay: float = 3.0) -> Training:
  """Fits the network to (Monte Carlo) interaction targets with a Gaussian NLL.

  Args:
    features: [P, n, d] players' features of P games.
    coalitions: [P, m, n] bool candidate coalitions of each game.
    targets: [P, m] interaction estimates.
    target_se: optional [P, m] their standard errors (see the module doc).
    key: PRNG key (initialisation and minibatches).
    net: the network; default ``ShapleyInteractionNet()``.
    steps: optimiser steps.
    batch_size: games per step.
    learning_rate: peak AdamW learning rate.
    weight_decay: AdamW (decoupled) weight decay. Strong by default: on the games
      of ``bench shapley`` (800 training games, 8-sample Monte Carlo targets)
      the held-out Spearman rho was 0.88 at 0.1 and 0.94-0.95 at 1.0-3.0; with a
      few hundred noisy games the network otherwise fits the noise.

  Returns:
    A ``Training``.
  """
  net = net or ShapleyInteractionNet()
  features = jnp.asarray(features, jnp.float32)
  coalitions = jnp.asarray(coalitions, bool)
  targets = jnp.asarray(targets, jnp.float32)
  se = jnp.zeros_like(targets) if target_se is None else jnp.asarray(target_se,
                                                                     jnp.float32)
  # NaN standard errors (a single Monte Carlo unit) count as no known noise.
  se = jnp.nan_to_num(se, nan=0.0)
  if not (features.shape[:2] == coalitions.shape[::2]
          and targets.shape == coalitions.shape[:2] == se.shape):
    raise ValueError(f"shapes do not agree: features {features.shape}, coalitions "
                     f"{coalitions.shape}, targets {targets.shape}, se {se.shape}.")
  f_shift = jnp.mean(features, axis=(0, 1))
  f_scale = jnp.maximum(jnp.std(features, axis=(0, 1)), 1e-6)
  shift = jnp.mean(targets)
  scale = jnp.maximum(jnp.std(targets), 1e-12)
  k_init, k_fit = jax.random.split(key)
  params = jax.jit(net.init)(k_init, features[:1], coalitions[:1])["params"]
  before = NeuralEstimator(net, params, f_shift, f_scale, shift, scale)
  params, history = _fit(net, params, (features - f_shift) / f_scale, coalitions,
                         (targets - shift) / scale, (se / scale)**2, k_fit, steps,
                         min(batch_size, features.shape[0]), learning_rate,
                         weight_decay)
  after = NeuralEstimator(net, params, f_shift, f_scale, shift, scale)
  return Training(after, np.asarray(history),
                  float(mean_nll(before, features, coalitions, targets, se)),
                  float(mean_nll(after, features, coalitions, targets, se)))


class Fallback(NamedTuple):
  """Interactions of one game, with Monte Carlo where the network is unsure.

  Attributes:
    interaction: [m] estimates.
    variance: [m] the network's predicted variance, or the Monte Carlo se^2 where
      the item fell back.
    fell_back: [m] bool, the items estimated by sampling.
    fallback_rate: their share.
    evaluations: value-function evaluations spent on the fallback.
  """

  interaction: np.ndarray
  variance: np.ndarray
  fell_back: np.ndarray
  fallback_rate: float
  evaluations: int


def estimate_with_fallback(estimator: NeuralEstimator, features: Any, coalitions: Any,
                           game: Game, key: Array,
                           uncertainty_threshold: float | None,
                           num_samples: int = 32, antithetic: bool = True,
                           batch_size: int = 1024) -> Fallback:
  """Neural interactions of one game; uncertain items fall back to sampling.

  An item falls back when its predicted variance is above the threshold (so 0
  sends every item to sampling, None none). The items that fall back are padded to
  a power of two with copies of the first, so that a handful of compiled sampling
  programs serve every count; the padding is computed but not counted in
  ``evaluations``.

  Args:
    estimator: a trained ``NeuralEstimator``.
    features: [n, d] players' features of the game.
    coalitions: [m, n] bool candidate coalitions.
    game: the game itself, for the fallback.
    key: PRNG key of the sampling.
    uncertainty_threshold: variance threshold, in the targets' units squared.
    num_samples / antithetic / batch_size: as ``shapley.monte_carlo_interactions``.

  Returns:
    A ``Fallback``.
  """
  coalitions = np.asarray(coalitions, bool)
  mean, var = predict(estimator, jnp.asarray(features, jnp.float32),
                      jnp.asarray(coalitions))
  mean, var = np.array(mean), np.array(var)
  if uncertainty_threshold is None:
    fell_back = np.zeros(len(coalitions), bool)
  else:
    fell_back = var > uncertainty_threshold
  items = np.flatnonzero(fell_back)
  evaluations = 0
  if len(items):
    bucket = 1 << (len(items) - 1).bit_length()
    padded = np.concatenate([items, np.full(bucket - len(items), items[0])])
    mc = shapley.monte_carlo_interactions(game, coalitions[padded], key, num_samples,
                                          antithetic, batch_size)
    mean[items] = np.asarray(mc.interaction)[:len(items)]
    var[items] = np.asarray(mc.interaction_se)[:len(items)] ** 2
    evaluations = num_samples * int(coalitions[items].sum() + 2 * len(items))
  return Fallback(mean, var, fell_back, float(fell_back.mean()), evaluations)
