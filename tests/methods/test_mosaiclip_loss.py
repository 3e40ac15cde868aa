"""MosaiCLIP's loss and curriculum against a numpy reference written with loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlkg.methods import mosaiclip_loss as ml

MAX_POS, MAX_NEG = 3, 6
K = 2 + MAX_POS + MAX_NEG


def _normalise(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _batch(seed, n=5, d=8):
  rng = np.random.default_rng(seed)
  zimg = _normalise(rng.normal(size=(n, d)))
  ztxt = _normalise(rng.normal(size=(n, K, d)))
  # Uneven counts: image i has i % 4 sub-captions and (2 * i) % 7 negatives; the
  # whole-caption negative is missing for image 1.
  valid = np.zeros((n, K), bool)
  valid[:, 0] = True
  for i in range(n):
    valid[i, 1:1 + i % 4] = True
    valid[i, 1 + MAX_POS:1 + MAX_POS + (2 * i) % 7] = True
    valid[i, K - 1] = i != 1
  positive = np.arange(K) < 1 + MAX_POS
  return zimg, ztxt, positive, valid


def reference(zimg, ztxt, positive, valid, scale):
  n = len(zimg)
  texts = [(i, k) for i in range(n) for k in range(K) if valid[i, k]]
  i2t = []
  for i in range(n):
    logits = np.array([scale * zimg[i] @ ztxt[j, k] for j, k in texts])
    logz = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()
    own = [logits[t] - logz for t, (j, k) in enumerate(texts) if j == i and positive[k]]
    i2t.append(-np.mean(own))
  t2i = []
  for j, k in texts:
    if not positive[k]:
      continue
    logits = np.array([scale * zimg[i] @ ztxt[j, k] for i in range(n)])
    logz = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()
    t2i.append(-(logits[j] - logz))
  return np.mean(i2t), np.mean(t2i)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_reference_with_masks_and_uneven_counts(seed):
  zimg, ztxt, positive, valid = _batch(seed)
  loss, m = ml.mosaic_loss(jnp.asarray(zimg, jnp.float32), jnp.asarray(ztxt, jnp.float32),
                           jnp.asarray(positive), jnp.asarray(valid), 10.0)
  i2t, t2i = reference(zimg, ztxt, positive, valid, 10.0)
  np.testing.assert_allclose(m["i2t"], i2t, rtol=1e-5)
  np.testing.assert_allclose(m["t2i"], t2i, rtol=1e-5)
  np.testing.assert_allclose(loss, (i2t + t2i) / 2, rtol=1e-5)
  np.testing.assert_allclose(m["texts_per_image"], valid.sum(1).mean())


def test_padded_slots_are_removed_exactly():
  """Whatever an invalid slot holds changes neither the loss nor its gradient."""
  zimg, ztxt, positive, valid = _batch(3)
  garbage = ztxt.copy()
  garbage[~valid] = _normalise(np.random.default_rng(9).normal(size=garbage[~valid].shape))

  def loss(t):
    return ml.mosaic_loss(jnp.asarray(zimg, jnp.float32), t, jnp.asarray(positive),
                          jnp.asarray(valid), 10.0)[0]

  a, ga = jax.value_and_grad(loss)(jnp.asarray(ztxt, jnp.float32))
  b, gb = jax.value_and_grad(loss)(jnp.asarray(garbage, jnp.float32))
  np.testing.assert_allclose(a, b, rtol=1e-6)
  np.testing.assert_allclose(ga[valid], gb[valid], atol=1e-6)
  assert np.all(np.asarray(ga)[~valid] == 0) and np.all(np.isfinite(ga))


def test_reduces_to_clip_without_extra_slots():
  """Only captions valid: L is CLIP's symmetric InfoNCE."""
  zimg, ztxt, positive, valid = _batch(4)
  only_caption = np.zeros_like(valid)
  only_caption[:, 0] = True
  loss, _ = ml.mosaic_loss(jnp.asarray(zimg, jnp.float32), jnp.asarray(ztxt, jnp.float32),
                           jnp.asarray(positive), jnp.asarray(only_caption), 7.0)
  logits = 7.0 * zimg @ ztxt[:, 0].T
  def ce(l):
    l = l - l.max(1, keepdims=True)
    return -np.mean(np.diag(l - np.log(np.exp(l).sum(1, keepdims=True))))
  np.testing.assert_allclose(loss, (ce(logits) + ce(logits.T)) / 2, rtol=1e-5)


def test_hand_worked_two_images():
  """N = 2, one positive each plus image 0's negative, embeddings on axes so every
  cosine is 0 or 1. Image 0: texts (own caption 1, own negative 1, other caption 0):
  i2t_0 = -log(e^s / (2e^s + 1)); image 1 sees cosines (0, 0, 1): i2t_1 = -log(e^s /
  (e^s + 2)). t2i: caption 0 has cosines (1, 0) to the images, caption 1 (0, 1):
  each -log(e^s / (e^s + 1))."""
  s = 2.0
  zimg = np.array([[1.0, 0.0], [0.0, 1.0]])
  ztxt = np.zeros((2, 3, 2))
  ztxt[0, 0] = [1, 0]
  ztxt[0, 1] = [1, 0]  # a negative as close as the caption
  ztxt[1, 0] = [0, 1]
  positive = np.array([True, False, False])
  valid = np.array([[True, True, False], [True, False, False]])
  loss, m = ml.mosaic_loss(jnp.asarray(zimg, jnp.float32), jnp.asarray(ztxt, jnp.float32),
                           jnp.asarray(positive), jnp.asarray(valid), s)
  e = np.exp(s)
  i2t = (-np.log(e / (2 * e + 1)) - np.log(e / (e + 2))) / 2
  t2i = -np.log(e / (e + 1))
  np.testing.assert_allclose(m["i2t"], i2t, rtol=1e-6)
  np.testing.assert_allclose(m["t2i"], t2i, rtol=1e-6)
  np.testing.assert_allclose(m["pos_neg_gap"], 0.0, atol=1e-7)


def test_curriculum_masks_without_changing_shapes():
  valid = np.ones((2, K), bool)
  valid[1, 2:1 + MAX_POS] = False  # image 1 has one sub-caption only
  stage = jax.jit(lambda step: ml.curriculum_valid(jnp.asarray(valid), step, 100,
                                                   MAX_POS, MAX_NEG))
  one = np.asarray(stage(0))
  expected = np.zeros((2, K), bool)
  expected[:, [0, 1, 1 + MAX_POS, K - 1]] = True  # caption, 1 pos, 1 neg, whole neg
  np.testing.assert_array_equal(one, expected)
  np.testing.assert_array_equal(np.asarray(stage(99)), expected)
  np.testing.assert_array_equal(np.asarray(stage(100)), valid)
  assert stage._cache_size() == 1  # one compilation for both stages


def test_slot_layout():
  layout = ml.slot_layout(MAX_POS, MAX_NEG)
  assert [layout[k].start for k in ("caption", "positives", "negatives", "whole_negative")] \
      == [0, 1, 4, 10]
  assert layout["whole_negative"].stop == K
  np.testing.assert_array_equal(ml.positive_slots(MAX_POS, MAX_NEG), np.arange(K) < 4)
