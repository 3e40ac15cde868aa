"""REAVL's objectives as pure functions of logits and features.

Rao et al., "Retrieval-based Knowledge Augmented Vision Language Pre-training",
ACM MM 2023, §3: the retriever is trained so that knowledge and multi-modal data
correspond, and four knowledge-aware self-supervised tasks serve "masked
multi-modal data modeling and KG relational reasoning". The paper's body gives no
formulas; the forms below are vlkg's (docs/methods.md, REAVL):

* ``multi_positive_nce`` (the retriever): each query against every entity of the
  index, its gold entities the positives: -mean over positives of log softmax, so
  that every gold entity is pulled up (supervised-contrastive "outside" form,
  Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, Eq. 2).
* ``token_ce`` (masked language modelling with knowledge): cross entropy of the
  masked tokens, predicted from the fused tokens that read image and knowledge.
* ``index_nce`` (masked entity modelling; link prediction): a predicted entity
  embedding against every valid key of the index.
* ``relevance_bce`` (the adaptive gate's supervision, ``reavl.gate_weight``):
  binary cross entropy of each retrieved item's gate logit against whether the
  item is one of the pair's gold entities (or their concepts), so that the gate
  learns which knowledge is informative and closes the rest.
* ``sampled_negatives`` / ``hardest_negatives`` and ``matching_ce``
  (image-text-knowledge matching): ALBEF's matching with in-batch hard negatives
  (Li et al., "Align before Fuse", NeurIPS 2021, §3.2): sampled in proportion to
  the softmax of the contrastive similarity (ALBEF's rule), or the hardest; a pair
  with the same caption is never a negative.

Each returns (loss averaged over the rows that count, 0 when none does; accuracy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
_FLOOR = jnp.finfo(jnp.float32).min


def valid_mean(x: Array, valid: Array) -> Array:
  valid = valid.astype(jnp.float32)
  return jnp.sum(x * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def multi_positive_nce(logits: Array, positive: Array, key_valid: Array | None = None
                       ) -> tuple[Array, Array]:
  """Multi-positive InfoNCE.

  Args:
    logits: [Q, E] scaled query-entity similarities.
    positive: [Q, E] bool, the gold entities of each query.
    key_valid: optional [E] bool; invalid entities leave the softmax.

  Returns:
    (mean over queries with a positive of -mean_p log softmax(logits)[p],
    the share of those queries whose best entity is a positive).
  """
  logits = logits.astype(jnp.float32)
  if key_valid is not None:
    logits = jnp.where(key_valid[None], logits, _FLOOR)
  logp = jax.nn.log_softmax(logits, axis=-1)
  count = positive.sum(-1)
  per = -jnp.sum(jnp.where(positive, logp, 0.0), -1) / jnp.maximum(count, 1)
  best = jnp.take_along_axis(positive, jnp.argmax(logits, -1)[:, None], 1)[:, 0]
  return valid_mean(per, count > 0), valid_mean(best, count > 0)


def tiered_nce(logits: Array, first: Array, second: Array, key_valid: Array | None = None
               ) -> tuple[Array, Array]:
  """Two tiers of positives: ``first`` [Q, E] above everything else, ``second``
  above everything but the first.

  The first tier's multi-positive InfoNCE keeps the second tier in its softmax
  (as negatives: pushed below the first); the second tier's leaves the first out
  of its softmax (not pushed above it). A retriever trained so fetches a caption's
  own entities first and their one-hop concepts next.

  Returns:
    (the sum of the two tiers' losses, the first tier's top-1 accuracy).
  """
  head, acc = multi_positive_nce(logits, first, key_valid)
  tail, _ = multi_positive_nce(jnp.where(first, _FLOOR, logits), second & ~first,
                               key_valid)
  return head + tail, acc


def token_ce(logits: Array, targets: Array, masked: Array) -> tuple[Array, Array]:
  """Cross entropy of [..., V] logits at the ``masked`` positions of ``targets``."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  correct = jnp.argmax(logits, axis=-1) == targets
  return valid_mean(-picked, masked), valid_mean(correct, masked)


