"""MosaiCLIP: coarse-to-fine contrastive learning in image-text-graph space.

Singh et al., EMNLP 2023. The model is CLIP's two towers
(``vlkg.models.two_towers``); what MosaiCLIP adds lives in the data and the loss:

* Decomposition and graph-space negatives (``vlkg.graphs.decompose``) run at
  prepare time (the field ``vlkg.graphs.fields.mosaic_slots``): each caption's
  record carries up to ``max_pos`` sub-captions, ``max_neg`` sub-graph negatives and
  one whole-caption negative, as token ids in fixed slots with validity flags
  (``mosaic_texts`` [B, S, L], ``mosaic_valid`` [B, S], S = max_pos + max_neg + 1).
* The loss (``mosaiclip_loss.mosaic_loss``): a multi-positive softmax from each
  image over every valid text of the global batch, and a softmax over images for
  the positive texts.
* The curriculum (``mosaiclip_loss.curriculum_valid``): stage 1 keeps one
  sub-caption and one sub-graph negative per image, stage 2 all of them; the
  switch is a mask on the traced step, so the step compiles once.

Config (``config.mosaiclip``, ``default_config``): ``stage1_steps`` (an int; if
negative, ``stage1_fraction`` of ``total_steps`` is used), ``stage1_fraction``,
``stage1_pos``, ``stage1_neg``, and the slots ``max_pos``, ``max_neg`` and ``p1``
(the probability of the object category among the negatives), which shape both the
prepared data and the loss.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vlkg import methods
from vlkg.graphs import fields as fields_lib
from vlkg.methods import mosaiclip_loss
from vlkg.models import text_packing, two_towers

Array = jax.Array
LossFn = Callable[[Any, dict[str, Array], Array, Array], tuple[Array, dict[str, Array]]]

# The text tower reads each image's texts packed several to a row
# (vlkg.models.text_packing.groups_and_rows), PACK_ROW_SHARE rows per text. The
# world's texts need about 0.23 rows per text (docs/results.md, "Training step").
PACK_ROW_SHARE = 0.3

# What the console shows beside vlkg.metrics.HEADLINE: the curriculum stage, and the
# caption-over-sub-graph-negative gap the method trains for.
HEADLINE = ("stage", "pos_neg_gap")


def default_config() -> dict:
  """Defaults of ``config.mosaiclip``."""
  return dict(
      # Curriculum stage 1 (1 sub-caption, 1 sub-graph negative per image) lasts
      # stage1_steps, or stage1_fraction of training when stage1_steps < 0.
      stage1_steps=-1,
      stage1_fraction=0.3,
      stage1_pos=1,
      stage1_neg=1,
      # Sub-caption positives and sub-graph negatives per caption, and the
      # probability of the object category among the negatives.
      max_pos=3,
      max_neg=6,
      p1=0.15,
  )


def _cfg(config: ml_collections.ConfigDict) -> dict:
  return methods.method_config(config, "mosaiclip", default_config())


def fields(config: ml_collections.ConfigDict) -> tuple[fields_lib.Field, ...]:
  """Each caption's sub-captions and negatives in their slots."""
  m = _cfg(config)
  return (fields_lib.mosaic_slots(m["max_pos"], m["max_neg"], m["p1"],
                                  config.input.text_len),)


def stage1_steps(config: ml_collections.ConfigDict) -> int:
  """Steps in curriculum stage 1: ``stage1_steps`` if >= 0, else a fraction of training."""
  m = _cfg(config)
  if m["stage1_steps"] >= 0:
    return int(m["stage1_steps"])
  return int(round(m["stage1_fraction"] * config.total_steps))


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  """CLIP's two towers with CLIP's inits where not configured."""
  return two_towers.build_model(
      config, init_logit_scale=two_towers.CLIP_INIT_LOGIT_SCALE, init_logit_bias=0.0)


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict) -> LossFn:
  """Returns ``loss_fn(params, batch, rng, step) -> (loss, metrics)``.

  ``batch`` holds ``image`` (normalised float32 [B, H, W, 3]), ``text`` [B, L] (the
  caption), ``mosaic_texts`` [B, S, L] and ``mosaic_valid`` [B, S]. The texts the
  loss reads (valid after the curriculum mask) go through the text tower in one
  call, packed several to a row (``PACK_ROW_SHARE``); the others' embeddings are
  not computed, as the loss never reads them. Metrics: those of ``mosaic_loss``
  plus ``stage`` (1 or 2) and ``packed`` (1 when the packed text batch held every
  text, 0 when the step fell back to a row per text).
  """
  m = _cfg(config)
  max_pos, max_neg = m["max_pos"], m["max_neg"]
  boundary = stage1_steps(config)
  stage1_pos, stage1_neg = m["stage1_pos"], m["stage1_neg"]
  positive = mosaiclip_loss.positive_slots(max_pos, max_neg)

  def loss_fn(params, batch, rng, step):
    del rng
    b, length = batch["text"].shape
    texts = jnp.concatenate([batch["text"][:, None], batch["mosaic_texts"]], axis=1)
    k = texts.shape[1]
    if k != 2 + max_pos + max_neg:
      raise ValueError(f"mosaic_texts has {k - 1} slots; config.mosaiclip gives "
                       f"{1 + max_pos + max_neg}: the dataset was prepared with "
                       "other max_pos/max_neg")
    valid = jnp.concatenate(
        [jnp.ones((b, 1), bool), batch["mosaic_valid"].astype(bool)], axis=1)
    valid = mosaiclip_loss.curriculum_valid(valid, step, boundary, max_pos, max_neg,
                                            stage1_pos, stage1_neg)
    zimg, _, extras = model.apply({"params": params}, batch["image"], None)
    groups, rows = text_packing.groups_and_rows(b, k, PACK_ROW_SHARE)
    ztxt, packed = text_packing.embed_texts(
        model, params, texts.reshape(b * k, length), valid.reshape(b * k), groups, rows)
    loss, metrics = mosaiclip_loss.mosaic_loss(
        zimg, ztxt.reshape(b, k, -1), positive, valid, extras["logit_scale"])
    metrics["stage"] = jnp.where(jnp.asarray(step) < boundary, 1.0, 2.0)
    metrics["packed"] = packed.astype(jnp.float32)
    return loss, metrics

  return loss_fn


# The paper's claims (Singh et al., EMNLP 2023), as `python -m vlkg.tools.results`
# measures them on the world (vlkg.results.claims). Held-out color-shape pairs
# (world_comp) stand for the paper's systematic generalisation.
from vlkg.results.claims import Claim  # noqa: E402  (declarations, kept at the end)

CLAIMS = (
    Claim(name="systematic generalisation", metric="world_comp/attribute_swap",
          target=0.15, blind="text_prior/test_comp/blind",
          paper="up to +18% on systematic generalisation"),
    Claim(name="relations at least Structure-CLIP's", metric="world/relation_swap",
          target=0.0, baseline="structure_clip",
          paper="up to +16.5% on relation understanding"),
    Claim(name="retrieval kept", metric="retrieval/test/image_to_text_R@1",
          target=-0.02, paper="general ability kept"),
)
