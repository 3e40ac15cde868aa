"""Ordering by data: an array made to wait for another computation, values unchanged.

The trainer uses it where XLA's CPU runtime would otherwise run two groups of
collectives in different orders on different devices (``vlkg.train``'s memory
refresh); a dependency the runtime's graph sees is what orders them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def after(tree, dependency):
  """``tree``, each array made to depend on ``dependency`` (same values).

  XLA's CPU runtime runs a step's operations as a graph of data dependencies: the
  collectives inside a memory refresh (``lax.cond``) are not ordered with the
  step's own, and devices that start them in different orders wait for each
  other for ever (seen with 8 devices: six in an all-gather of the step, two in
  an all-to-all of the refresh). Adding 0 times a value of the refresh's output
  to every parameter and batch array makes the rest of the step wait for the
  refresh; the float product with 0 is not simplified away (it is NaN for NaN).
  An optimization barrier does not do it: it is expanded before the runtime's
  graph is built. One output suffices (the refresh is one operation): the
  smallest, a step counter in REAVL's memory.
  """
  leaf = min(jax.tree.leaves(dependency), key=lambda x: x.size)
  zero = jnp.ravel(leaf)[0].astype(jnp.float32) * 0.0

  def tie(x):
    if x.dtype == jnp.bool_:
      return x | (zero != 0)
    return x + zero.astype(x.dtype)
  return jax.tree.map(tie, tree)
