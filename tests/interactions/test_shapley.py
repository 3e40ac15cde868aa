"""Tests for vlkg.interactions.shapley: exact and Monte Carlo estimators.

The interaction is LOUPE's I([S]) = phi([S] | N') - sum_{i in S} phi(i | N\\S + i)
(LOUPE, Li et al., NeurIPS 2022). The hand-worked values are derived in the comments; a brute-force
numpy reference builds the reduced games explicitly, independently of the
estimator's one-table formula.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlkg.interactions import games, shapley


# --- numpy references ---------------------------------------------------------------


def np_shapley(v, players, i):
  """phi(i) in the game v (a function of a frozenset) on the given players."""
  others = [p for p in players if p != i]
  m = len(players)
  total = 0.0
  for size in range(len(others) + 1):
    w = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
    for t in itertools.combinations(others, size):
      total += w * (v(frozenset(t) | {i}) - v(frozenset(t)))
  return total


def np_interaction(v, n, s):
  """I([S]) from the definition: the reduced game N' and the games N\\S + i."""
  s = frozenset(s)
  rest = [p for p in range(n) if p not in s]
  merged = "S"  # [S] as one player of N'

  def reduced(t):
    return v(frozenset(p for p in t if p != merged) | (s if merged in t else set()))

  phi_merged = np_shapley(reduced, rest + [merged], merged)
  return phi_merged - sum(np_shapley(v, rest + [i], i) for i in s)


def polynomial_value(terms, weights):
  sets = [frozenset(np.flatnonzero(t)) for t in np.asarray(terms)]
  return lambda s: sum(w for a, w in zip(sets, np.asarray(weights)) if a <= s)


def harsanyi_reference(terms, weights, coalitions):
  """Closed forms for v = sum_A a_A [A subset S]: phi_i = sum_{A contains i} a_A/|A|;
  I([S]) = sum_{|A & S| >= 2} a_A / (|A \\ S| + 1) (only those terms see [S] as more
  than one of its members)."""
  terms, weights = np.asarray(terms, bool), np.asarray(weights, np.float64)
  phi = (terms * (weights / terms.sum(1))[:, None]).sum(0)
  inter = []
  for s in np.asarray(coalitions, bool):
    inside = (terms & s).sum(1)
    outside = (terms & ~s).sum(1)
    inter.append(np.sum(np.where(inside >= 2, weights / (outside + 1), 0.0)))
  return phi, np.array(inter)


# --- exact: hand-worked games ---------------------------------------------------------


def test_additive_game():
  # v(S) = sum_{i in S} w_i: every player brings w_i to any coalition, so phi_i =
  # w_i, and [S] brings sum_{i in S} w_i = the sum of its members' phis: I = 0.
  w = [1.0, -2.0, 0.5, 3.0]
  est = shapley.exact(games.additive(w), games.coalition_masks(4, [[0, 1], [1, 2, 3]]))
  np.testing.assert_allclose(est.phi, w, atol=1e-6)
  np.testing.assert_allclose(est.interaction, [0.0, 0.0], atol=1e-6)
  assert est.evaluations == 16
  np.testing.assert_array_equal(est.phi_se, 0.0)


def test_unanimity_game():
  # v(S) = [T subset S], T = {0, 1, 2}, n = 5: the three members are symmetric and
  # share v(N) - v(empty) = 1, the dummies 3 and 4 get 0.
  # I([{0,1}]): in N' = {[01], 2, 3, 4} the game is unanimity on {[01], 2}, so
  #   phi([01]) = 1/2; in the games on N\{0,1} + 0 (or + 1) T is never complete,
  #   so both subtracted phis are 0: I = 1/2.
  # I([T]) = 1 - 0 - 0 - 0 = 1: [T] alone makes the value.
  # I([{0,3}]): [03] plays 0's part, phi([03]) = 1/3; in the game on N\{0,3} + 0,
  #   phi(0) = 1/3 (T is complete there) and phi(3) = 0 (3 is absent): I = 0.
  # I([{3,4}]) = 0: dummies.
  coalitions = games.coalition_masks(5, [[0, 1], [0, 1, 2], [0, 3], [3, 4], [2]])
  est = shapley.exact(games.unanimity(5, (0, 1, 2)), coalitions)
  np.testing.assert_allclose(est.phi, [1 / 3, 1 / 3, 1 / 3, 0, 0], atol=1e-6)
  np.testing.assert_allclose(est.interaction, [0.5, 1.0, 0.0, 0.0, 0.0], atol=1e-6)


