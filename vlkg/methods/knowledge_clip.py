"""Knowledge-CLIP: CLIP trained on knowledge-graph triplets with image and text
entities, with a fusion encoder and the E2E, E2R, G2E and distillation objectives.

Pan et al., "Contrastive Language-Image Pre-Training with Knowledge Graphs",
NeurIPS 2022 (vlkg is the first open implementation; the paper has no code):

* Data (§3.1): triplets (h, r, t) whose entities are images or texts and whose
  relations are words: the dataset's triplet table (``vlkg.data.kg_table``; the
  world's is ``vlkg.data.world.knowledge_triplets``), image-text pairs as the
  batch. Each caption's record carries ``kg_draw``, three draws made at prepare
  time that pick its training triplets (``knowledge_clip_step``); the table is
  held on device once, as a constant of the step.
* Model (§3.2): ``vlkg.models.knowledge_fusion.KnowledgeCLIPModel``: the CLIP towers
  encode the entities (token sequences kept, relations pooled), a fusion
  Transformer runs over [h; r; t] with modality and role embeddings, and the
  graph transformer propagates over each entity's neighbourhood.
* Evaluation (``eval_encoder``, ``knowledge_clip_eval``): the towers embed images
  and texts; a knowledge-graph query (h, r, ?) is the fusion encoder's E2E
  prediction of the masked tail.
* Objectives (§3.3), each with its weight (``default_config``):

    L = clip * CLIP + e2e * E2E + e2r * E2R + g2e * G2E + kd * KD

  CLIP's InfoNCE on the pairs; E2E, E2R, G2E on the triplets
  (``knowledge_clip_step``, ``knowledge_clip_loss``); KD, the KL divergence from
  a frozen teacher's image-text similarity distribution to the student's on the
  pairs. The teacher is ``config.model_init``'s towers, held on device without
  gradients; a run without ``model_init`` has no teacher and no KD term (training
  continues from a pre-trained CLIP in the paper, §4.1).
* The paper's "CLIP + KG" ablation (``mode="captions"``,
  ``knowledge_clip_captions``): the same triplet batches written as captions and
  trained with CLIP's loss on the two towers alone (no fusion encoder, no E2E,
  E2R, G2E); KD as in the full method.

    L = clip * (CLIP + CLIP on the triplets' pairs) + kd * KD

The protocol's runs of the ablations (``RUNS``) and the claims (``CLAIMS``) are
declared at the end.

Choices the paper leaves open are config keys, recorded in docs/methods.md.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlkg import methods
from vlkg.graphs import fields as fields_lib
from vlkg.methods import clip as clip_lib
from vlkg.methods import knowledge_clip_captions as kc_captions
from vlkg.methods import knowledge_clip_loss as kc_loss
from vlkg.methods import knowledge_clip_step as kc_step
from vlkg.models import two_towers
from vlkg.models.knowledge_fusion import KnowledgeCLIPModel

Array = jax.Array
LossFn = Callable[..., tuple[Array, dict[str, Array]]]

# What the console shows beside vlkg.metrics.HEADLINE.
HEADLINE = ("e2e_acc", "e2r_acc")
WEIGHTS = ("clip", "e2e", "e2r", "g2e", "kd")
MODES = ("fusion", "captions")
_DRAW_HIGH = 2**31 - 1


def default_config() -> dict:
  """Defaults of ``config.knowledge_clip``."""
  return dict(
      # "fusion": the method; "captions": the paper's "CLIP + KG" ablation, the
      # triplets written as captions for CLIP's loss, the two towers alone
      # (knowledge_clip_captions).
      mode="fusion",
      # Weights of the objectives; 0 removes one (the paper's ablation). In
      # "captions" mode the triplets' pairs take clip_weight, E2E, E2R, G2E are off.
      clip_weight=1.0,
      e2e_weight=1.0,
      e2r_weight=1.0,
      g2e_weight=1.0,
      kd_weight=1.0,
      # Triplets per step in each group (text-text, text-image, image-image); a step
      # encodes 2 * kg_text_text + kg_mixed texts and kg_mixed + 2 * kg_image_image
      # images besides the batch.
      kg_text_text=16,
      kg_mixed=16,
      kg_image_image=8,
      entity_len=16,  # tokens of a text entity or relation (a cut one keeps its EOT)
      # Which part of a triplet is masked: the head, the tail, the relation.
      mask_probs=(0.4, 0.4, 0.2),
      fusion_depth=2,
      fusion_heads=4,
      fusion_mlp_ratio=4.0,
      # An image entity's patch grid enters the fusion encoder averaged over
      # 2 x 2 blocks (the world's 8 x 8 grid: 16 tokens); 1 keeps every patch.
      fusion_image_pool=2,
      g2e_depth=1,
      g2e_heads=4,
      g2e_neighbours=4,  # text neighbours of each anchor (at most the table's 8)
      g2e_stop_gradient=True,  # the neighbours' features are targets, not trained
      max_relations=64,  # width of the E2R head and of the edge types
      temperature=0.07,  # of E2E's and G2E's InfoNCE
      kd_scale=0.0,  # logit scale of KD's softmaxes; 0 = each model's own
      # A knowledge graph file (vlkg.graphs.kg.read) for data without triplets of
      # its own (a real corpus): "" = the dataset's table (the world's).
      kg_path="",
      kg_format="tsv",  # "tsv", "conceptnet" or "visualsem"
      kg_images_per_node=2,  # VisualSem images per node
  )


def _cfg(config: ml_collections.ConfigDict) -> dict:
  out = methods.method_config(config, "knowledge_clip", default_config())
  if out["mode"] not in MODES:
    raise ValueError(f"config.knowledge_clip.mode={out['mode']!r}: one of {MODES}")
  probs = tuple(float(p) for p in out["mask_probs"])
  if len(probs) != 3 or min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
    raise ValueError(f"config.knowledge_clip.mask_probs={out['mask_probs']!r}: three "
                     "probabilities (head, tail, relation) that sum to 1")
  out["mask_probs"] = probs
  for key in ("kg_text_text", "kg_mixed", "kg_image_image", "g2e_neighbours"):
    if out[key] < 0:
      raise ValueError(f"config.knowledge_clip.{key}={out[key]} must be >= 0")
  if out["fusion_image_pool"] < 1:
    raise ValueError("config.knowledge_clip.fusion_image_pool must be >= 1")
  if not 0 < out["g2e_neighbours"] <= 8:
    raise ValueError("config.knowledge_clip.g2e_neighbours must be in [1, 8] (the "
                     "table keeps 8 neighbours)")
  return out


def _draws(caption: fields_lib.Caption, rng: np.random.Generator) -> dict:
  del caption
  return {"kg_draw": rng.integers(0, _DRAW_HIGH, size=len(kc_step.GROUPS))}


def fields(config: ml_collections.ConfigDict) -> tuple[fields_lib.Field, ...]:
  """``kg_draw`` [3] int32: each caption's seeded draws of one training triplet per
  group; the triplets are the dataset's table's, resolved at the step."""
  del config
  return (fields_lib.Field((fields_lib.Feature("kg_draw", "int32", (3,)),), _draws),)


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  """``KnowledgeCLIPModel``: ``config.model``'s towers (CLIP's inits) and
  ``config.knowledge_clip``'s fusion and graph transformers; in "captions" mode the
  towers alone (the ablation has no fusion encoder, so it has no params for one)."""
  towers = two_towers.build_model(config,
                                  init_logit_scale=two_towers.CLIP_INIT_LOGIT_SCALE)
  kc = _cfg(config)
  if kc["mode"] == "captions":
    return towers
  return KnowledgeCLIPModel(
      **two_towers.tower_fields(towers),
      fusion_depth=kc["fusion_depth"], fusion_heads=kc["fusion_heads"],
      fusion_mlp_ratio=kc["fusion_mlp_ratio"],
      g2e_depth=kc["g2e_depth"], g2e_heads=kc["g2e_heads"],
      max_relations=kc["max_relations"])


def eval_encoder(module, params, tokenizer, config, *, image_size: int,
                 batch_size: int = 256, dataset_dir: str | None = None):
  """The two towers, with knowledge-graph tail queries through the fusion encoder
  (``knowledge_clip_eval.TripletQueryModel``); None (the plain towers) in
  "captions" mode, which has no fusion encoder, or without a tokenizer."""
  del dataset_dir
  kc = _cfg(config)
  if kc["mode"] == "captions" or tokenizer is None:
    return None
  from vlkg.methods import knowledge_clip_eval
  return knowledge_clip_eval.TripletQueryModel(
      module, params, tokenizer, image_size, batch_size, entity_len=kc["entity_len"],
      image_pool=kc["fusion_image_pool"])


def load_teacher(config: ml_collections.ConfigDict) -> dict | None:
  """The two towers' params of ``config.model_init`` (a ``params.npz`` or a run
  directory), or None without one. Extra keys (a Knowledge-CLIP run's fusion) are
  ignored; a missing key or another shape is an error that names the file."""
  from vlkg import checkpoint
  from vlkg.config.base import MODEL_INIT_REQUIRED
  path = config.get("model_init", "")
  if not path or path == MODEL_INIT_REQUIRED:
    return None
  if os.path.isdir(path):
    path = os.path.join(path, checkpoint.PARAMS_NPZ)
  flat = checkpoint.load_params_npz(path)
  want = checkpoint.flatten_params(
      methods.abstract_params(two_towers.build_model(config), config))
  bad = sorted(k for k, v in want.items()
               if k not in flat or tuple(flat[k].shape) != tuple(v.shape))
  if bad:
    raise checkpoint.ParamsMismatchError(
        f"config.model_init={path}: the KD teacher needs the two towers' params; "
        f"missing or of another shape: {bad[:5]}{' ...' if len(bad) > 5 else ''}")
  return checkpoint.unflatten_params(
      {k: np.asarray(flat[k], v.dtype) for k, v in want.items()})


def dataset_table(config, section: dict | None = None):
  """(the triplet table, its tokenizer) of the config's prepared dataset.

  With ``kg_path`` in ``section`` (``config.knowledge_clip`` by default; REAVL
  passes its own) and no table in the dataset, the table is made from that graph
  (``kg_table.from_graph``) and written into the dataset, where the ``kg``
  evaluator finds it too.
  """
  from vlkg.data import kg_table, prepare, records
  from vlkg.data import tokenizer as tok_lib
  from vlkg.graphs import kg
  kc = _cfg(config) if section is None else section
  directory = prepare.dataset_dir(config)
  manifest = records.read_manifest(directory)
  tokenizer = tok_lib.from_description(manifest["tokenizer"], base_dir=directory)
  if kc["kg_path"] and not os.path.exists(os.path.join(directory, kg_table.TABLE)):
    graph = kg.read(kc["kg_path"], kc["kg_format"])
    kg_table.write(directory, kg_table.from_graph(
        graph, config.model.image_size, images_per_node=kc["kg_images_per_node"],
        seed=config.seed))
  return kg_table.read(directory), tokenizer


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict, *,
                 table=None, tokenizer=None, teacher: Any = "model_init") -> LossFn:
  """Returns ``loss_fn(params, batch, rng, step[, constants])``.

  Args:
    model: a ``KnowledgeCLIPModel``.
    config: the run's config (``config.knowledge_clip``, ``config.model``).
    table, tokenizer: the triplet table and the tokenizer of its texts; by default
      ``dataset_table(config)``.
    teacher: the KD teacher's params; by default ``load_teacher(config)``.

  Returns:
    The loss function, with ``constants`` (the table's arrays and the teacher's
    params, which the trainer holds on device and passes as ``constants``; called
    without them it reads its own copy). ``batch`` holds ``image``, ``text`` and
    ``kg_draw`` [B, 3]; ``rng`` draws which part of each triplet is masked.
    Metrics: each objective (``clip``, ``e2e``, ``e2r``, ``g2e``, ``kd``), ``e2e_acc``,
    ``e2r_acc``, ``g2e_acc`` and CLIP's in-batch metrics; in "captions" mode
    ``kg_clip`` and ``kg_clip_acc`` (CLIP's loss on the triplets' pairs) instead of
    the E2E, E2R, G2E accuracies (their terms are 0).
  """
  kc = _cfg(config)
  captions = kc["mode"] == "captions"
  if table is None:
    table, tokenizer = dataset_table(config)
  if captions:
    consts = kc_captions.constants(table, tokenizer, length=config.input.text_len)
  else:
    consts = kc_step.constants(
        table, tokenizer, entity_len=kc["entity_len"],
        max_relations=kc["max_relations"], neighbours=kc["g2e_neighbours"])
  if isinstance(teacher, str):
    teacher = load_teacher(config) if kc["kd_weight"] > 0 else None
  if teacher is not None:
    consts["teacher"] = teacher
  teacher_model = two_towers.build_model(config)
  num_relations = len(table.relations)
  wanted = {g: kc[f"kg_{g}"] for g in kc_step.GROUPS}
  probs = jnp.log(jnp.asarray(kc["mask_probs"], jnp.float32))
  pad_id = config.model.text.get("pad_id", 0)
  weights = {w: kc[f"{w}_weight"] for w in WEIGHTS}
  weights["kg_clip"] = kc["clip_weight"]

  def loss_fn(params, batch, rng, step, constants=None):
    del step
    c = jax.tree.map(jnp.asarray, consts if constants is None else constants)
    n = kc_step.counts(c, wanted, batch["kg_draw"].shape[0])
    if captions:
      out = model.apply({"params": params}, batch["image"], batch["text"],
                        batch["kg_draw"], c, n, method=kc_captions.forward)
    else:
      keys = jax.random.split(rng, len(kc_step.GROUPS))
      choices = {g: jax.random.categorical(k, probs, shape=(n[g],))
                 for g, k in zip(kc_step.GROUPS, keys)}
      out = model.apply({"params": params}, batch["image"], batch["text"],
                        batch["kg_draw"], c, choices, n, pad_id=pad_id,
                        g2e_stop_gradient=kc["g2e_stop_gradient"],
                        image_pool=kc["fusion_image_pool"], method=kc_step.forward)
    zimg, ztxt = out["zimg"], out["ztxt"]
    clip, metrics = clip_lib.clip_loss(zimg, ztxt, out["logit_scale"])
    terms = {"clip": clip}
    if captions:
      terms["kg_clip"], metrics["kg_clip_acc"] = (
          kc_captions.pairs_loss(out["pairs"], out["logit_scale"]) if "pairs" in out
          else (jnp.zeros((), jnp.float32),) * 2)
    elif "candidates" in out:
      kg = kc_step.kg_losses(out, num_relations, 1.0 / kc["temperature"])
      terms.update(e2e=kg["e2e"], e2r=kg["e2r"], g2e=kg["g2e"])
      metrics.update(e2e_acc=kg["e2e_acc"], e2r_acc=kg["e2r_acc"], g2e_acc=kg["g2e_acc"])
    if "teacher" in c:
      t_img, t_txt, t_extras = teacher_model.apply({"params": c["teacher"]},
                                                   batch["image"], batch["text"])
      s_scale = kc["kd_scale"] or out["logit_scale"]
      t_scale = kc["kd_scale"] or t_extras["logit_scale"]
      terms["kd"] = kc_loss.kd_kl(s_scale * zimg @ ztxt.T, t_scale * t_img @ t_txt.T)
    loss = sum(weights[k] * v for k, v in terms.items())
    metrics.update({k: terms.get(k, jnp.zeros((), jnp.float32))
                    for k in WEIGHTS + (("kg_clip",) if captions else ())})
    return loss, metrics

  loss_fn.constants = consts
  return loss_fn


# The paper's claims (Pan et al., NeurIPS 2022: knowledge helps reasoning while
# general ability is kept; the full framework beats "CLIP + KG", the towers trained
# on the same triplets written as captions), as `python -m vlkg.tools.results`
# measures them on the world (vlkg.results.claims): the knowledge suite names
# objects only through the knowledge graph's concepts and aliases; the kg/* metrics
# ask the towers alone for held-out triplets (vlkg.evaluators.kg). The blind score
# (vlkg.evaluators.text_prior) exists for the attribute-swap suite only, so these
# claims carry none. The runs of the paper's ablations (vlkg.results.runs): "CLIP +
# KG", the baseline of the kg claims, and each objective removed in turn.
from vlkg.results.claims import Claim  # noqa: E402  (declarations, kept at the end)
from vlkg.results.runs import Run  # noqa: E402

CLAIMS = (
    Claim(name="knowledge", metric="world/knowledge", target=0.10,
          paper="knowledge-intensive reasoning improves over CLIP"),
    Claim(name="knowledge, held-out pairs", metric="world_comp/knowledge", target=0.10,
          paper="knowledge-intensive reasoning improves over CLIP"),
    Claim(name="KG tails over CLIP + KG", metric="kg/tail_R@1", target=0.0,
          baseline="clip_kg",
          paper="the full framework beats CLIP + KG (triplets as captions)"),
    Claim(name="KG relations over CLIP + KG", metric="kg/relation_acc", target=0.0,
          baseline="clip_kg",
          paper="the full framework beats CLIP + KG (triplets as captions)"),
    Claim(name="retrieval kept", metric="retrieval/test/image_to_text_R@1",
          target=-0.02, paper="general ability kept (retrieval close to CLIP's)"),
)

RUNS = (
    Run("clip_kg", ("knowledge_clip.mode=captions",),
        "CLIP + KG: the triplets written as captions, the towers alone"),
    Run("knowledge_clip_no_e2e", ("knowledge_clip.e2e_weight=0.0",), "without E2E"),
    Run("knowledge_clip_no_e2r", ("knowledge_clip.e2r_weight=0.0",), "without E2R"),
    Run("knowledge_clip_no_g2e", ("knowledge_clip.g2e_weight=0.0",), "without G2E"),
    Run("knowledge_clip_no_kd", ("knowledge_clip.kd_weight=0.0",), "without KD"),
)
