"""Maximum-inner-product search over an index of knowledge-graph entity embeddings.

REAVL's knowledge retriever (Rao et al., "Retrieval-based Knowledge Augmented
Vision Language Pre-training", ACM MM 2023, §3, "Knowledge Retriever") fetches the
entities of a knowledge graph that are relevant to an image-text input: the input's
fused embedding is the query, each entity's embedding a key, and the top-k keys by
inner product are retrieved. REVEAL (Hu et al., "REVEAL: Retrieval-Augmented
Visual-Language Pre-Training with Multi-Source Multimodal Knowledge Memory", CVPR
2023, §3.3) shards its memory over the devices and searches it with
``jax.lax.approx_max_k``; here the search is exact by default (``jax.lax.top_k``)
and approximate on request, on one device or sharded:

* ``search``: top-k of ``queries @ keys.T`` on the arrays as given. ``block``
  makes the exact search two-staged (the maximum of each block of ``block``
  entities, the top-k blocks, then the top-k of their entities), which returns
  exactly ``top_k``'s answer: every one of the k best entities lies in one of the
  k blocks with the best maxima (ties included, see ``_blocked_top_k``).
* ``sharded_search``: the keys split over a mesh's devices along the entity axis
  (``shard_map``): each device searches its shard, the k best of every shard are
  gathered and merged by one more top-k. It returns exactly what ``search``
  returns on the whole index, ties included: ``top_k`` puts the lower index first
  among equal values, shards hold contiguous index ranges in device order, and the
  gathered candidates keep that order. So a graph of millions of entities is held
  a slice per device.

Invalid rows (an index padded to a multiple of the devices) score ``-inf``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

Array = jax.Array
NEG_INF = -jnp.inf


def scores(queries: Array, keys: Array, valid: Array | None = None) -> Array:
  """[Q, E] float32 inner products; ``-inf`` where ``valid`` [E] is False."""
  s = jnp.einsum("qd,ed->qe", queries.astype(jnp.float32), keys.astype(jnp.float32))
  if valid is not None:
    s = jnp.where(valid[None], s, NEG_INF)
  return s


def _blocked_top_k(s: Array, k: int, block: int) -> tuple[Array, Array]:
  """Exact top-k of [Q, E] scores through block maxima (E divisible by block).

  Let x be among the k best (greater value first, lower index first among
  equals) and B its block. If B were not among the k best blocks by (maximum,
  lower block first), k other blocks would each hold a maximum that precedes x:
  greater than x, or equal to it in a block of lower indices. So the k best
  entities lie in the k best blocks, where ``top_k`` finds them in index order.
  """
  q, e = s.shape
  blocks = s.reshape(q, e // block, block)
  _, best = jax.lax.top_k(blocks.max(axis=-1), k)
  best = jnp.sort(best, axis=-1)  # index order, so ties resolve as in top_k
  cand = jnp.take_along_axis(blocks, best[:, :, None], axis=1).reshape(q, k * block)
  values, pos = jax.lax.top_k(cand, k)
  index = jnp.take_along_axis(best, pos // block, axis=1) * block + pos % block
  return values, index.astype(jnp.int32)


def top_k(s: Array, k: int, *, approx: bool = False, block: int = 0
          ) -> tuple[Array, Array]:
  """Top-k of [Q, E] scores along E: (values [Q, k], indices [Q, k] int32).

  ``approx`` uses ``jax.lax.approx_max_k`` (exact on CPU and GPU, approximate on
  TPU at its default recall target); else ``block`` > 0 with ``E`` a multiple of
  it and at least ``k`` blocks takes the exact two-stage path; else
  ``jax.lax.top_k``.
  """
  e = s.shape[-1]
  if k > e:
    raise ValueError(f"top-{k} of an index of {e} entities")
  if approx:
    values, index = jax.lax.approx_max_k(s, k)
  elif block and e % block == 0 and e // block >= k:
    values, index = _blocked_top_k(s, k, block)
  else:
    values, index = jax.lax.top_k(s, k)
  return values, index.astype(jnp.int32)


def search(queries: Array, keys: Array, k: int, *, valid: Array | None = None,
           approx: bool = False, block: int = 0) -> tuple[Array, Array]:
  """The k keys of largest inner product with each query.

  Args:
    queries: [Q, D]; keys: [E, D]; valid: optional [E] bool.
    k: how many; approx, block: see ``top_k``.

  Returns:
    (scores [Q, k] float32, indices [Q, k] int32), best first.
  """
  return top_k(scores(queries, keys, valid), k, approx=approx, block=block)


def sharded_search(queries: Array, keys: Array, k: int, mesh: Mesh, *,
                   axes: Sequence[str] | None = None, valid: Array | None = None,
                   approx: bool = False, block: int = 0) -> tuple[Array, Array]:
  """``search`` with the keys split over ``axes`` of ``mesh`` along the entities.

  Args:
    queries: [Q, D], replicated (every device searches for every query).
    keys: [E, D] with E a multiple of the devices on ``axes``; valid: [E] bool.
    k: how many (at most a shard's entities).
    mesh: the device mesh; axes: its axes the index is split over (default all).
    approx, block: each shard's search (``top_k``); the merge is exact.

  Returns:
    (scores [Q, k], indices [Q, k] int32) into the whole index, replicated.
  """
  axes = tuple(mesh.axis_names if axes is None else axes)
  shards = int(np.prod([mesh.shape[a] for a in axes]))
  e = keys.shape[0]
  if e % shards:
    raise ValueError(f"an index of {e} entities does not split over {shards} devices; "
                     "pad it (retriever.pad_to)")
  if valid is None:
    valid = jnp.ones((e,), bool)

  def local(q, kk, ok):
    values, index = search(q, kk, min(k, kk.shape[0]), valid=ok, approx=approx,
                           block=block)
    index = index + jax.lax.axis_index(axes) * kk.shape[0]
    # One collective for both (the indices' bits travel as float32): two
    # independent all-gathers may be issued in different orders on different
    # devices, which deadlocks XLA's CPU collectives.
    packed = jnp.stack([values, jax.lax.bitcast_convert_type(index, jnp.float32)], -1)
    packed = jax.lax.all_gather(packed, axes, axis=1, tiled=True)
    values = packed[..., 0]
    index = jax.lax.bitcast_convert_type(packed[..., 1], jnp.int32)
    best, pos = jax.lax.top_k(values, k)
    return best, jnp.take_along_axis(index, pos, axis=1)

  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axes), P(axes)),
                     out_specs=(P(), P()), check_vma=False)
  return fn(queries, keys, valid)


def pad_to(n: int, multiple: int) -> int:
  """``n`` rounded up to a multiple of ``multiple``."""
  return -(-n // multiple) * multiple


def recall_at(indices: Array, gold: Array, gold_valid: Array, n: int) -> Array:
  """Recall of gold entities among the first ``n`` retrieved, per example
  normalised by what ``n`` slots can hold: |gold ∩ top-n| / min(|gold|, n),
  averaged over the examples that have a gold entity (0 when none has).

  Args:
    indices: [Q, >= n] retrieved entity indices, best first.
    gold: [Q, G] gold entity indices; gold_valid: [Q, G] bool.
  """
  top = indices[:, :n]
  hit = (gold[:, :, None] == top[:, None, :]).any(-1) & gold_valid  # [Q, G]
  count = gold_valid.sum(-1)
  has = count > 0
  per = hit.sum(-1) / jnp.maximum(jnp.minimum(count, n), 1)
  return jnp.sum(jnp.where(has, per, 0.0)) / jnp.maximum(has.sum(), 1)


@functools.partial(jax.jit, static_argnames=("k", "approx", "block"))
def jitted_search(queries, keys, k: int, approx: bool = False, block: int = 0):
  """``search`` compiled once per shape (the benchmark's and the encoder's)."""
  return search(queries, keys, k, approx=approx, block=block)
