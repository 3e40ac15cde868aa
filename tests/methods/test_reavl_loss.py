"""REAVL's objectives against independent numpy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlkg.methods import reavl_loss as L


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_multi_positive_nce_by_hand():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 6)).astype(np.float32)
  positive = np.zeros((4, 6), bool)
  positive[0, [1, 3]] = True
  positive[1, 2] = True
  positive[3, [0, 4]] = True  # row 2 has none and does not count
  key_valid = np.array([True] * 5 + [False])
  masked = np.where(key_valid, logits, -1e30)
  logp = _log_softmax(masked)
  rows = [0, 1, 3]
  want = np.mean([-logp[i, positive[i]].mean() for i in rows])
  acc = np.mean([positive[i, masked[i].argmax()] for i in rows])
  loss, got_acc = L.multi_positive_nce(jnp.asarray(logits), jnp.asarray(positive),
                                       jnp.asarray(key_valid))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(got_acc, acc)
  none = L.multi_positive_nce(jnp.asarray(logits), jnp.zeros((4, 6), bool))
  assert float(none[0]) == 0.0 and float(none[1]) == 0.0


def test_tiered_nce_by_hand():
  """The caption's own entities against every other; their concepts against every
  entity but the caption's own (which leave that softmax)."""
  logits = np.array([[2.0, 1.0, 0.5, -1.0, 0.0],
                     [0.0, 3.0, -2.0, 1.0, 0.5]], np.float32)
  own = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]], bool)
  hops = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0]], bool)  # row 1: no concepts
  key_valid = np.array([True, True, True, True, False])

  def lse(values):
    return np.log(np.sum(np.exp(values)))
  row0 = logits[0, :4]
  head = np.mean([lse(row0) - row0[0], lse(logits[1, :4]) - logits[1, 1]])
  # Row 0's concept 2 (entity 0 is its own, so not a concept here) against
  # entities 1, 2, 3 (0 is its own, 4 invalid); row 1 has none and does not count.
  tail = lse(row0[[1, 2, 3]]) - row0[2]
  loss, acc = L.tiered_nce(jnp.asarray(logits), jnp.asarray(own), jnp.asarray(hops),
                           jnp.asarray(key_valid))
  np.testing.assert_allclose(loss, head + tail, rtol=1e-5)
  assert float(acc) == 1.0  # both rows' best entity is their own


def test_token_ce_on_masked_positions_only():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, size=(2, 5))
  masked = rng.random((2, 5)) < 0.5
  masked[0, 0] = True
  logp = _log_softmax(logits)
  picked = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  loss, acc = L.token_ce(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(masked))
  np.testing.assert_allclose(loss, -picked[masked].mean(), rtol=1e-5)
  np.testing.assert_allclose(acc, (logits.argmax(-1) == targets)[masked].mean())


def test_index_nce_against_every_valid_key():
  rng = np.random.default_rng(2)
  pred = rng.normal(size=(3, 4)).astype(np.float32)
  keys = rng.normal(size=(6, 4)).astype(np.float32)
  targets = np.array([2, -1, 4])  # row 1 does not count
  valid = np.array([True, False, True])
  key_valid = np.array([True, True, True, True, True, False])
  logits = 10.0 * pred @ keys.T
  logits[:, ~key_valid] = -1e30
  logp = _log_softmax(logits)
  want = -np.mean([logp[0, 2], logp[2, 4]])
  loss, acc = L.index_nce(jnp.asarray(pred), jnp.asarray(keys), jnp.asarray(targets),
                          jnp.asarray(valid), 10.0, jnp.asarray(key_valid))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(acc, np.mean([logits[0].argmax() == 2,
                                           logits[2].argmax() == 4]))


