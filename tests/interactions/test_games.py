"""Tests for vlkg.interactions.games: synthetic games and the two-tower games."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlkg.interactions import games
from vlkg.models.two_towers import TwoTowers

EOT = 11


def np_polynomial(terms, weights, constant, masks):
  """v(S) = c + sum_A a_A [A subset S], one coalition at a time."""
  return np.array([
      constant + sum(w for t, w in zip(terms, weights) if not (t & ~m).any())
      for m in masks])


def every_coalition(n):
  return np.array(list(itertools.product([False, True], repeat=n)))


def test_polynomial_matches_numpy_reference():
  rng = np.random.default_rng(0)
  terms = rng.random((6, 5)) < 0.4
  terms[~terms.any(1), 0] = True
  weights = rng.normal(size=6)
  game = games.polynomial(terms, weights, constant=0.25)
  masks = every_coalition(5)
  np.testing.assert_allclose(game(masks), np_polynomial(terms, weights, 0.25, masks),
                             rtol=1e-5, atol=1e-6)
  assert game.n == 5


def test_special_games_by_hand():
  masks = games.coalition_masks(4, [[], [0], [0, 2], [1, 2, 3], [0, 1, 2, 3]])
  # additive: the sum of the members' weights.
  np.testing.assert_allclose(games.additive([1.0, 2.0, 3.0, 4.0])(masks),
                             [0, 1, 4, 9, 10])
  # unanimity on {1, 2}: 1 iff both are in.
  np.testing.assert_allclose(games.unanimity(4, (1, 2))(masks), [0, 0, 0, 1, 1])
  # pure interaction of 0 and 2 with weight 2.
  np.testing.assert_allclose(games.pure_interaction(4, 0, 2, 2.0)(masks),
                             [0, 0, 2, 0, 2])
  with pytest.raises(ValueError):
    games.pure_interaction(4, 1, 1)
  with pytest.raises(ValueError):
    games.coalition_masks(3, [[3]])


def test_random_polynomial_is_seeded_and_has_its_terms():
  a = games.random_polynomial(6, seed=3, num_pairs=5, num_triples=2)
  b = games.random_polynomial(6, seed=3, num_pairs=5, num_triples=2)
  np.testing.assert_array_equal(a.data["terms"], b.data["terms"])
  np.testing.assert_array_equal(a.data["weights"], b.data["weights"])
  orders = np.asarray(a.data["terms"]).sum(1)
  # 6 linear terms, 5 pairs, 2 triples.
  assert sorted(np.bincount(orders).tolist()) == [0, 2, 5, 6]


def test_region_and_phrase_memberships():
  regions = games.grid_regions(4, 4, 2, 2)
  assert regions.shape == (4, 16)
  np.testing.assert_array_equal(np.flatnonzero(regions[0]), [0, 1, 4, 5])
  np.testing.assert_array_equal(np.flatnonzero(regions[3]), [10, 11, 14, 15])
  np.testing.assert_array_equal(regions.sum(0), 1)  # a partition
  phrases = games.span_phrases([1, 2, 3, 4, 5], 2, 8)
  np.testing.assert_array_equal(np.flatnonzero(phrases[0]), [1, 2, 3])
  np.testing.assert_array_equal(np.flatnonzero(phrases[1]), [4, 5])
  member = games.regions_and_phrases(regions, phrases)
  assert member.shape == (6, 24)
  assert not member[:4, 16:].any() and not member[4:, :16].any()
  with pytest.raises(ValueError):
    games.span_phrases([1, 2], 3, 8)


# --- the two-tower games ------------------------------------------------------------


@pytest.fixture(scope="module")
def towers():
  model = TwoTowers(
      image=dict(patch_size=4, width=16, depth=1, heads=2),
      text=dict(vocab_size=12, context_length=6, width=16, depth=1, heads=2,
                eot_id=EOT),
      embed_dim=8)
  image = jax.random.normal(jax.random.key(0), (8, 8, 3))          # 4 patches
  ids = jnp.array([2, 5, 7, 9, EOT, 0], jnp.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), image[None], ids[None])
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map_with_path(
      lambda p, s: rng.normal(0, 0.3, s.shape).astype(s.dtype)
      + (p[-1].key == "scale"), shapes)
  return model, variables, image, ids


def cosine_with_masks(model, variables, image, ids, patch_keep, token_keep):
  """The similarity with explicit keep-masks: [N] over patches, [L] over tokens."""
  return float(_cosine(model, variables, image, ids, jnp.asarray(patch_keep, bool),
                       jnp.asarray(token_keep, bool)))


def _cosine(model, variables, image, ids, patch_keep, token_keep):
  fn = _COSINE.setdefault(id(model), jax.jit(
      lambda v, x, t, pk, tk: jnp.sum(
          model.apply(v, x[None], patch_mask=pk[None], method=TwoTowers.embed_images)
          * model.apply(v, t[None], token_mask=tk[None],
                        method=TwoTowers.embed_texts))))
  return fn(variables, image, ids, patch_keep, token_keep)


_COSINE: dict = {}


def test_semantics_game_keeps_exactly_the_coalitions_tokens(towers):
  model, variables, image, ids = towers
  # Regions: patches {0, 1} and {2, 3}; phrases: tokens {1, 2} and {3}. Token 0
  # (SOT), the EOT and the pad belong to no player.
  regions = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
  phrases = np.zeros((2, 6), bool)
  phrases[0, [1, 2]] = phrases[1, 3] = True
  game = games.towers_game(model, variables, image, ids,
                           games.regions_and_phrases(regions, phrases))
  assert game.n == 4
  masks = every_coalition(4)
  values = np.asarray(jax.jit(lambda g, m: g(m))(game, masks))
  for m, v in zip(masks, values):
    patch_keep = regions[m[:2]].any(0)
    token_keep = phrases[m[2:]].any(0) | ~phrases.any(0)
    np.testing.assert_allclose(
        v, cosine_with_masks(model, variables, image, ids, patch_keep, token_keep),
        rtol=1e-5, atol=1e-6)
  # The grand coalition is the plain, unmasked similarity.
  zimg, ztxt, _ = jax.jit(model.apply)(variables, image[None], ids[None])
  np.testing.assert_allclose(values[-1], float(jnp.sum(zimg * ztxt)), rtol=1e-5,
                             atol=1e-6)


def test_token_game_players_and_shared_compilation(towers):
  model, variables, image, ids = towers
  game = games.token_game(model, variables, image, ids, num_patches=4)
  # 4 patches, then the non-pad tokens but the EOT: positions 0..3.
  assert game.n == 8
  mask = np.array([[1, 0, 1, 1, 0, 1, 0, 1]], bool)
  np.testing.assert_allclose(
      jax.jit(lambda g, m: g(m))(game, mask)[0],
      cosine_with_masks(model, variables, image, ids, mask[0, :4],
                        np.r_[mask[0, 4:], True, True]),
      rtol=1e-5, atol=1e-6)
  # Games of one model share their static value function, hence one jit cache
  # entry; another model object does not.
  other = games.token_game(model, variables, image + 1, ids, num_patches=4)
  assert other.value_fn == game.value_fn and hash(other.value_fn) == hash(game.value_fn)
  clone = model.clone()
  assert games.token_game(clone, variables, image, ids, 4).value_fn != game.value_fn
