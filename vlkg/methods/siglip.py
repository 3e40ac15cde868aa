"""SigLIP: pairwise sigmoid loss over in-batch image-text pairs.

Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training", §3.1 and
Algorithm 1: every image-text pair of the batch is an independent binary
classification, positive on the diagonal (label +1) and negative elsewhere (-1):

  L = -1/|B| * sum_i sum_j log sigmoid(z_ij * (t * x_i . y_j + b))

with learned temperature t = exp(t') and bias b, initialised to t' = log 10 and
b = -10 (§3.2) so the initially overwhelming negatives do not produce large
gradients. Unlike softmax InfoNCE, no normalisation across the batch is needed.

As for CLIP, the loss is taken over the full arrays given; under ``jit`` with
sharded inputs GSPMD computes the global N x N matrix.

Method-module interface (``vlkg.methods``): ``fields`` (none), ``default_config``
(``config.siglip``: the initial ``init_logit_scale`` t' and ``init_logit_bias`` b,
written only here), ``build_model(config)`` and ``make_loss_fn(model, config)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vlkg import methods
from vlkg.methods.clip import LossFn, Metrics, fields, logit_metrics
from vlkg.models import two_towers

Array = jax.Array

__all__ = ["build_model", "default_config", "fields", "make_loss_fn", "siglip_loss"]


def default_config() -> dict:
  """Defaults of ``config.siglip``: §3.2's t' = log 10 and b = -10, so that training
  starts at the prior of rare positives."""
  return dict(init_logit_scale=two_towers.SIGLIP_INIT_LOGIT_SCALE,
              init_logit_bias=two_towers.SIGLIP_INIT_LOGIT_BIAS)


def siglip_loss(
    zimg: Array, ztxt: Array, logit_scale: Array, logit_bias: Array
) -> tuple[Array, Metrics]:
  """Sigmoid loss.

  Args:
    zimg: [N, D] L2-normalised image embeddings.
    ztxt: [N, D] L2-normalised text embeddings; row i matches ``zimg[i]``.
    logit_scale: the effective (already exp'd) scalar scale t.
    logit_bias: the scalar bias b.

  Returns:
    ``(loss, metrics)``: the summed pairwise log-loss divided by N, and
    ``logit_metrics`` of the biased logits plus ``logit_scale`` and
    ``logit_bias``.
  """
  zimg = zimg.astype(jnp.float32)
  ztxt = ztxt.astype(jnp.float32)
  n = zimg.shape[0]
  logits = logit_scale * (zimg @ ztxt.T) + logit_bias
  labels = 2.0 * jnp.eye(n, dtype=jnp.float32) - 1.0
  loss = -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / n
  metrics = logit_metrics(logits)
  metrics["logit_scale"] = jnp.asarray(logit_scale, jnp.float32)
  metrics["logit_bias"] = jnp.asarray(logit_bias, jnp.float32)
  return loss, metrics


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The two-tower model of ``config.model``, initialised as ``config.siglip`` says."""
  sc = methods.method_config(config, "siglip", default_config())
  return two_towers.build_model(
      config,
      init_logit_scale=sc["init_logit_scale"],
      init_logit_bias=sc["init_logit_bias"],
  )


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict) -> LossFn:
  """Returns ``loss_fn(params, batch, rng, step) -> (loss, metrics)``.

  Same contract as ``vlkg.methods.clip.make_loss_fn``: ``params`` is the unwrapped
  ``"params"`` collection; ``rng`` and ``step`` are unused.
  """
  del config

  def loss_fn(params, batch, rng, step):
    del rng, step
    zimg, ztxt, extras = model.apply(
        {"params": params}, batch["image"], batch["text"]
    )
    return siglip_loss(zimg, ztxt, extras["logit_scale"], extras["logit_bias"])

  return loss_fn