def test_hardest_negatives_skip_the_pair_and_its_duplicate_captions():
  sim = np.array([[0.9, 0.8, 0.1, 0.7],
                  [0.2, 0.9, 0.6, 0.5],
                  [0.3, 0.95, 0.9, 0.1],
                  [0.1, 0.2, 0.3, 0.9]], np.float32)
  captions = np.array([0, 1, 2, 0])  # texts 0 and 3 are the same caption
  same = captions[:, None] == captions[None]
  want_text, want_image = [], []
  for i in range(4):
    want_text.append(max((j for j in range(4) if not same[i, j]), key=lambda j: sim[i, j]))
    want_image.append(max((j for j in range(4) if not same[j, i]), key=lambda j: sim[j, i]))
  nt, ni, ok_t, ok_i = L.hardest_negatives(jnp.asarray(sim), jnp.asarray(same))
  np.testing.assert_array_equal(nt, want_text)
  np.testing.assert_array_equal(ni, want_image)
  assert np.asarray(ok_t).all() and np.asarray(ok_i).all()
  assert want_text == [1, 2, 1, 2] and want_image == [2, 2, 1, 1]
  _, _, ok_t, _ = L.hardest_negatives(jnp.asarray(sim), jnp.ones((4, 4), bool))
  assert not np.asarray(ok_t).any()


def test_sampled_negatives_follow_the_softmax_and_skip_the_same_caption():
  """Inverse-CDF draws against numpy's searchsorted, and their frequencies against
  the softmax over the allowed pairs (ALBEF's sampling)."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 4)).astype(np.float32) * 3
  captions = np.array([0, 1, 2, 0])
  same = captions[:, None] == captions[None]

  def probs(rows, blocked):
    p = np.where(blocked, 0.0, np.exp(rows - rows.max(-1, keepdims=True)))
    return p / p.sum(-1, keepdims=True)

  p_text, p_image = probs(logits, same), probs(logits.T, same.T)
  u = rng.uniform(size=(2000, 2, 4)).astype(np.float32)
  draw = jax.jit(jax.vmap(lambda ut, ui: L.sampled_negatives(
      jnp.asarray(logits), jnp.asarray(same), ut, ui)[:2]))
  nt, ni = map(np.asarray, draw(jnp.asarray(u[:, 0]), jnp.asarray(u[:, 1])))
  for d in range(5):
    for i in range(4):
      assert nt[d, i] == np.searchsorted(np.cumsum(p_text[i]), u[d, 0, i], side="left")
      assert ni[d, i] == np.searchsorted(np.cumsum(p_image[i]), u[d, 1, i], side="left")
  assert not same[np.arange(4), nt].any() and not same.T[np.arange(4), ni].any()
  freq_text = np.stack([np.bincount(nt[:, i], minlength=4) for i in range(4)]) / 2000
  np.testing.assert_allclose(freq_text, p_text, atol=0.04)
  _, _, ok_t, ok_i = L.sampled_negatives(jnp.asarray(logits), jnp.ones((4, 4), bool),
                                         jnp.zeros(4), jnp.zeros(4))
  assert not np.asarray(ok_t).any() and not np.asarray(ok_i).any()


def test_matching_ce_two_way():
  logits = np.array([[0.1, 2.0], [1.0, -1.0], [0.3, 0.2]], np.float32)
  labels = np.array([1, 0, 1])
  valid = np.array([True, True, False])
  logp = _log_softmax(logits)
  loss, acc = L.matching_ce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(valid))
  np.testing.assert_allclose(loss, -(logp[0, 1] + logp[1, 0]) / 2, rtol=1e-6)
  assert float(acc) == 1.0


def test_relevance_bce_by_hand():
  logits = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 40.0]], np.float32)
  relevant = np.array([[True, False, False], [True, True, False]])
  valid = np.array([[True, True, True], [True, False, True]])
  x = logits.astype(np.float64)
  # -log s(x) = log1p(e^-x); -log(1 - s(x)) = x + log1p(e^-x) (no 1 - s(40) = 0).
  bce = np.where(relevant, np.log1p(np.exp(-x)), x + np.log1p(np.exp(-x)))
  want = bce[valid].mean()
  loss, acc = L.relevance_bce(jnp.asarray(logits), jnp.asarray(relevant), jnp.asarray(valid))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  # Right: 2.0 (relevant, open) and -1.0 (not relevant, closed); wrong: 0.5 and
  # 40.0 (open, not relevant) and -3.0 (closed, relevant): 2 of 5 valid items.
  assert float(acc) == pytest.approx(2 / 5)
