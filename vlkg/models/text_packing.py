"""Many short texts packed into few rows of the text tower, with the same outputs.

A method that scores many texts per image (MosaiCLIP's sub-captions and
negatives, Singh et al., EMNLP 2023, "Coarse-to-Fine Contrastive Learning") pays
for ``texts x context_length`` tokens when each text has a row of its own, though
most of a short text's row is padding. Packing puts several texts end to end in
one row, each with its own positions (0, 1, ...) and an attention mask that keeps
every text to its own tokens (sequence packing without cross-contamination,
Krell et al. 2021, "Efficient Sequence Packing without Cross-contamination:
Accelerating Large Language Models without Impacting Performance"). Each text
then computes exactly what it computes alone: the same tokens at the same
positions see the same keys, and the masked keys' softmax weights are exactly 0.

A text takes only the tokens its pooled output depends on
(``TextTransformer.pooled_span``): with causal attention, up to its end-of-text
token. The rows are filled first-fit decreasing (longest text first, each into
the first row with room), inside the jitted step, per group of texts, so that
groups follow the batch's data sharding. Shapes are static: a plan has a fixed
number of rows, and ``plan.fits`` says whether every text found a place; where
one did not, each text gets a row of its own (``embed_texts``), so the result
never depends on the capacity, only the speed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Plan(NamedTuple):
  """Where each of G groups' T texts goes among the group's R rows of length L.

  Attributes:
    row: [G, T] int row of each text in its group (R for a text that is skipped).
    col: [G, T] int first column of each text in its row.
    length: [G, T] int tokens of each text that are packed (0 = skipped).
    fits: bool scalar: every text with tokens found a place.
  """

  row: Array
  col: Array
  length: Array
  fits: Array


def first_fit(lengths: Array, rows: int, row_len: int) -> Plan:
  """First-fit decreasing placement of each group's texts into ``rows`` rows.

  Args:
    lengths: [G, T] int tokens of each text; 0 skips the text.
    rows: rows per group.
    row_len: tokens per row (the text tower's context).

  Returns:
    The ``Plan``. A text that does not fit sets ``fits`` to False; its place is
    then meaningless.
  """
  lengths = lengths.astype(jnp.int32)

  def group(n):
    order = jnp.argsort(-n, stable=True)

    def place(fill, size):
      room = fill + size <= row_len
      r = jnp.argmax(room)
      ok = room[r] | (size == 0)
      return fill.at[r].add(size), (r, fill[r], ok)

    _, (r, c, ok) = jax.lax.scan(place, jnp.zeros((rows,), jnp.int32), n[order])
    back = jnp.argsort(order)
    r, c, ok = r[back], c[back], ok[back]
    return jnp.where(n > 0, r, rows), c, jnp.all(ok)

  row, col, ok = jax.vmap(group)(lengths)
  return Plan(row, col, lengths, jnp.all(ok))


def pack(ids: Array, plan: Plan, rows: int) -> tuple[Array, Array, Array]:
  """The packed rows of ``ids`` [G, T, L] following ``plan``.

  Returns:
    ``(ids, segments, positions)``, each [G * R, L] int32: the token ids (0 in
    unused cells), the 1-based index of the text within its group that owns each
    cell (0 = unused), and each token's position within its own text.
  """
  g, t, length = ids.shape
  j = jnp.arange(length)
  used = j[None, None, :] < plan.length[..., None]  # [G, T, L]
  # Unused tokens go to row `rows` of their group, which the scatter drops.
  dest_row = jnp.where(used, plan.row[..., None], rows)
  dest_col = jnp.where(used, plan.col[..., None] + j, 0)
  group = jnp.broadcast_to(jnp.arange(g)[:, None, None], ids.shape)

  def scatter(values):
    out = jnp.zeros((g, rows, length), jnp.int32)
    return out.at[group, dest_row, dest_col].set(values.astype(jnp.int32), mode="drop")

  segment = jnp.broadcast_to(jnp.arange(1, t + 1)[None, :, None], ids.shape)
  position = jnp.broadcast_to(j, ids.shape)
  flat = lambda x: x.reshape(g * rows, length)
  return flat(scatter(ids)), flat(scatter(segment)), flat(scatter(position))


def pooled_cells(plan: Plan, pool_index: Array, rows: int) -> tuple[Array, Array]:
  """The flat packed row and the column of each text's pooled token.

  Args:
    plan: the ``Plan`` of [G, T] texts.
    pool_index: [G, T] position of each text's pooled token within the text.
    rows: rows per group.

  Returns:
    ``(row, col)``, each [G * T] int, into the [G * R, L] packed arrays; a skipped
    text points at row 0 (its output is meaningless).
  """
  g = plan.row.shape[0]
  placed = plan.length > 0
  row = jnp.where(placed, jnp.arange(g)[:, None] * rows + plan.row, 0)
  col = jnp.where(placed, plan.col + pool_index, 0)
  return row.reshape(-1), col.reshape(-1)


def _packed_or_plain(apply_packed, apply_plain):
  """``select(params, packed_inputs, texts, fits)``: ``apply_packed(params,
  *packed_inputs)`` where ``fits``, else ``apply_plain(params, texts)``, with the
  gradient of the one that ran.

  Differentiating a ``lax.cond`` would make the packed branch hand out zero-filled
  copies of every residual the plain branch keeps (activations of all N rows),
  which cost a third of MosaiCLIP's step (docs/results.md, "Training step"). Here the
  packed pass runs and keeps its residuals whatever ``fits`` says; the plain pass
  runs only where it must and keeps none: its backward recomputes it.
  """

  @jax.custom_vjp
  def select(params, packed_inputs, texts, fits):
    return jax.lax.cond(fits, lambda p: apply_packed(p, *packed_inputs),
                        lambda p: apply_plain(p, texts), params)

  def fwd(params, packed_inputs, texts, fits):
    z, vjp = jax.vjp(lambda p: apply_packed(p, *packed_inputs), params)
    z = jax.lax.cond(fits, lambda p: z, lambda p: apply_plain(p, texts), params)
    return z, (vjp, params, texts, fits)

  def bwd(residuals, g):
    vjp, params, texts, fits = residuals
    grads = jax.lax.cond(
        fits, lambda: vjp(g)[0],
        lambda: jax.vjp(lambda p: apply_plain(p, texts), params)[1](g)[0])
    return grads, None, None, None

  select.defvjp(fwd, bwd)
  return select


def groups_and_rows(images: int, texts_per_image: int, row_share: float,
                    images_per_group: int = 32) -> tuple[int, int]:
  """How ``embed_texts`` packs a batch: groups of ``images_per_group`` images (one
  group when the batch does not divide), each with ``row_share`` rows per text.

  A group never spans two devices of a data-parallel batch whose per-device batch
  it divides. A batch that needs more rows than the share falls back to one text
  per row, so neither number changes the embeddings, only the speed.
  """
  groups = images // images_per_group if images % images_per_group == 0 else 1
  return groups, math.ceil(row_share * images * texts_per_image / groups)


def rows_to_fit(spans, row_len: int) -> int:
  """The fewest rows into which ``first_fit`` packs texts of ``spans`` tokens
  (one group): for a fixed set of texts, such as an index's entity names, whose
  packing is known before the step."""
  spans = jnp.asarray(spans, jnp.int32).reshape(1, -1)
  rows = max(1, math.ceil(int(spans.sum()) / row_len))
  while not bool(first_fit(spans, rows, row_len).fits):
    rows += 1
  return rows


def embed_texts(model, params, texts: Array, keep: Array, groups: int,
                rows: int) -> tuple[Array, Array]:
  """L2-normalised embeddings of ``texts`` through the model's text tower, packed.

  Args:
    model: a ``TwoTowers`` (or subclass) module.
    params: its params.
    texts: [N, L] token ids; N must be a multiple of ``groups``.
    keep: [N] bool, the texts whose embeddings are wanted; the others are
      skipped and come back as zeros (from the packed path) or as their own
      embeddings (from the fallback).
    groups: texts are packed within ``groups`` consecutive groups of N / groups
      (group along the batch, so that packing follows its sharding).
    rows: packed rows per group.

  Returns:
    ``(z, packed)``: [N, D] float32 embeddings, the same as
    ``model.embed_texts(texts)`` on the kept texts, with the same gradients, and
    whether the packed path ran (False: some group's texts did not fit, and each
    text had a row of its own).
  """
  n, length = texts.shape
  if n % groups:
    raise ValueError(f"{n} texts do not split into {groups} groups.")
  variables = {"params": params}
  span = model.apply(variables, texts, method="pooled_span")
  pool = model.apply(variables, texts, method="pool_index")
  plan = first_fit(jnp.where(keep, span, 0).reshape(groups, -1), rows, length)
  ids, segments, positions = pack(texts.reshape(groups, -1, length), plan, rows)
  cell_row, cell_col = pooled_cells(plan, pool.reshape(groups, -1), rows)

  def apply_packed(p, ids, segments, positions, cell_row, cell_col, keep):
    z = model.apply({"params": p}, ids, segments, positions, cell_row, cell_col,
                    method="embed_packed_texts")
    return jnp.where(keep[:, None], z, 0.0)

  def apply_plain(p, texts):
    return model.apply({"params": p}, texts, method="embed_texts")

  select = _packed_or_plain(apply_packed, apply_plain)
  z = select(params, (ids, segments, positions, cell_row, cell_col, keep), texts,
             plan.fits)
  return z, plan.fits
