"""Knowledge-CLIP's triplet batch: from the device-resident table to the losses.

Each caption's record carries ``kg_draw`` (three seeded draws, one per triplet
group, made at prepare time); a step takes the first ``kg_<group>`` captions'
draws of each group and resolves them against the table's training triplets of
that group (draw mod count). Groups keep every slot's modality fixed, so that each
entity goes through the one tower it needs, with static shapes:

* ``text_text``: [text; r; text], both slots by the text tower;
* ``mixed``: [text; r; image], the text entity in slot a, the image in slot b, each
  slot's role (head or tail) from the triplet;
* ``image_image``: [image; r; image] (the world's region pairs).

For each triplet one of head, tail, relation is masked (``mask_probs``). A masked
entity is predicted (E2E) against every entity of the step's triplets, texts and
images; a masked relation is classified (E2R). Each unmasked head is an anchor of
G2E: its fusion output is pulled toward its feature propagated over its text
neighbours by the graph transformer, contrasted with the other anchors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vlkg import preprocess
from vlkg.data import kg_table
from vlkg.methods import knowledge_clip_loss as L
from vlkg.models import knowledge_fusion as F
from vlkg.models.two_towers import l2_normalize

Array = jax.Array
GROUPS = kg_table.GROUPS


def constants(table: kg_table.Table, tokenizer, *, entity_len: int, max_relations: int,
              neighbours: int) -> dict[str, np.ndarray]:
  """The table as the step reads it (numpy; the trainer puts it on device): entity
  and relation texts as ``entity_len`` token ids, the first ``neighbours`` of each
  entity's neighbours, the training triplets of each group.

  Raises:
    ValueError: if the table has more relations than ``max_relations``.
  """
  r = len(table.relations)
  if r > max_relations:
    raise ValueError(f"config.knowledge_clip.max_relations={max_relations}, but the "
                     f"knowledge graph has {r} relations")
  text = np.where(table.is_image, "", table.entity_text)
  types = table.neighbour_types[:, :neighbours]
  # The table types incoming edges R + r; the model's edge types M + r (M = max).
  types = np.where(types >= r, types - r + max_relations, types)
  out = {"triplets": table.triplets.astype(np.int32),
         "is_image": table.is_image,
         "entity_image": np.maximum(table.entity_image, 0).astype(np.int32),
         "entity_tokens": kg_table.text_ids(text, tokenizer, entity_len),
         "relation_tokens": kg_table.text_ids(table.relations, tokenizer, entity_len),
         "images": table.images,
         "neighbours": table.neighbours[:, :neighbours].astype(np.int32),
         "neighbour_types": types.astype(np.int32)}
  for g in GROUPS:
    out[f"train_{g}"] = table.training(g).astype(np.int32)
  return out


def counts(c: dict, wanted: dict[str, int], batch: int) -> dict[str, int]:
  """Triplets per group this step: as configured, at most the batch, 0 for a group
  without training triplets."""
  return {g: min(wanted[g], batch) if len(c[f"train_{g}"]) else 0 for g in GROUPS}


def _resolve(c, draws: Array, g: str, n: int):
  train = c[f"train_{g}"]
  rows = train[draws[:n, GROUPS.index(g)] % train.shape[0]]
  h, r, t = (c["triplets"][rows, k] for k in range(3))
  return h, r, t


def pool_grid(tokens: Array, pool: int) -> Array:
  """[K, g*g, D] patch tokens, averaged over ``pool`` x ``pool`` blocks of the grid:
  [K, (g/pool)^2, D], row-major."""
  if pool == 1:
    return tokens
  k, p, d = tokens.shape
  g = int(round(p ** 0.5))
  if g * g != p or g % pool:
    raise ValueError(f"config.knowledge_clip.fusion_image_pool={pool} does not divide "
                     f"the {g} x {g} patch grid")
  x = tokens.reshape(k, g // pool, pool, g // pool, pool, d)
  return x.mean(axis=(2, 4)).reshape(k, (g // pool) ** 2, d)


def forward(module, images: Array, texts: Array, draws: Array, c: dict,
            choices: dict[str, Array], n: dict[str, int], *, pad_id: int,
            g2e_stop_gradient: bool, image_pool: int = 1) -> dict:
  """Everything the losses read, in one pass (``model.apply(method=forward)``).

  The towers run once per input kind: the batch's images with the entity images,
  the batch's captions, and the entity texts with the relations and the G2E
  neighbours (all at ``entity_tokens``' length).

  Args:
    module: the bound ``KnowledgeCLIPModel``.
    images: [B, H, W, 3] normalised batch images; texts: [B, L] their captions.
    draws: [B, 3] int32, the batch's ``kg_draw``.
    c: ``constants``.
    choices: group -> [n] int, 0 mask the head, 1 the tail, 2 the relation.
    n: ``counts``.
    pad_id: the text tower's pad id.
    g2e_stop_gradient: the neighbours' features carry no gradient.
    image_pool: an image entity's patch grid enters the fusion encoder averaged
      over ``image_pool`` x ``image_pool`` blocks.

  Returns:
    ``zimg``, ``ztxt``, the scalars, and what ``kg_losses`` reads (when a group
    has triplets): ``candidates`` (every entity slot's tower embedding, texts
    first), ``candidate_ids``, per group the fusion outputs, targets and masks,
    ``propagated`` and ``anchors``.
  """
  c = jax.tree.map(jnp.asarray, c)
  out = dict(module.scalars())
  out["ztxt"] = module.embed_texts(texts)
  slots = {}  # group -> (a ids, b ids, relation ids, role of slot a)
  for g in GROUPS:
    if n[g]:
      h, r, t = _resolve(c, draws, g, n[g])
      if g == "mixed":  # the text entity in slot a, the image in slot b
        head_image = c["is_image"][h]
        slots[g] = (jnp.where(head_image, t, h), jnp.where(head_image, h, t), r,
                    jnp.where(head_image, F.TAIL, F.HEAD))
      else:
        slots[g] = (h, t, r, jnp.full(h.shape, F.HEAD))
  if not slots:
    out["zimg"] = module.embed_images(images)
    return out
  pick = lambda g, s: slots[g][0] if s == "a" else slots[g][1]
  text_slots = [(g, s) for g, s in (("text_text", "a"), ("text_text", "b"),
                                    ("mixed", "a")) if g in slots]
  image_slots = [(g, s) for g, s in (("mixed", "b"), ("image_image", "a"),
                                     ("image_image", "b")) if g in slots]
  heads = {g: jnp.where(a_role == F.HEAD, a, b) for g, (a, b, _, a_role) in slots.items()}
  anchors = jnp.concatenate(list(heads.values()))
  neighbours = c["neighbours"][anchors]
  k, m = neighbours.shape

  # Texts: entity slots, then the relations, then the anchors' neighbours.
  text_ids = [pick(g, s) for g, s in text_slots]
  tok = c["entity_tokens"][jnp.concatenate(text_ids)] if text_ids else None
  parts = ([tok] if tok is not None else []) + [
      c["relation_tokens"], c["entity_tokens"][jnp.maximum(neighbours, 0).reshape(-1)]]
  z_all, seq_all = module.embed_texts(jnp.concatenate(parts), return_tokens=True)
  n_text = 0 if tok is None else tok.shape[0]
  n_rel = c["relation_tokens"].shape[0]
  relations = z_all[n_text:n_text + n_rel]
  nbr_z = z_all[n_text + n_rel:].reshape(k, m, -1)
  if g2e_stop_gradient:
    nbr_z = jax.lax.stop_gradient(nbr_z)

  # Images: the batch's, then the entity slots'.
  b = images.shape[0]
  image_ids = [pick(g, s) for g, s in image_slots]
  if image_ids:
    pixels = preprocess.normalize_images(
        c["images"][c["entity_image"][jnp.concatenate(image_ids)]])
    zi, seq_i = module.embed_images(jnp.concatenate([images, pixels.astype(images.dtype)]),
                                    return_tokens=True)
    out["zimg"] = zi[:b]
    zi, seq_i = zi[b:], pool_grid(seq_i[b:], image_pool)
  else:
    out["zimg"] = module.embed_images(images)

  features, ids, where, tokens = [], [], {}, {}
  offset = 0
  for g, s in text_slots:
    where[g, s] = offset
    tokens[g, s] = (seq_all[offset:offset + n[g]],
                    tok[offset:offset + n[g]] != pad_id)
    offset += n[g]
  if text_ids:
    features.append(z_all[:n_text])
    ids.extend(text_ids)
  offset = 0
  for g, s in image_slots:
    where[g, s] = n_text + offset
    seq = seq_i[offset:offset + n[g]]
    tokens[g, s] = (seq, jnp.ones(seq.shape[:2], bool))
    offset += n[g]
  if image_ids:
    features.append(zi)
    ids.extend(image_ids)
  out["candidates"] = jnp.concatenate(features)
  out["candidate_ids"] = jnp.concatenate(ids)

  out["groups"] = {}
  for g, (a, b_ids, r, a_role) in slots.items():
    choice = choices[g]
    b_role = 2 - a_role  # HEAD <-> TAIL
    masked_role = jnp.where(choice == 0, F.HEAD, F.TAIL)
    a_masked = (choice != 2) & (a_role == masked_role)
    b_masked = (choice != 2) & (b_role == masked_role)
    a_kind = F.TEXT if g in ("text_text", "mixed") else F.IMAGE
    b_kind = F.TEXT if g == "text_text" else F.IMAGE
    (a_seq, a_valid), (b_seq, b_valid) = tokens[g, "a"], tokens[g, "b"]
    fused = module.fuse(a_seq, a_valid, a_kind, a_role, a_masked, relations[r],
                        choice == 2, b_seq, b_valid, b_kind, b_role, b_masked)
    index_a = where[g, "a"] + jnp.arange(n[g])
    index_b = where[g, "b"] + jnp.arange(n[g])
    head_in_a = a_role == F.HEAD
    out["groups"][g] = {
        "e2e": jnp.where(a_masked[:, None], fused["e2e_a"], fused["e2e_b"]),
        "e2e_target": jnp.where(a_masked, index_a, index_b),
        "e2e_id": jnp.where(a_masked, a, b_ids),
        "e2e_valid": choice != 2,
        "e2r": fused["e2r"], "relation": r, "e2r_valid": choice == 2,
        "g2e": jnp.where(head_in_a[:, None], fused["g2e_a"], fused["g2e_b"]),
        "head": heads[g],
        "head_index": jnp.where(head_in_a, index_a, index_b),
        "g2e_valid": choice != 0,
    }
  anchor_z = out["candidates"][jnp.concatenate(
      [v["head_index"] for v in out["groups"].values()])]
  out["propagated"] = module.propagate(anchor_z, nbr_z, c["neighbour_types"][anchors],
                                       neighbours >= 0)
  out["anchors"] = anchors
  return out


def kg_losses(out: dict, num_relations: int, scale: float) -> dict[str, Array]:
  """E2E, E2R and G2E (``knowledge_clip_loss``) and their accuracies."""
  groups = list(out["groups"].values())
  cat = lambda key: jnp.concatenate([v[key] for v in groups])
  e2e, e2e_acc = L.entity_nce(l2_normalize(cat("e2e")), out["candidates"],
                              cat("e2e_target"), cat("e2e_id"), out["candidate_ids"],
                              cat("e2e_valid"), scale)
  e2r, e2r_acc = L.relation_ce(cat("e2r"), cat("relation"), num_relations,
                               cat("e2r_valid"))
  anchors = out["anchors"]
  g2e, g2e_acc = L.entity_nce(l2_normalize(cat("g2e")), l2_normalize(out["propagated"]),
                              jnp.arange(anchors.shape[0]), anchors, anchors,
                              cat("g2e_valid"), scale)
  return {"e2e": e2e, "e2e_acc": e2e_acc, "e2r": e2r, "e2r_acc": e2r_acc,
          "g2e": g2e, "g2e_acc": g2e_acc}
