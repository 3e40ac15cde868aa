"""The retriever's search: exact top-k, the blocked and the sharded paths equal to
``jax.lax.top_k`` on the whole index (indices and scores, ties included), the
recall of gold entities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlkg import sharding
from vlkg.models import retriever as R


def _numpy_top_k(s, k):
  """Greater score first, lower index first among equals."""
  order = np.lexsort((np.arange(s.shape[1])[None].repeat(len(s), 0), -s), axis=1)
  idx = order[:, :k]
  return np.take_along_axis(s, idx, 1), idx


def _int_index(seed, e, d=8, q=5):
  """Small integer entries: inner products are exact whatever the summation
  order, and ties are plentiful."""
  rng = np.random.default_rng(seed)
  keys = rng.integers(-2, 3, size=(e, d)).astype(np.float32)
  queries = rng.integers(-2, 3, size=(q, d)).astype(np.float32)
  return jnp.asarray(queries), jnp.asarray(keys)


def test_search_is_numpy_top_k_with_ties_by_lower_index():
  queries, keys = _int_index(0, 96)
  s = np.asarray(queries) @ np.asarray(keys).T
  want_v, want_i = _numpy_top_k(s, 7)
  assert (s[:, :, None] == s[:, None, :]).sum() > 96 * 5  # ties exist
  for block in (0, 8, 12):
    v, i = R.search(queries, keys, 7, block=block)
    np.testing.assert_array_equal(np.asarray(i), want_i)
    np.testing.assert_array_equal(np.asarray(v), want_v)


def test_invalid_rows_are_never_retrieved_before_valid_ones():
  queries, keys = _int_index(1, 16)
  valid = jnp.arange(16) < 10
  v, i = R.search(queries, keys, 12, valid=valid)
  assert (np.asarray(i)[:, :10] < 10).all()
  assert np.isneginf(np.asarray(v)[:, 10:]).all()
  np.testing.assert_array_equal(np.asarray(i)[:, 10:], [[10, 11]] * 5)


def test_approx_max_k_agrees_on_cpu():
  queries = jax.random.normal(jax.random.key(0), (4, 16))
  keys = jax.random.normal(jax.random.key(1), (200, 16))
  v, i = R.search(queries, keys, 5, approx=True)
  v0, i0 = R.search(queries, keys, 5)
  np.testing.assert_array_equal(np.asarray(i), np.asarray(i0))
  np.testing.assert_allclose(np.asarray(v), np.asarray(v0))


@pytest.mark.devices(8)
@pytest.mark.parametrize("mesh_axes", [[("data", 8)], [("data", 2), ("fsdp", 4)]])
@pytest.mark.parametrize("block", [0, 4])
def test_sharded_search_equals_unsharded_exactly(mesh_axes, block):
  assert jax.device_count() == 8
  mesh = sharding.make_mesh(mesh_axes)
  queries, keys = _int_index(2, 8 * 24)
  valid = jnp.arange(8 * 24) < 8 * 24 - 5  # an index padded to the devices
  want_v, want_i = R.search(queries, keys, 16, valid=valid)
  sharded = jax.device_put(keys, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(mesh.axis_names)))
  v, i = jax.jit(lambda q, k, ok: R.sharded_search(q, k, 16, mesh, valid=ok,
                                                   block=block))(queries, sharded, valid)
  np.testing.assert_array_equal(np.asarray(i), np.asarray(want_i))
  np.testing.assert_array_equal(np.asarray(v), np.asarray(want_v))
  # Floats too: the same entities, the same scores up to the summation order.
  keys_f = jax.random.normal(jax.random.key(3), (8 * 24, 32))
  q_f = jax.random.normal(jax.random.key(4), (3, 32))
  v, i = R.sharded_search(q_f, keys_f, 10, mesh)
  v0, i0 = R.search(q_f, keys_f, 10)
  np.testing.assert_array_equal(np.asarray(i), np.asarray(i0))
  np.testing.assert_allclose(np.asarray(v), np.asarray(v0), rtol=1e-6)


@pytest.mark.devices(8)
def test_sharded_search_needs_a_divisible_index():
  mesh = sharding.make_mesh([("data", 8)])
  queries, keys = _int_index(0, 20)
  with pytest.raises(ValueError, match="pad it"):
    R.sharded_search(queries, keys, 2, mesh)
  assert R.pad_to(20, 8) == 24 and R.pad_to(24, 8) == 24


def test_recall_at_normalises_by_what_n_slots_hold():
  indices = jnp.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3], [0, 0, 0, 0, 0]])
  gold = jnp.array([[4, 7, 0], [9, 2, 6], [8, 8, 8]])
  gold_valid = jnp.array([[True, True, False], [True, True, True], [False] * 3])
  # Row 0: gold {4, 7}; top-2 {3, 1} holds none, top-3 holds 4 (1 of min(2, 3)).
  # Row 1: gold {9, 2, 6}; top-2 holds 2 of min(3, 2) = 2; top-3 all 3.
  # Row 2 has no gold and does not count.
  np.testing.assert_allclose(R.recall_at(indices, gold, gold_valid, 2), (0 + 1) / 2)
  np.testing.assert_allclose(R.recall_at(indices, gold, gold_valid, 3),
                             (1 / 2 + 1) / 2)
  assert float(R.recall_at(indices, gold, gold_valid & False, 3)) == 0.0