def test_pure_pairwise_interaction():
  # v(S) = [1 in S and 3 in S], n = 4: players 1 and 3 are symmetric and share the
  # value, phi_1 = phi_3 = 1/2, phi_0 = phi_2 = 0.
  # I([{1,3}]) = phi([13] | N') - phi(1 | N\{1,3} + 1) - phi(3 | N\{1,3} + 3)
  #   = 1 - 0 - 0 = 1: in N' the merged player alone makes the value; in the game
  #   on {0, 2, 1} player 3 is missing, v is identically 0, so phi(1) = 0 (not 1/2:
  #   the subtracted values are taken without the other members, not in N).
  # I([{0,1}]): [01] plays 1's part with 3 present, phi([01]) = 1/2; in the game on
  #   {2, 3, 0} phi(0) = 0, in the game on {2, 3, 1} phi(1) = 1/2: I = 0.
  coalitions = games.coalition_masks(4, [[1, 3], [0, 1], [1]])
  est = shapley.exact(games.pure_interaction(4, 1, 3), coalitions)
  np.testing.assert_allclose(est.phi, [0, 0.5, 0, 0.5], atol=1e-6)
  np.testing.assert_allclose(est.interaction, [1.0, 0.0, 0.0], atol=1e-6)


def test_exact_matches_the_definition_built_from_reduced_games():
  # A game with terms up to order 4, so that nothing cancels by accident.
  terms = games.coalition_masks(6, [[0], [1], [2], [4], [0, 1], [1, 2], [2, 3, 4],
                                    [0, 1, 2, 5], [3, 5], [0, 4]])
  weights = [0.3, -1.0, 0.7, 0.2, 1.5, -0.8, 0.9, 2.0, -1.2, 0.4]
  game = games.polynomial(terms, weights, constant=0.1)
  candidates = [[0, 1], [1, 2], [2, 3, 4], [0, 1, 2, 5], [3], [0, 5], [1, 3, 4, 5]]
  est = shapley.exact(game, games.coalition_masks(6, candidates))
  v = polynomial_value(terms, weights)
  np.testing.assert_allclose(est.phi, [np_shapley(v, range(6), i) for i in range(6)],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(est.interaction,
                             [np_interaction(v, 6, s) for s in candidates],
                             rtol=1e-5, atol=1e-6)


def test_exact_matches_harsanyi_closed_forms_at_twelve_players():
  game = games.random_polynomial(12, seed=1, num_pairs=20, num_triples=10)
  coalitions = games.coalition_masks(12, [[0, 1], [2, 7], [3, 4, 5], [0, 6, 9, 11],
                                          list(range(12))])
  est = shapley.exact(game, coalitions, batch_size=512)
  phi, inter = harsanyi_reference(game.data["terms"], game.data["weights"], coalitions)
  np.testing.assert_allclose(est.phi, phi, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(est.interaction, inter, rtol=1e-4, atol=1e-5)
  assert est.evaluations == 4096


def test_efficiency_on_a_non_polynomial_game():
  # A generic jittable value function, not multilinear: sum phi = v(N) - v(empty).
  w = jnp.array([0.5, -1.0, 2.0, 0.3, 1.1, -0.4, 0.8])
  game = games.Game(lambda d, m: jnp.sin(m @ d) + (m @ d) ** 2 - 0.3,
                    w, 7)
  est = shapley.exact(game)
  ends = np.asarray(game(np.array([[True] * 7, [False] * 7])))
  np.testing.assert_allclose(np.sum(est.phi), ends[0] - ends[1], rtol=1e-5, atol=1e-5)
  assert est.interaction.shape == (0,)


def test_exact_rejects_large_games_and_empty_coalitions():
  with pytest.raises(ValueError, match="n <= 14"):
    shapley.exact(games.additive(np.ones(15)))
  with pytest.raises(ValueError, match="at least one player"):
    shapley.exact(games.additive(np.ones(3)), np.zeros((1, 3), bool))


# --- Monte Carlo ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def quartic():
  """n = 7 with terms up to order 4: no estimator is exact on it."""
  terms = games.coalition_masks(7, [[0], [1], [3], [5], [0, 1], [2, 3], [4, 6],
                                    [0, 2, 4], [1, 3, 5], [0, 1, 2, 6], [2, 3, 4, 5]])
  weights = [0.5, -0.7, 1.0, 0.2, 1.3, -0.9, 0.6, 1.1, -1.4, 1.6, 0.8]
  coalitions = games.coalition_masks(7, [[0, 1], [2, 3], [0, 2, 4], [5, 6], [1, 3]])
  return games.polynomial(terms, weights), coalitions


@pytest.mark.parametrize("antithetic", [False, True])
def test_monte_carlo_is_within_its_standard_errors_of_exact(quartic, antithetic):
  game, coalitions = quartic
  exact = shapley.exact(game, coalitions)
  est = shapley.monte_carlo(game, coalitions, jax.random.key(0), 200, antithetic)
  err = np.concatenate([np.asarray(est.phi) - np.asarray(exact.phi),
                        np.asarray(est.interaction) - np.asarray(exact.interaction)])
  se = np.concatenate([est.phi_se, est.interaction_se])
  # 12 items, all within 3.5 standard errors (float noise aside: the antithetic
  # estimate of I([{1, 3}]) is exact, see test_antithetic_pairs_...).
  assert np.all(np.abs(err) <= 3.5 * se + 1e-5), (err, se)
  # And the standard errors are honest, not inflated: E[z^2] = 1.
  noisy = se > 1e-3
  assert noisy.sum() >= 10
  assert 0.2 < np.mean((err[noisy] / se[noisy]) ** 2) < 3.0, err / se
  n, sizes = 7, coalitions.sum(1)
  assert est.evaluations == 200 * (n - 1) + 2 + 200 * int(np.sum(sizes + 2))


def test_monte_carlo_converges_as_one_over_sqrt_samples(quartic):
  game, coalitions = quartic
  exact = np.asarray(shapley.exact(game, coalitions).interaction)
  small = shapley.monte_carlo_interactions(game, coalitions, jax.random.key(1), 50,
                                           antithetic=False)
  big = shapley.monte_carlo_interactions(game, coalitions, jax.random.key(1), 200,
                                         antithetic=False)
  # Four times the samples, half the standard error; the error follows.
  ratio = np.asarray(big.interaction_se) / np.asarray(small.interaction_se)
  assert 0.35 < np.median(ratio) < 0.7, ratio
  assert (np.abs(np.asarray(big.interaction) - exact).mean()
          < np.abs(np.asarray(small.interaction) - exact).mean())


def test_antithetic_pairs_are_exact_for_low_order_games():
  # Module doc of shapley: the pair mean is exact for every dividend with at most
  # one player outside S in I([S]) (here: orders <= 3), and of order <= 2 in phi.
  game = games.random_polynomial(8, seed=2, num_pairs=10, num_triples=6)
  coalitions = games.coalition_masks(8, [[0, 1], [2, 5], [3, 6], [1, 4]])
  exact = shapley.exact(game, coalitions)
  est = shapley.monte_carlo_interactions(game, coalitions, jax.random.key(0), 4)
  np.testing.assert_allclose(est.interaction, exact.interaction, atol=1e-5)
  np.testing.assert_allclose(est.interaction_se, 0.0, atol=1e-5)
  pairs_only = games.random_polynomial(8, seed=2, num_pairs=10, num_triples=0)
  est = shapley.monte_carlo_shapley(pairs_only, jax.random.key(0), 4)
  np.testing.assert_allclose(est.phi, shapley.exact(pairs_only).phi, atol=1e-5)


def test_monte_carlo_is_seeded_and_checks_its_budget(quartic):
  game, coalitions = quartic
  # (200 antithetic samples: the compiled programs of the test above.)
  a = shapley.monte_carlo(game, coalitions, jax.random.key(3), 200)
  b = shapley.monte_carlo(game, coalitions, jax.random.key(3), 200)
  c = shapley.monte_carlo(game, coalitions, jax.random.key(4), 200)
  np.testing.assert_array_equal(a.phi, b.phi)
  np.testing.assert_array_equal(a.interaction, b.interaction)
  assert not np.array_equal(a.phi, c.phi)
  with pytest.raises(ValueError, match="even"):
    shapley.monte_carlo_shapley(game, jax.random.key(0), 5)
  with pytest.raises(ValueError, match="at least one player"):
    shapley.monte_carlo_interactions(game, np.zeros((1, 7), bool), jax.random.key(0), 4)
