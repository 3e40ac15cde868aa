"""Packed texts (vlkg.models.text_packing) compute what each text computes alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlkg.models import text_packing
from vlkg.models.two_towers import TwoTowers

VOCAB, CTX, EOT = 20, 8, 19


def test_first_fit_decreasing_places_longest_first():
  # Sorted 5, 4, 3: 5 -> row 0; 4 does not fit beside it -> row 1; 3 fills row 0.
  plan = text_packing.first_fit(jnp.array([[5, 3, 0, 4]]), rows=2, row_len=8)
  assert bool(plan.fits)
  np.testing.assert_array_equal(plan.row, [[0, 0, 2, 1]])  # skipped text -> row R
  np.testing.assert_array_equal(plan.col[0, [0, 1, 3]], [0, 5, 0])
  # Two groups are packed independently; one that overflows fails the plan.
  plan = text_packing.first_fit(jnp.array([[8, 8], [5, 4]]), rows=1, row_len=8)
  assert not bool(plan.fits)
  assert bool(text_packing.first_fit(jnp.array([[8, 0], [5, 3]]), 1, 8).fits)


def test_pack_lays_out_ids_segments_and_positions():
  ids = jnp.array([[[7, 8, 9, 0], [4, 5, 0, 0], [6, 0, 0, 0]]])  # [G=1, T=3, L=4]
  plan = text_packing.first_fit(jnp.array([[3, 2, 1]]), rows=2, row_len=4)
  packed, segments, positions = text_packing.pack(ids, plan, rows=2)
  # 3 -> row 0; 2 -> row 1; 1 -> row 0 after the first text.
  np.testing.assert_array_equal(packed, [[7, 8, 9, 6], [4, 5, 0, 0]])
  np.testing.assert_array_equal(segments, [[1, 1, 1, 3], [2, 2, 0, 0]])
  np.testing.assert_array_equal(positions, [[0, 1, 2, 0], [0, 1, 0, 0]])
  rows, cols = text_packing.pooled_cells(plan, jnp.array([[2, 1, 0]]), rows=2)
  np.testing.assert_array_equal(rows, [0, 1, 0])
  np.testing.assert_array_equal(cols, [2, 1, 3])


def _texts(rng, n):
  """n captions of 1..CTX tokens, most ending in EOT, right-padded with 0."""
  out = np.zeros((n, CTX), np.int32)
  for i in range(n):
    length = rng.integers(1, CTX + 1)
    out[i, :length] = rng.integers(1, EOT, length)
    if i % 5:  # every fifth text is cut without its EOT
      out[i, length - 1] = EOT
  return jnp.asarray(out)


@pytest.mark.parametrize("text", [
    dict(),  # CLIP: causal, pooled at EOT, pad keys masked
    dict(mask_pad=False),  # OpenAI's weights: pads attended
    dict(causal=False, pool="last"),  # bidirectional
])
def test_packed_embeddings_and_gradients_equal_one_text_per_row(text):
  model = TwoTowers(image=dict(patch_size=8, width=16, depth=1, heads=2),
                    text=dict(vocab_size=VOCAB, context_length=CTX, width=16, depth=2,
                              heads=2, eot_id=EOT, **text),
                    embed_dim=8)
  rng = np.random.default_rng(0)
  texts = _texts(rng, 24)
  keep = jnp.asarray(rng.random(24) < 0.8)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), texts)["params"]
  weights = jnp.asarray(rng.normal(size=(24, 8)), jnp.float32)

  def plain(p):
    z = model.apply({"params": p}, texts, method="embed_texts")
    return jnp.sum(jnp.where(keep[:, None], z * weights, 0.0)), z

  def packed(p, rows):
    z, ok = text_packing.embed_texts(model, p, texts, keep, groups=2, rows=rows)
    return jnp.sum(jnp.where(keep[:, None], z * weights, 0.0)), (z, ok)

  (value, z), grads = jax.jit(jax.value_and_grad(plain, has_aux=True))(params)
  for rows, expect_packed in ((9, True), (1, False)):
    (value_p, (z_p, ok)), grads_p = jax.jit(
        jax.value_and_grad(packed, has_aux=True), static_argnums=1)(params, rows)
    assert bool(ok) == expect_packed
    kept = np.asarray(keep)
    z_p = np.asarray(z_p)
    np.testing.assert_allclose(z_p[kept], np.asarray(z)[kept], atol=1e-5)
    np.testing.assert_allclose(value_p, value, atol=1e-5)
    # float32 sums in another order: equal up to rounding, relative to the size.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max()))), grads_p, grads)
    if expect_packed:  # texts not kept are not computed
      np.testing.assert_array_equal(z_p[~kept], 0.0)


def test_pooled_span_is_what_the_pooled_token_sees():
  model = TwoTowers(image=dict(patch_size=8, width=16, depth=1, heads=2),
                    text=dict(vocab_size=VOCAB, context_length=CTX, width=16, depth=1,
                              heads=2, eot_id=EOT), embed_dim=8)
  ids = jnp.array([[1, 2, EOT, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8]])
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), ids)
  np.testing.assert_array_equal(model.apply(params, ids, method="pooled_span"), [3, 8])
  both = TwoTowers(image=model.image, text=dict(model.text, causal=False, pool="last"),
                   embed_dim=8)
  np.testing.assert_array_equal(both.apply(params, ids, method="pooled_span"), [3, 8])
  ids = jnp.array([[0, 0, 1, 2, EOT, 0, 0, 0]])  # left pads are inside the span
  np.testing.assert_array_equal(both.apply(params, ids, method="pooled_span"), [5])


def test_rows_to_fit_is_the_fewest_rows_that_fit():
  """Texts of 7, 5, 4, 3 and 2 tokens in rows of 8: first-fit decreasing puts
  7 | 5+3 | 4+2 (three rows; 21 tokens would need three rows at best too)."""
  spans = np.array([3, 7, 2, 5, 4])
  assert text_packing.rows_to_fit(spans, 8) == 3
  assert not bool(text_packing.first_fit(jnp.asarray(spans)[None], 2, 8).fits)
  assert text_packing.rows_to_fit(np.array([8, 8, 1]), 8) == 3
  assert text_packing.rows_to_fit(np.zeros(4, int), 8) == 1
