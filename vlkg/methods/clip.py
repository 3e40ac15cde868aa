"""CLIP: symmetric InfoNCE over in-batch image-text pairs.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", §2.3 and Figure 3: the N x N cosine-similarity matrix of a batch,
scaled by a learned temperature, is trained with cross entropy in both directions
(image->text over rows, text->image over columns), the N matching pairs on the
diagonal being the positives; the loss is the mean of the two directions.

The loss is computed over the full arrays it is given. Under ``jit`` with
batch-sharded inputs, GSPMD turns ``zimg @ ztxt.T`` into the global similarity
matrix, so every example sees every other example in the global batch as a negative
(as CLIP's 32k batch), instead of only its device-local shard.

Method-module interface (``vlkg.methods``): ``fields`` (none: images and captions
only), ``default_config`` (no options), ``build_model(config)`` and
``make_loss_fn(model, config)``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vlkg.models import two_towers

Array = jax.Array
Metrics = dict[str, Array]
LossFn = Callable[[Any, dict[str, Array], Array, Array], tuple[Array, Metrics]]



def fields(config: ml_collections.ConfigDict) -> tuple:
  """CLIP reads the image and its caption alone: no fields of its own."""
  del config
  return ()


def default_config() -> dict:
  """CLIP has no options of its own (its initial temperature is the paper's)."""
  return {}


def logit_metrics(logits: Array) -> Metrics:
  """In-batch retrieval accuracy and mean positive/negative logits.

  Args:
    logits: [N, N] image-text logits, matching pairs on the diagonal.

  Returns:
    ``i2t_acc`` (row argmax on the diagonal), ``t2i_acc`` (column argmax),
    ``pos_logit_mean`` and ``neg_logit_mean`` (off-diagonal mean).
  """
  n = logits.shape[0]
  labels = jnp.arange(n)
  diag = jnp.diagonal(logits)
  neg_sum = jnp.sum(logits) - jnp.sum(diag)
  return {
      "i2t_acc": jnp.mean(jnp.argmax(logits, axis=1) == labels),
      "t2i_acc": jnp.mean(jnp.argmax(logits, axis=0) == labels),
      "pos_logit_mean": jnp.mean(diag),
      # max(.., 1): a batch of one has no negatives, and 0/0 would poison logs.
      "neg_logit_mean": neg_sum / max(n * (n - 1), 1),
  }


def clip_loss(zimg: Array, ztxt: Array, logit_scale: Array) -> tuple[Array, Metrics]:
  """Symmetric InfoNCE loss.

  Args:
    zimg: [N, D] L2-normalised image embeddings.
    ztxt: [N, D] L2-normalised text embeddings; row i matches ``zimg[i]``.
    logit_scale: the effective (already exp'd and clipped) scalar scale.

  Returns:
    ``(loss, metrics)``: the mean of the image->text and text->image cross
    entropies, and ``logit_metrics`` plus ``logit_scale``.
  """
  zimg = zimg.astype(jnp.float32)
  ztxt = ztxt.astype(jnp.float32)
  logits = logit_scale * (zimg @ ztxt.T)
  loss_i2t = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=1)))
  loss_t2i = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=0)))
  loss = 0.5 * (loss_i2t + loss_t2i)
  metrics = logit_metrics(logits)
  metrics["logit_scale"] = jnp.asarray(logit_scale, jnp.float32)
  return loss, metrics


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The two-tower model of ``config.model``; CLIP's inits where not configured."""
  return two_towers.build_model(
      config, init_logit_scale=two_towers.CLIP_INIT_LOGIT_SCALE, init_logit_bias=0.0
  )


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict) -> LossFn:
  """Returns ``loss_fn(params, batch, rng, step) -> (loss, metrics)``.

  Args:
    model: a ``TwoTowers`` from ``build_model``.
    config: the experiment config (unused; part of the method interface).

  Returns:
    A function of ``params`` (the ``"params"`` collection, unwrapped), ``batch``
    (``image`` float32 [B, H, W, 3] normalised, ``text`` int32 [B, L]), ``rng``
    (unused: the towers have no dropout) and ``step`` (unused).
  """
  del config

  def loss_fn(params, batch, rng, step):
    del rng, step
    zimg, ztxt, extras = model.apply(
        {"params": params}, batch["image"], batch["text"]
    )
    return clip_loss(zimg, ztxt, extras["logit_scale"])

  return loss_fn