def index_nce(predictions: Array, keys: Array, targets: Array, valid: Array,
              scale: float, key_valid: Array | None = None) -> tuple[Array, Array]:
  """Each normalised prediction [Q, D] against every key [E, D] of the index, the
  key ``targets`` [Q] the right one; rows where ``valid`` [Q] is False don't count."""
  logits = scale * (predictions.astype(jnp.float32) @ keys.astype(jnp.float32).T)
  if key_valid is not None:
    logits = jnp.where(key_valid[None], logits, _FLOOR)
  safe = jnp.maximum(targets, 0)
  return token_ce(logits, safe, valid)


def relevance_bce(logits: Array, relevant: Array, valid: Array) -> tuple[Array, Array]:
  """Binary cross entropy of gate ``logits`` [B, k] against ``relevant`` [B, k]
  (bool), averaged over the ``valid`` items; accuracy of ``logits > 0``."""
  logits = logits.astype(jnp.float32)
  target = relevant.astype(jnp.float32)
  # -[t log s(x) + (1 - t) log(1 - s(x))] = softplus(x) - t x, stable for any x.
  loss = jax.nn.softplus(logits) - target * logits
  return valid_mean(loss, valid), valid_mean((logits > 0) == relevant, valid)


def hardest_negatives(similarity: Array, same: Array) -> tuple[Array, Array, Array, Array]:
  """In-batch hardest negatives for image-text matching.

  Args:
    similarity: [B, B] image i with text j (no gradient is needed through it).
    same: [B, B] bool, pair (i, j) is not a negative (i = j, the same caption).

  Returns:
    (negative text of each image [B], negative image of each text [B], and whether
    each exists [B], [B]): the most similar j that is not ``same``.
  """
  s = jnp.where(same, -jnp.inf, similarity.astype(jnp.float32))
  neg_text, neg_image = jnp.argmax(s, axis=1), jnp.argmax(s, axis=0)
  return (neg_text.astype(jnp.int32), neg_image.astype(jnp.int32),
          ~same.all(axis=1), ~same.all(axis=0))


def sampled_negatives(logits: Array, same: Array, u_text: Array, u_image: Array
                      ) -> tuple[Array, Array, Array, Array]:
  """In-batch hard negatives drawn as ALBEF draws them (§3.2): for each image a
  text j with probability softmax_j(logits[i, j]) over the j that are not
  ``same``, and for each text an image likewise along the other axis.

  Args:
    logits: [B, B] image i with text j, at the contrastive temperature (no
      gradient is needed through it).
    same: [B, B] bool, pair (i, j) is not a negative (i = j, the same caption).
    u_text, u_image: [B] uniforms in [0, 1), the draws (inverse CDF).

  Returns:
    As ``hardest_negatives``.
  """
  s = jnp.where(same, -jnp.inf, logits.astype(jnp.float32))

  def draw(rows, u):
    p = jax.nn.softmax(jnp.where(jnp.isfinite(rows).any(-1, keepdims=True), rows, 0.0))
    p = jnp.where(jnp.isfinite(rows), p, 0.0)
    cdf = jnp.cumsum(p, axis=-1)
    # The first j whose cumulative mass reaches u (scaled by the row's total, so
    # rounding never runs past the last candidate); a zero-mass j never is.
    target = jnp.maximum(u, 1e-7)[:, None] * cdf[:, -1:]
    j = jnp.sum(cdf < target, axis=-1)
    return jnp.minimum(j, rows.shape[-1] - 1).astype(jnp.int32)

  return (draw(s, u_text), draw(s.T, u_image), ~same.all(axis=1), ~same.all(axis=0))


def matching_ce(logits: Array, labels: Array, valid: Array) -> tuple[Array, Array]:
  """Two-way cross entropy of [N, 2] matching logits (1 = match) on valid rows."""
  return token_ce(logits, labels.astype(jnp.int32), valid)
