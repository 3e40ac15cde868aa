"""Tests for vlkg.models.shapley_net: shapes, symmetries and a numpy reference."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from vlkg.models.shapley_net import ShapleyInteractionNet

N, D, M = 5, 6, 4


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(2, N, D)).astype(np.float32)
  coalitions = np.array([[1, 1, 0, 0, 0], [0, 1, 0, 1, 1], [0, 0, 1, 0, 0],
                         [1, 1, 1, 1, 1]], bool)
  return features, np.broadcast_to(coalitions, (2, M, N))


def net_and_params(depth, features, coalitions):
  net = ShapleyInteractionNet(width=8, depth=depth, heads=2)
  params = jax.jit(net.init)(jax.random.key(0), features, coalitions)
  # Random biases too, so that the reference checks them.
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: x + rng.normal(0, 0.3, x.shape).astype(x.dtype),
                        params)
  return net, params


def np_gelu(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def np_net_depth0(p, features, coalitions):
  """The depth-0 network in numpy: embed, pool per coalition, MLP head."""
  dense = lambda x, q: x @ q["kernel"] + q["bias"]
  h = dense(features, p["embed"])                                          # [n, w]
  c = coalitions.astype(np.float64)
  k = c.sum(-1, keepdims=True)
  mean_in = c @ h / np.maximum(k, 1)
  pairs = np.stack([
      sum(np.outer(h[i], h[j]).diagonal() for i in np.flatnonzero(s)
          for j in np.flatnonzero(s) if i < j) if s.sum() > 1 else np.zeros(h.shape[1])
      for s in coalitions]) / np.maximum(k * (k - 1) / 2, 1)
  out = 1 - c
  mean_out = out @ h / np.maximum(out.sum(-1, keepdims=True), 1)
  z = np.concatenate([mean_in, pairs, mean_out, k / h.shape[0]], -1)
  z = np_gelu(dense(z, p["head_0"]))
  z = np_gelu(dense(z, p["head_1"]))
  raw = dense(z, p["out"])
  return raw[:, 0], np.log1p(np.exp(raw[:, 1])) + 1e-6


def test_depth0_matches_numpy_reference():
  features, coalitions = inputs()
  net, params = net_and_params(0, features, coalitions)
  mean, var = jax.jit(net.apply)(params, features, coalitions)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params["params"])
  for b in range(2):
    ref_mean, ref_var = np_net_depth0(p, features[b].astype(np.float64), coalitions[b])
    np.testing.assert_allclose(mean[b], ref_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(var[b], ref_var, rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(var) > 0)


@pytest.fixture(scope="module")
def depth1():
  """A depth-1 network, its parameters and one jitted apply shared by the tests."""
  features, coalitions = inputs()
  net, params = net_and_params(1, features, coalitions)
  return params, jax.jit(net.apply)


def test_shapes_and_unbatched_call(depth1):
  features, coalitions = inputs()
  params, apply = depth1
  mean, var = apply(params, features, coalitions)
  assert mean.shape == var.shape == (2, M)
  mean0, var0 = apply(params, features[0], coalitions[0])
  assert mean0.shape == (M,)
  np.testing.assert_allclose(mean0, mean[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(var0, var[0], rtol=1e-5, atol=1e-6)


def test_permutation_equivariance_and_padding_players(depth1):
  features, coalitions = inputs()
  params, apply = depth1
  mean, var = apply(params, features, coalitions)
  # Relabelling the players (features and coalition columns alike) changes nothing.
  perm = np.array([3, 0, 4, 1, 2])
  pm, pv = apply(params, features[:, perm], coalitions[..., perm])
  np.testing.assert_allclose(pm, mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(pv, var, rtol=1e-5, atol=1e-5)
  # Two padding players (masked out, never in a coalition) change nothing either.
  junk = np.random.default_rng(2).normal(size=(2, 2, D)).astype(np.float32)
  padded = np.concatenate([features, junk], axis=1)
  pad_coal = np.concatenate([coalitions, np.zeros((2, M, 2), bool)], axis=-1)
  valid = np.r_[np.ones(N, bool), np.zeros(2, bool)][None].repeat(2, 0)
  qm, qv = apply(params, padded, pad_coal, valid)
  np.testing.assert_allclose(qm, mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(qv, var, rtol=1e-5, atol=1e-5)
