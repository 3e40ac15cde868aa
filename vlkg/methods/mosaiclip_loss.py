"""MosaiCLIP's coarse-to-fine contrastive loss and its curriculum masks.

Singh et al., "Coarse-to-Fine Contrastive Learning in Image-Text-Graph Space for
Improved Vision-Language Compositionality", EMNLP 2023
("Loss", "Curriculum").

Each image i owns K text slots in a fixed layout (static shapes, one jit):

  slot 0                 the full caption (a positive, always valid)
  slots 1 .. P           sub-captions of its scene sub-graphs (positives)
  slots P+1 .. P+M       graph-space negatives of those sub-graphs
  slot P+M+1             the whole-caption swap negative (NegCLIP-style)

with ``valid[i, k]`` saying whether slot k holds a text and ``positive[i, k]`` whether
it is a positive of image i. Over the global batch of N images and the N*K texts:

  L_i2t = mean_i  -1/|P(i)| * sum_{k in P(i)} log softmax_j(s * u_i . v_j)[k]

where j runs over every valid text of the batch (every image's positives and
negatives) and P(i) are image i's valid positives;

  L_t2i = mean over valid positive texts t of  -log softmax_i(s * u_i . v_t)[owner(t)]

the usual softmax over the N images; L = (L_i2t + L_t2i) / 2.

Interpretation choices (all visible in the code; the paper leaves them open):

* Reduction: the paper writes L_i2t as a sum over images; vlkg takes the mean over
  images (and over positive texts for L_t2i), as CLIP's loss does, so the loss scale
  does not depend on the batch size.
* Invalid slots are removed exactly: their logits are replaced by the float32
  minimum before the softmax (exp underflows to 0, and unlike -inf no NaN appears in
  the gradient), and they are left out of every average.
* L_t2i averages over positive texts, so an image with more sub-captions weighs
  more there, as in the paper's "computed for positive texts only".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def slot_layout(max_pos: int, max_neg: int) -> dict[str, slice]:
  """Slices of the K = 1 + max_pos + max_neg + 1 text slots of one image."""
  return {
      "caption": slice(0, 1),
      "positives": slice(1, 1 + max_pos),
      "negatives": slice(1 + max_pos, 1 + max_pos + max_neg),
      "whole_negative": slice(1 + max_pos + max_neg, 2 + max_pos + max_neg),
  }


def positive_slots(max_pos: int, max_neg: int) -> Array:
  """[K] bool: which slots are positives (the caption and the sub-captions)."""
  k = 2 + max_pos + max_neg
  return jnp.arange(k) < 1 + max_pos


def curriculum_valid(valid: Array, step: Array, stage1_steps: int, max_pos: int,
                     max_neg: int, stage1_pos: int = 1, stage1_neg: int = 1) -> Array:
  """Masks slots for the curriculum: stage 1 keeps at most ``stage1_pos`` sub-caption
  positives and ``stage1_neg`` sub-graph negatives per image, stage 2 all of them.

  MosaiCLIP, Singh et al., EMNLP 2023 "Curriculum". The caption and the whole-caption negative are kept in
  both stages. The switch is a ``jnp.where`` on the traced ``step``: the shapes never
  change, so the training step compiles once ("mask, don't reshape").

  Args:
    valid: [N, K] bool slot validity from the data.
    step: the current (traced) training step.
    stage1_steps: steps in stage 1; 0 starts in stage 2.
    max_pos / max_neg: the slot layout (``slot_layout``).
    stage1_pos / stage1_neg: slots of each kind kept in stage 1.

  Returns:
    [N, K] bool, ``valid`` with the stage-1 extras switched off before
    ``stage1_steps``. Slots are filled in order at prepare time, so the first
    valid sub-caption and negative are the ones kept.
  """
  layout = slot_layout(max_pos, max_neg)
  k = jnp.arange(valid.shape[-1])
  pos_start, neg_start = layout["positives"].start, layout["negatives"].start
  stage1_keep = ~(((k >= pos_start + stage1_pos) & (k < layout["positives"].stop)) |
                  ((k >= neg_start + stage1_neg) & (k < layout["negatives"].stop)))
  in_stage1 = jnp.asarray(step) < stage1_steps
  return valid & jnp.where(in_stage1, stage1_keep, True)[None, :]


def mosaic_loss(zimg: Array, ztxt: Array, positive: Array, valid: Array,
                logit_scale: Array) -> tuple[Array, dict[str, Array]]:
  """The coarse-to-fine contrastive loss (module docstring).

  Args:
    zimg: [N, D] L2-normalised image embeddings.
    ztxt: [N, K, D] L2-normalised text embeddings; ``ztxt[i, k]`` is slot k of image i.
    positive: [N, K] or [K] bool, the positive slots.
    valid: [N, K] bool, the slots that hold a text (after the curriculum mask).
      Slot 0 of every image must be valid (the caption).
    logit_scale: the effective (exp'd, clipped) scale.

  Returns:
    ``(loss, metrics)`` with ``i2t`` and ``t2i`` (the two terms), ``i2t_acc`` (the
    image's best-scoring text is one of its positives), ``t2i_acc`` (the caption's
    best image is its own), ``texts_per_image`` (mean valid slots) and
    ``pos_neg_gap`` (mean cosine of the caption minus that of the image's own valid
    sub-graph negatives).
  """
  n, k, d = ztxt.shape
  zimg = zimg.astype(jnp.float32)
  texts = ztxt.astype(jnp.float32).reshape(n * k, d)
  positive = jnp.broadcast_to(positive, (n, k)) & valid
  floor = jnp.finfo(jnp.float32).min
  owner = jnp.repeat(jnp.arange(n), k)  # [N*K] image of each text

  sims = zimg @ texts.T  # [N, N*K]
  logits = jnp.where(valid.reshape(1, n * k), logit_scale * sims, floor)
  logp = jax.nn.log_softmax(logits, axis=1)
  own = logp.reshape(n, n, k)[jnp.arange(n), jnp.arange(n)]  # [N, K]: image i, its slots
  n_pos = jnp.maximum(jnp.sum(positive, axis=1), 1)
  i2t = jnp.mean(-jnp.sum(jnp.where(positive, own, 0.0), axis=1) / n_pos)

  logp_t2i = jax.nn.log_softmax(logit_scale * sims, axis=0)  # over images
  target = logp_t2i[owner, jnp.arange(n * k)].reshape(n, k)
  t2i = -jnp.sum(jnp.where(positive, target, 0.0)) / jnp.maximum(jnp.sum(positive), 1)
  loss = 0.5 * (i2t + t2i)

  best = jnp.argmax(logits, axis=1)
  own_sims = sims.reshape(n, n, k)[jnp.arange(n), jnp.arange(n)]
  negative = valid & ~positive
  neg_mean = (jnp.sum(jnp.where(negative, own_sims, 0.0), axis=1) /
              jnp.maximum(jnp.sum(negative, axis=1), 1))
  has_neg = jnp.any(negative, axis=1)
  metrics = {
      "i2t": i2t,
      "t2i": t2i,
      "i2t_acc": jnp.mean(positive.reshape(n * k)[best] & (owner[best] == jnp.arange(n))),
      "t2i_acc": jnp.mean(jnp.argmax(sims.reshape(n, n, k)[:, :, 0], axis=0) == jnp.arange(n)),
      "texts_per_image": jnp.mean(jnp.sum(valid, axis=1).astype(jnp.float32)),
      "pos_neg_gap": (jnp.sum(jnp.where(has_neg, own_sims[:, 0] - neg_mean, 0.0)) /
                      jnp.maximum(jnp.sum(has_neg), 1)),
      "logit_scale": jnp.asarray(logit_scale, jnp.float32),
  }
  return loss, metrics
