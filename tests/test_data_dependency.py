"""vlkg.data_dependency: arrays made to wait for another computation keep their values."""

import jax
import jax.numpy as jnp
import numpy as np

from vlkg import data_dependency


def test_after_makes_every_array_depend_on_the_memory_with_the_same_values():
  """The step's parameters and batch wait for a memory refresh: the values are
  unchanged, every dtype, and the compiled function reads the dependency (a NaN
  there shows; a step counter never is one)."""
  tree = ({"w": jnp.array([[-0.0, 1.5]]), "b": jnp.array([2], jnp.int32)},
          {"text": jnp.array([[3, 0]], jnp.int32), "mask": jnp.array([True, False])})
  memory = {"at": jnp.array(7), "keys": jnp.ones((4, 2))}
  tied = jax.jit(data_dependency.after)(tree, memory)
  for got, want in zip(jax.tree.leaves(tied), jax.tree.leaves(tree)):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
  # Compiled, the product with 0 is kept: a NaN dependency reaches the arrays.
  poisoned = jax.jit(data_dependency.after)(tree, {"at": jnp.array(np.nan, jnp.float32)})
  assert np.isnan(poisoned[0]["w"]).all()
