"""Knowledge-CLIP's objectives as pure functions of features.

Pan et al., "Contrastive Language-Image Pre-Training with Knowledge Graphs",
NeurIPS 2022, §3.3 "Training objectives" names E2E, E2R, G2E and knowledge
distillation, without formulas; the forms below are vlkg's (docs/methods.md):

* ``entity_nce`` (E2E, and G2E's contrast): InfoNCE of each query against
  candidates, with the candidates that are the same entity as the target (the same
  text or image elsewhere in the batch) left out of the softmax: they are not
  negatives.
* ``relation_ce`` (E2R): cross entropy over the relation vocabulary; logits past
  ``num_relations`` (the head's spare width) are left out.
* ``kd_kl`` (KD): KL(teacher || student) of the image->text and text->image
  softmax distributions over the batch, averaged over both directions.
* ``pair_nce`` (the "CLIP + KG" ablation, ``knowledge_clip_captions``): CLIP's
  symmetric InfoNCE on triplets written as pairs, a pair's duplicates (the same
  caption or the same entity elsewhere in the step: true pairs too) left out.

Each returns the loss averaged over the valid rows (0 when none is valid) and an
accuracy where one exists.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
_FLOOR = jnp.finfo(jnp.float32).min


def _valid_mean(x: Array, valid: Array) -> Array:
  valid = valid.astype(jnp.float32)
  return jnp.sum(x * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def entity_nce(queries: Array, candidates: Array, targets: Array, query_ids: Array,
               candidate_ids: Array, valid: Array, scale: float | Array
               ) -> tuple[Array, Array]:
  """InfoNCE of queries against candidates, duplicates of the target left out.

  Args:
    queries: [Q, D] L2-normalised predictions.
    candidates: [C, D] L2-normalised candidate embeddings.
    targets: [Q] int, the index of each query's candidate.
    query_ids, candidate_ids: [Q] / [C] int entity ids; a candidate with the
      target's id other than the target itself is not in the query's softmax.
    valid: [Q] bool, the queries that count.
    scale: the logit scale (1 / temperature).

  Returns:
    (mean over valid queries of -log softmax(scale * q.c)[target], accuracy of the
    argmax over the kept candidates).
  """
  logits = scale * (queries.astype(jnp.float32) @ candidates.astype(jnp.float32).T)
  index = jnp.arange(candidates.shape[0])[None]
  duplicate = (candidate_ids[None] == query_ids[:, None]) & (index != targets[:, None])
  logits = jnp.where(duplicate, _FLOOR, logits)
  logp = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(logp, targets[:, None], axis=1)[:, 0]
  correct = jnp.argmax(logits, axis=-1) == targets
  return _valid_mean(-picked, valid), _valid_mean(correct, valid)


def relation_ce(logits: Array, labels: Array, num_relations: int, valid: Array
                ) -> tuple[Array, Array]:
  """Cross entropy of relation logits [Q, M] against labels [Q] over the first
  ``num_relations`` classes; (mean over valid rows, accuracy)."""
  logits = logits.astype(jnp.float32)
  logits = jnp.where(jnp.arange(logits.shape[-1])[None] < num_relations, logits, _FLOOR)
  logp = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]
  correct = jnp.argmax(logits, axis=-1) == labels
  return _valid_mean(-picked, valid), _valid_mean(correct, valid)


def kd_kl(student_logits: Array, teacher_logits: Array) -> Array:
  """KL(p_teacher || p_student), image->text (rows) and text->image (columns).

  Args:
    student_logits, teacher_logits: [N, N] image-text logits; the teacher's carry
      no gradient.

  Returns:
    The mean over both directions of the mean over rows of the KL divergence.
  """
  student = student_logits.astype(jnp.float32)
  teacher = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))

  def kl(axis):
    log_t = jax.nn.log_softmax(teacher, axis=axis)
    log_s = jax.nn.log_softmax(student, axis=axis)
    return jnp.mean(jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=axis))

  return 0.5 * (kl(1) + kl(0))


def pair_nce(a: Array, b: Array, a_ids: Array, b_ids: Array, scale: float | Array
             ) -> tuple[Array, Array]:
  """CLIP's symmetric InfoNCE of N pairs (a_i, b_i), duplicates left out.

  Args:
    a, b: [N, D] L2-normalised embeddings of the two sides; row i is a pair.
    a_ids, b_ids: [N] int, what each side is (a caption id, an entity id): j != i
      is left out of row i's softmax (a_i against every b) and of column i's (b_i
      against every a) when a_j = a_i or b_j = b_i, since (a_i, b_j) and (a_j,
      b_i) are then true pairs, not negatives.
    scale: the logit scale (CLIP's learned one).

  Returns:
    (the mean of the a->b and b->a cross entropies, each a mean over the pairs;
    the mean of the two directions' argmax accuracies).
  """
  logits = scale * (a.astype(jnp.float32) @ b.astype(jnp.float32).T)
  n = a.shape[0]
  same = (a_ids[:, None] == a_ids[None]) | (b_ids[:, None] == b_ids[None])
  logits = jnp.where(same & ~jnp.eye(n, dtype=bool), _FLOOR, logits)
  target = jnp.arange(n)
  loss = acc = 0.0
  for axis in (1, 0):
    logp = jnp.diagonal(jax.nn.log_softmax(logits, axis=axis))
    loss += -0.5 * jnp.mean(logp)
    acc += 0.5 * jnp.mean(jnp.argmax(logits, axis=axis) == target)
  return loss, acc
