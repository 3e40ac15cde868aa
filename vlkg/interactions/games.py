"""Cooperative games whose players are image and text units (LOUPE's games).

LOUPE (Li et al., NeurIPS 2022 "Game") scores an
image-text pair as a cooperative game: the players are input units, patch tokens
and text tokens at the token level, regions and phrases at the semantics level,
and the value v(S) is the image-text similarity computed with only the players in
S kept. Removed players are taken out through the towers' attention masks
(``patch_mask`` / ``token_mask``), never by zeroing pixels or embeddings, so a
removed player is as good as absent.

A ``Game`` is a pytree: a static value function and the arrays it closes over
(parameters, the image, the ids, ...). The estimators in ``shapley`` take a game as
an ordinary jit argument, so every pair of one model shares one compiled program.
Coalitions are [K, n] boolean masks, True = the player is in the coalition.

The synthetic games are multilinear polynomials in the membership indicators,
v(S) = c + sum_A a_A [A subset of S] (the Harsanyi-dividend form): additive games,
unanimity games and pure interactions are special cases, and their Shapley values
and interactions have closed forms the tests check against.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@flax.struct.dataclass
class Game:
  """A cooperative game on ``n`` players, evaluated on batches of coalitions.

  Attributes:
    value_fn: ``(data, masks [K, n] bool) -> values [K] float32``; static (part of
      the jit cache key), so it must hash by what it computes, not by identity,
      for games of the same kind to share compiled code.
    data: the arrays ``value_fn`` needs (a pytree; traced under jit).
    n: number of players.
  """

  value_fn: Callable[[Any, Array], Array] = flax.struct.field(pytree_node=False)
  data: Any
  n: int = flax.struct.field(pytree_node=False)

  def __call__(self, masks: Array) -> Array:
    """Values [K] of the coalitions ``masks`` [K, n] (bool)."""
    return self.value_fn(self.data, jnp.asarray(masks, bool)).astype(jnp.float32)


def coalition_masks(n: int, coalitions: Sequence[Sequence[int]]) -> np.ndarray:
  """[M, n] bool masks from lists of player indices."""
  out = np.zeros((len(coalitions), n), bool)
  for row, players in enumerate(coalitions):
    players = list(players)
    if any(not 0 <= p < n for p in players):
      raise ValueError(f"coalition {players} has a player outside [0, {n}).")
    out[row, players] = True
  return out


# --- synthetic games ------------------------------------------------------------


def _polynomial_value(data, masks: Array) -> Array:
  terms, weights, constant = data["terms"], data["weights"], data["constant"]
  m = masks.astype(jnp.float32)
  t = terms.astype(jnp.float32)
  # A term A is present iff all of A is in S: |S & A| == |A|.
  present = (m @ t.T) >= jnp.sum(t, axis=1)[None, :] - 0.5
  return constant + present.astype(jnp.float32) @ weights


def polynomial(terms: Any, weights: Any, constant: float = 0.0) -> Game:
  """v(S) = constant + sum_t weights[t] * [terms[t] subset of S].

  Args:
    terms: [T, n] bool, each row a set of players A (the Harsanyi support).
    weights: [T] dividends a_A.
    constant: v(empty set).
  """
  terms = np.asarray(terms, bool)
  weights = np.asarray(weights, np.float32)
  if terms.ndim != 2 or weights.shape != terms.shape[:1]:
    raise ValueError(f"terms [T, n] and weights [T] expected, got {terms.shape} and "
                     f"{weights.shape}.")
  if not terms.any(axis=1).all():
    raise ValueError("every term needs at least one player; use `constant`.")
  data = {"terms": jnp.asarray(terms), "weights": jnp.asarray(weights),
          "constant": jnp.asarray(constant, jnp.float32)}
  return Game(_polynomial_value, data, terms.shape[1])


def additive(weights: Any) -> Game:
  """v(S) = sum_{i in S} w_i: phi_i = w_i and every interaction is 0."""
  weights = np.asarray(weights, np.float32)
  return polynomial(np.eye(len(weights), dtype=bool), weights)


def unanimity(n: int, members: Sequence[int], weight: float = 1.0) -> Game:
  """v(S) = weight * [members subset of S]: phi_i = weight / |members| on members."""
  return polynomial(coalition_masks(n, [members]), [weight])


def pure_interaction(n: int, a: int, b: int, weight: float = 1.0) -> Game:
  """v(S) = weight * [a in S and b in S]: all the value is in the pair."""
  if a == b:
    raise ValueError("a pure pairwise interaction needs two distinct players.")
  return unanimity(n, (a, b), weight)


def random_polynomial(n: int, seed: int, num_pairs: int = 8, num_triples: int = 4,
                      linear_scale: float = 1.0, pair_scale: float = 1.0,
                      triple_scale: float = 0.5) -> Game:
  """A random game with linear, pairwise and triple terms (Gaussian dividends).

  Args:
    n: players (>= 3).
    seed: numpy seed; the game is a pure function of the arguments.
    num_pairs / num_triples: distinct random pairs / triples (capped at the number
      that exist).
    linear_scale / pair_scale / triple_scale: std of the dividends of each order.
  """
  if n < 3:
    raise ValueError(f"random_polynomial needs n >= 3, got {n}.")
  rng = np.random.default_rng(seed)
  rows, weights = [], []
  for i in range(n):
    rows.append((i,))
    weights.append(rng.normal(0, linear_scale))
  orders = ((2, num_pairs, pair_scale), (3, num_triples, triple_scale))
  for order, count, scale in orders:
    chosen: set[tuple[int, ...]] = set()
    total = int(np.prod(range(n - order + 1, n + 1)) // np.prod(range(1, order + 1)))
    while len(chosen) < min(count, total):
      chosen.add(tuple(sorted(rng.choice(n, order, replace=False).tolist())))
    for players in sorted(chosen):
      rows.append(players)
      weights.append(rng.normal(0, scale))
  return polynomial(coalition_masks(n, rows), weights)


# --- games of a two-tower model ---------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _TowersValue:
  """v(S) = cos(image embedding with S's patches, text embedding with S's tokens).

  Hashes by the model's identity, so every pair of one model object shares one
  compiled program (flax modules with dict attributes cannot be hashed).
  """

  model: Any
  num_patches: int

  def __hash__(self):
    return hash((id(self.model), self.num_patches))

  def __eq__(self, other):
    return (type(other) is type(self) and other.model is self.model
            and other.num_patches == self.num_patches)

  def __call__(self, data, masks: Array) -> Array:
    membership = data["membership"]
    m = membership.astype(jnp.float32)
    # A token owned by no player (the EOT, padding, unassigned patches) is always
    # kept: it is context, not a player.
    keep = ((masks.astype(jnp.float32) @ m) > 0.5) | ~jnp.any(membership, axis=0)
    k = masks.shape[0]
    images = jnp.broadcast_to(data["image"], (k, *data["image"].shape))
    ids = jnp.broadcast_to(data["ids"], (k, *data["ids"].shape))
    zimg = self.model.apply(data["variables"], images,
                            patch_mask=keep[:, :self.num_patches],
                            method="embed_images")
    ztxt = self.model.apply(data["variables"], ids,
                            token_mask=keep[:, self.num_patches:],
                            method="embed_texts")
    return jnp.sum(zimg * ztxt, axis=-1)


def towers_game(model: Any, variables: Any, image: Any, ids: Any,
                membership: Any) -> Game:
  """The semantics-level game of a two-tower model on one (image, text) pair.

  Each player is a group of tokens: a region is a set of patches, a phrase a set
  of text positions. v(S) is the cosine similarity of the image and text
  embeddings computed with only the tokens of S's players kept (LOUPE, Li et al., NeurIPS 2022).

  Args:
    model: a module with ``embed_images(images, patch_mask=)`` and
      ``embed_texts(ids, token_mask=)`` returning L2-normalised embeddings
      (``TwoTowers``).
    variables: its variables, ``{"params": ...}``.
    image: [H, W, 3] normalised float image.
    ids: [L] int token ids.
    membership: [n, N + L] bool, player j owns token t; the first N columns are
      the patches (row-major over the patch grid), the last L the text positions.
      Tokens owned by no player are always kept.

  Returns:
    The game on n players.
  """
  membership = np.asarray(membership, bool)
  ids = jnp.asarray(ids, jnp.int32)
  num_patches = membership.shape[1] - ids.shape[-1]
  if membership.ndim != 2 or num_patches <= 0:
    raise ValueError(f"membership must be [n, N + L] with L = {ids.shape[-1]}, got "
                     f"{membership.shape}.")
  data = {"variables": variables, "image": jnp.asarray(image, jnp.float32),
          "ids": ids, "membership": jnp.asarray(membership)}
  return Game(_TowersValue(model, num_patches), data, membership.shape[0])


def token_game(model: Any, variables: Any, image: Any, ids: Any, num_patches: int,
               text_positions: Sequence[int] | None = None) -> Game:
  """The token-level game: players are the patches, then the given text tokens.

  Args:
    model, variables, image, ids: as ``towers_game``.
    num_patches: N, patch tokens of the image.
    text_positions: the text positions that are players. Default: every non-pad
      position except the last non-pad one (the EOT, which the text tower always
      keeps); pad id 0 as the tokenizer's.

  Returns:
    The game on N + len(text_positions) players.
  """
  ids_np = np.asarray(ids)
  if text_positions is None:
    nonpad = np.flatnonzero(ids_np != 0)
    text_positions = nonpad[:-1]
  text_positions = np.asarray(text_positions, int)
  length = ids_np.shape[-1]
  membership = np.zeros((num_patches + len(text_positions), num_patches + length), bool)
  membership[np.arange(num_patches), np.arange(num_patches)] = True
  membership[num_patches + np.arange(len(text_positions)),
             num_patches + text_positions] = True
  return towers_game(model, variables, image, ids, membership)


def grid_regions(grid_h: int, grid_w: int, rows: int, cols: int) -> np.ndarray:
  """[rows * cols, grid_h * grid_w] bool: the patch grid cut into a rows x cols grid.

  Region r (row-major) owns the patches of its block; block sides differ by at most
  one patch when the grid does not divide evenly.
  """
  if not (1 <= rows <= grid_h and 1 <= cols <= grid_w):
    raise ValueError(f"cannot cut a {grid_h}x{grid_w} patch grid into {rows}x{cols}.")
  r_of = np.arange(grid_h) * rows // grid_h
  c_of = np.arange(grid_w) * cols // grid_w
  block = (r_of[:, None] * cols + c_of[None, :]).reshape(-1)
  return block[None, :] == np.arange(rows * cols)[:, None]


def cell_rectangles(rows: int, cols: int, min_cells: int = 2) -> np.ndarray:
  """[K, rows * cols] bool: every axis-aligned rectangle of a rows x cols cell grid
  with at least ``min_cells`` cells (cells row-major), ordered by top-left corner
  then size. These are LOUPE's candidate regions at the token level (TSIM): a
  3 x 3 grid has 36 rectangles, 27 of them with two cells or more."""
  out = []
  for top in range(rows):
    for left in range(cols):
      for bottom in range(top + 1, rows + 1):
        for right in range(left + 1, cols + 1):
          if (bottom - top) * (right - left) < min_cells:
            continue
          cell = np.zeros((rows, cols), bool)
          cell[top:bottom, left:right] = True
          out.append(cell.reshape(-1))
  if not out:
    raise ValueError(f"a {rows}x{cols} grid has no rectangle of {min_cells} cells")
  return np.stack(out)


def span_phrases(positions: Sequence[int], num_phrases: int, length: int) -> np.ndarray:
  """[num_phrases, length] bool: the given text positions cut into contiguous spans.

  The spans are as equal as possible, in order; every span is non-empty.
  """
  positions = np.asarray(positions, int)
  if not 1 <= num_phrases <= len(positions):
    raise ValueError(f"cannot cut {len(positions)} tokens into {num_phrases} phrases.")
  out = np.zeros((num_phrases, length), bool)
  span = np.arange(len(positions)) * num_phrases // len(positions)
  out[span, positions] = True
  return out


def regions_and_phrases(regions: Any, phrases: Any) -> np.ndarray:
  """The [R + P, N + L] membership of R regions over N patches, then P phrases."""
  regions, phrases = np.asarray(regions, bool), np.asarray(phrases, bool)
  top = np.concatenate([regions, np.zeros((len(regions), phrases.shape[1]), bool)], 1)
  bottom = np.concatenate(
      [np.zeros((len(phrases), regions.shape[1]), bool), phrases], 1)
  return np.concatenate([top, bottom], axis=0)
