"""Tests for vlkg.interactions.neural: the NLL, training, and the fallback."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from vlkg.interactions import games, neural, shapley
from vlkg.models.shapley_net import ShapleyInteractionNet

N, D, GAMES = 5, 4, 48
PAIRS = [(i, j) for i in range(N) for j in range(i + 1, N)]


def test_gaussian_nll_matches_formula():
  mean, var, target, se2 = 0.3, 0.5, 1.1, 0.25
  expected = 0.5 * (math.log(2 * math.pi * 0.75) + 0.8**2 / 0.75)
  np.testing.assert_allclose(neural.gaussian_nll(mean, var, target, se2), expected,
                             rtol=1e-6)
  np.testing.assert_allclose(
      neural.gaussian_nll(mean, var, target),
      -math.log(math.exp(-0.8**2 / 1.0) / math.sqrt(math.pi)), rtol=1e-6)


@pytest.fixture(scope="module")
def dataset():
  """Games whose pairwise dividends come from the players' features.

  v(S) = sum_i u_i [i in S] + sum_{i<j} <x_i, x_j> [i, j in S] + a triple term,
  so I([{i, j}]) is about <x_i, x_j>: learnable from the features x. The targets
  are Monte Carlo estimates (plain, 8 samples: noisy on purpose).
  """
  rng = np.random.default_rng(0)
  coalitions = games.coalition_masks(N, PAIRS)
  features, targets, ses, game_list = [], [], [], []
  for g in range(GAMES):
    x = rng.normal(size=(N, D)).astype(np.float32)
    terms = [(i,) for i in range(N)] + PAIRS + [(0, 1, 2)]
    weights = list(rng.normal(size=N)) + [float(x[i] @ x[j]) for i, j in PAIRS] + [0.5]
    game = games.polynomial(games.coalition_masks(N, terms), weights)
    est = shapley.monte_carlo_interactions(game, coalitions, jax.random.key(g), 8,
                                           antithetic=False)
    features.append(x)
    targets.append(np.asarray(est.interaction))
    ses.append(np.asarray(est.interaction_se))
    game_list.append(game)
  return (np.stack(features), np.broadcast_to(coalitions, (GAMES, *coalitions.shape)),
          np.stack(targets), np.stack(ses), game_list)


@pytest.fixture(scope="module")
def trained(dataset):
  features, coalitions, targets, ses, _ = dataset
  return neural.train(features, coalitions, targets, ses, key=jax.random.key(0),
                      net=ShapleyInteractionNet(width=32), steps=300,
                      weight_decay=0.1)


def test_training_reduces_the_nll(dataset, trained):
  features, coalitions, targets, ses, _ = dataset
  assert np.isfinite(trained.initial_nll) and np.isfinite(trained.final_nll)
  assert trained.final_nll < trained.initial_nll - 0.5
  # The minibatch NLL goes down along the way too.
  assert trained.history[-30:].mean() < trained.history[:30].mean() - 0.5
  np.testing.assert_allclose(
      neural.mean_nll(trained.estimator, features, coalitions, targets, ses),
      trained.final_nll, rtol=1e-5)
  # Predictions are in the targets' units and track them.
  mean, var = neural.predict(trained.estimator, features, coalitions)
  assert mean.shape == var.shape == targets.shape and np.all(np.asarray(var) > 0)
  assert np.corrcoef(np.ravel(mean), np.ravel(targets))[0, 1] > 0.8


def test_fallback_threshold_zero_samples_everything(dataset, trained):
  features, coalitions, _, _, game_list = dataset
  key = jax.random.key(7)
  fb = neural.estimate_with_fallback(trained.estimator, features[0], coalitions[0],
                                     game_list[0], key, uncertainty_threshold=0.0,
                                     num_samples=8)
  assert fb.fallback_rate == 1.0 and fb.fell_back.all()
  # 10 items: padded to 16 for the compiled sampler, the first 10 are the items.
  mc = shapley.monte_carlo_interactions(
      game_list[0], np.concatenate([coalitions[0], coalitions[0][:6]]), key, 8)
  np.testing.assert_allclose(fb.interaction, np.asarray(mc.interaction)[:10],
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(fb.variance, np.asarray(mc.interaction_se)[:10] ** 2,
                             rtol=1e-5, atol=1e-9)
  assert fb.evaluations == 8 * 10 * (2 + 2)


def test_fallback_only_where_the_variance_is_high(dataset, trained):
  features, coalitions, _, _, game_list = dataset
  mean, var = neural.predict(trained.estimator, features[1], coalitions[1])
  mean, var = np.asarray(mean), np.asarray(var)
  none = neural.estimate_with_fallback(trained.estimator, features[1], coalitions[1],
                                       game_list[1], jax.random.key(0), None)
  assert none.fallback_rate == 0.0 and none.evaluations == 0
  np.testing.assert_allclose(none.interaction, mean, rtol=1e-6)
  threshold = float(np.median(var))
  some = neural.estimate_with_fallback(trained.estimator, features[1], coalitions[1],
                                       game_list[1], jax.random.key(0), threshold,
                                       num_samples=8)
  np.testing.assert_array_equal(some.fell_back, var > threshold)
  assert some.fallback_rate == pytest.approx(np.mean(var > threshold))
  kept = ~some.fell_back
  np.testing.assert_allclose(some.interaction[kept], mean[kept], rtol=1e-6)
