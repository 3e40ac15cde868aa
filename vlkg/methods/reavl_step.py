"""REAVL's training forward pass: retrieve, fuse, and everything the losses read.

Rao et al., "Retrieval-based Knowledge Augmented Vision Language Pre-training",
ACM MM 2023, §3. One pass (``model.apply(method=forward)``):

1. The towers encode the batch: images (pooled and patch tokens), captions, and
   the captions with their masked tokens hidden (the masked-language-modelling
   input: the hidden tokens are removed as attention keys in the causal text
   tower, and the fusion sees a mask embedding at their places).
2. The query of each pair is ``model.query(zimg, ztxt)``; so is the query of each
   pair's two hard negatives (ALBEF's in-batch hard negatives: another caption of
   each image and another image of each caption, drawn in proportion to the
   softmax of their contrastive logits, or the most similar), so that a negative
   pair is matched with the knowledge its own input retrieves.
3. One search over the index (``vlkg.models.retriever``; sharded over the mesh
   when ``reavl.shard_index``) retrieves the top-k entities of the 3B (or 2B)
   queries;
   an item is the entity's key and its triples (``reavl_index``).
4. On each pair two items are hidden: one whole (masked entity
   modelling: its read-out predicts the entity) and one triple of another
   (link prediction: the triple's token becomes its relation's embedding, and
   the item's read-out with the relation predicts the triple's other end).
5. The fusion runs on the 3B (2B) pairs with their items and gates: matching on all,
   masked tokens, masked entities and links on the positives. Negatives are
   masked alike, so that no mask tells the matching head which pairs match.
6. The positives' gate logits and item rows, for the gate's relevance term
   (``reavl.gate_weight``) and its metrics.

With ``k`` = 0 nothing is retrieved: each row has one empty item, gated 0, so the
fusion reads nothing (the ablation), and the item tasks have nothing to predict.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from vlkg import data_dependency
from vlkg.methods import reavl_index as index_lib
from vlkg.methods import reavl_loss as L
from vlkg.methods.knowledge_clip_step import pool_grid
from vlkg.models import retriever
from vlkg.models.knowledge_augmented import (ENTITY, MASKED_ENTITY, MASKED_IN,
                                             MASKED_OUT, TRIPLE)

Array = jax.Array


def mlm_positions(u: Array, maskable: Array, prob: float, most: int
                  ) -> tuple[Array, Array]:
  """Which tokens to mask: each maskable one with probability ``prob``, at least
  one and at most ``most`` per row (the smallest draws ``u``).

  Returns:
    (positions [B, most] int32, valid [B, most] bool).
  """
  score = jnp.where(maskable, u, 2.0)
  neg, pos = jax.lax.top_k(-score, most)
  first = jnp.arange(most)[None] == 0
  valid = (-neg < 1.5) & ((-neg < prob) | first)
  return pos.astype(jnp.int32), valid


def _pick_valid(u: Array, valid: Array) -> tuple[Array, Array]:
  """A uniformly drawn True position of each row of ``valid`` [B, T] from ``u``
  [B] in [0, 1); (positions [B], whether the row has one [B])."""
  count = valid.sum(-1)
  nth = jnp.minimum(jnp.floor(u * count).astype(jnp.int32), jnp.maximum(count - 1, 0))
  rank = jnp.cumsum(valid, -1) - 1
  pos = jnp.argmax(valid & (rank == nth[:, None]), -1)
  return pos.astype(jnp.int32), count > 0


def forward(module, images: Array, texts: Array, gold: Array, memory: dict, c: dict,
            draws: dict, *, k: int, search: Callable, pad_id: int, bos_id: int | None,
            image_pool: int, mlm_prob: float, mlm_max: int,
            itm_negatives: str = "sampled", negatives_per_pair: int = 2,
            distractors: float = 0.0, item_table: bool | None = None, table_sharding=None,
            ztxt: Array | None = None, query_text: str = "caption") -> dict:
  """Everything the losses read (see the module docstring).

  Args:
    module: the bound ``REAVLModel``.
    images: [B, H, W, 3] normalised; texts: [B, L] token ids.
    gold: [B, G] the batch's ``reavl_gold`` hashes.
    memory: the index's embeddings (``reavl_index.compute_memory``).
    c: ``reavl_index.constants``.
    draws: uniforms in [0, 1): ``mlm`` [B, L]; ``neg_text``, ``neg_image`` [B]
      (the sampled hard negatives); ``mem``, ``lp``, ``triple`` [3B], one per
      pair (positives, then the hard negatives; the first 2B with one negative
      per pair).
    k: items per pair (0: retrieval off).
    search: (queries, keys, n, valid) -> (scores, indices), the index search.
    pad_id, bos_id: the tokenizer's; bos and pad tokens are never masked.
    image_pool: the patch grid enters the fusion averaged over pool x pool blocks.
    mlm_prob, mlm_max: the masking rate and the most masked tokens per caption.
    itm_negatives: "sampled" (ALBEF: in proportion to the softmax of the
      contrastive logits) or "hardest" (the most similar).
    negatives_per_pair: 2 (ALBEF: each image with a negative caption and each
      caption with a negative image, 3B fused pairs) or 1 (even pairs a negative
      caption, odd pairs a negative image: 2B fused pairs, a third less fusion).
    distractors: the share of each pair's items, other than the masked entity's
      and the masked link's, replaced by uniformly drawn entities
      (`with_distractors`); the gate's relevance term reads them as irrelevant
      unless one is a gold entity.
    item_table: the fusion reads the items' tokens from a table of every
      distinct token (the index's entities and triples, and the masked forms:
      `_item_table`) instead of each pair's own copies; the same values. None
      picks the one with fewer tokens: the table on a small graph (the world's
      147 entities: 691 tokens against 24,576), the copies on a large one.
    ztxt: the captions' embeddings [B, D], where the caller computed them
      (packed, ``vlkg.models.text_packing``); None computes them here.
    query_text: the retriever's query reads the whole caption ("caption") or the
      caption as masked language modelling hides it ("masked"), so that what the
      masked words name must be retrieved through the image.
    table_sharding: the table's sharding (replicated over the mesh); the table
      is also made after the search, so that its gathering of the index (split
      over the devices) is ordered after the search's collectives on XLA's CPU
      runtime (``vlkg.data_dependency``).
  """
  b, length = texts.shape
  out = dict(module.scalars())
  zimg, img_tok = module.embed_images(images, return_tokens=True)
  img_tok = pool_grid(img_tok, image_pool)
  if ztxt is None:
    ztxt = module.embed_texts(texts)
  out.update(zimg=zimg, ztxt=ztxt)

  # Masked language modelling's input.
  maskable = (texts != pad_id) & (jnp.arange(length)[None] != module.pool_index(texts)[:, None])
  if bos_id is not None:
    maskable &= texts != bos_id
  positions, mlm_valid = mlm_positions(draws["mlm"], maskable, mlm_prob, mlm_max)
  hidden = jnp.zeros((b, length), bool).at[jnp.arange(b)[:, None], positions].max(mlm_valid)
  ztxt_masked, txt_tok = module.embed_texts(texts, return_tokens=True,
                                            token_mask=~hidden)
  zquery_txt = ztxt_masked if query_text == "masked" else ztxt
  out.update(mlm_positions=positions, mlm_valid=mlm_valid,
             mlm_targets=jnp.take_along_axis(texts, positions, 1))

  # Hard negatives and the queries of all the pairs.
  same = (texts[:, None] == texts[None]).all(-1)
  sim = jax.lax.stop_gradient(zimg @ ztxt.T)
  if itm_negatives == "sampled":
    neg_text, neg_image, ok_t, ok_i = L.sampled_negatives(
        jax.lax.stop_gradient(out["logit_scale"]) * sim, same, draws["neg_text"],
        draws["neg_image"])
  else:
    neg_text, neg_image, ok_t, ok_i = L.hardest_negatives(sim, same)
  # The fused pairs' image and caption rows: the positives, then each image with
  # its negative caption and each caption with its negative image (or, with one
  # negative per pair, one of the two by the pair's parity).
  own = jnp.arange(b)
  if negatives_per_pair == 2:
    neg_img_rows = jnp.concatenate([own, neg_image])
    neg_txt_rows = jnp.concatenate([neg_text, own])
    neg_ok = jnp.concatenate([ok_t, ok_i])
  else:
    caption_swapped = own % 2 == 0
    neg_img_rows = jnp.where(caption_swapped, own, neg_image)
    neg_txt_rows = jnp.where(caption_swapped, neg_text, own)
    neg_ok = jnp.where(caption_swapped, ok_t, ok_i)
  img_rows = jnp.concatenate([own, neg_img_rows])
  txt_rows = jnp.concatenate([own, neg_txt_rows])
  pairs = img_rows.shape[0]
  pair_img, pair_txt = zimg[img_rows], ztxt[txt_rows]
  q = module.query(pair_img, zquery_txt[txt_rows])
  keys, key_valid = memory["keys"], c["valid"]
  # The retriever loss's queries as a computation of their own (the same values
  # as q[:b]): summed into q's gradient with the gates' part, XLA's CPU YNN
  # fusions of this jaxlib fault at batch 128.
  out.update(query=module.query(zimg, zquery_txt), keys=keys, key_valid=key_valid,
             gold=index_lib.gold_rows(gold, c))
  n = min(max(k, 5), keys.shape[0])
  _, found = search(jax.lax.stop_gradient(q), keys, n, key_valid)
  out["retrieved"] = found[:b]

  d, t = keys.shape[-1], c["triple_valid"].shape[-1]
  if k:
    # Masked entity modelling and link prediction mask every pair's items alike,
    # positives and hard negatives: a mask on the positives alone would tell the
    # matching head which pairs match. The two losses read the positives (:b).
    rows = jnp.arange(pairs)
    # Masked entity modelling: one whole item of each pair; link prediction: one
    # triple of another item.
    mem_slot = jnp.minimum((draws["mem"][:pairs] * k).astype(jnp.int32), k - 1)
    lp_slot = (mem_slot + 1 + jnp.minimum((draws["lp"][:pairs] * (k - 1)).astype(jnp.int32),
                                          max(k - 2, 0))) % k
    idx = found[:, :k]
    if distractors:
      idx = with_distractors(idx, draws["distract"][:pairs] < distractors,
                             draws["distract_entity"][:pairs], key_valid,
                             (mem_slot, lp_slot))
    item_keys = keys[idx]  # [pairs, k, D]
    valid = jnp.concatenate([key_valid[idx][..., None], c["triple_valid"][idx]], axis=2)
    types = jnp.broadcast_to(jnp.array([ENTITY] + [TRIPLE] * t), valid.shape)
    mem_target = idx[rows, mem_slot]
    valid = valid.at[rows, mem_slot, 1:].set(False)
    types = types.at[rows, mem_slot, 0].set(MASKED_ENTITY)
    item_keys = item_keys.at[rows, mem_slot].set(0.0)
    entity = idx[rows, lp_slot]
    triple, has = _pick_valid(draws["triple"][:pairs], c["triple_valid"][entity])
    outgoing = c["triple_outgoing"][entity, triple]
    relation_id = c["triple_relation"][entity, triple]
    relation = memory["relations"][relation_id]
    masked_type = jnp.where(outgoing, MASKED_OUT, MASKED_IN)
    types = types.at[rows, lp_slot, 1 + triple].set(masked_type)
    if item_table is None:  # the cheaper of the two forms, by token count
      item_table = _table_size(memory) < pairs * k * (1 + t)
    if item_table:
      items, item_ids = _item_table(module, data_dependency.after(memory, found), idx)
      if table_sharding is not None:
        items = jax.lax.with_sharding_constraint(items, table_sharding)
      item_ids = item_ids.at[rows, mem_slot, 0].set(_masked_entity_id(memory))
      item_ids = item_ids.at[rows, lp_slot, 1 + triple].set(
          _masked_triple_id(memory, relation_id, triple, masked_type))
    else:
      items = jnp.concatenate([item_keys[:, :, None], memory["triples"][idx]], axis=2)
      items = items.at[rows, mem_slot].set(0.0)
      items = items.at[rows, lp_slot, 1 + triple].set(relation)
      item_ids = None
    out.update(mem_target=mem_target[:b], mem_valid=key_valid[mem_target[:b]],
               mem_slot=mem_slot[:b], lp_slot=lp_slot[:b],
               lp_target=c["triple_other"][entity, triple][:b],
               lp_valid=(has & (k > 1) & key_valid[entity])[:b],
               lp_relation=(relation + module.item_type_embedding(masked_type))[:b])
    out["item_types"] = types
    if module.gate:
      gate_logits = module.gate_logits(q, item_keys)
      out["gate_logits"] = gate_logits[:b]
      gates = jax.nn.sigmoid(gate_logits)
    else:
      gates = module.gates(q, item_keys)
    # The positives' items that are whole entities (not the masked one): what the
    # gate's relevance term and metrics read.
    out["item_rows"] = idx[:b]
    out["item_open"] = (key_valid[idx] & (jnp.arange(k)[None] != mem_slot[:, None]))[:b]
  else:
    items = jnp.zeros((pairs, 1, 1 + t, d))
    valid = jnp.zeros((pairs, 1, 1 + t), bool)
    types = jnp.zeros((pairs, 1, 1 + t), jnp.int32)
    gates = jnp.zeros((pairs, 1))
    item_ids = None
  out["gates"] = gates

  txt_valid = texts != pad_id
  fused = module.fuse(pair_img, img_tok[img_rows], txt_tok[txt_rows], txt_valid[txt_rows],
                      hidden[txt_rows], items, types, valid, gates, readout=bool(k),
                      readout_rows=b, item_ids=item_ids)
  out["itm_logits"] = module.itm_logits(fused["fused"], jnp.sum(pair_img * pair_txt, -1))
  out["itm_labels"] = (jnp.arange(pairs) < b).astype(jnp.int32)
  out["itm_valid"] = jnp.concatenate([jnp.ones(b, bool), neg_ok])
  text_out = jnp.take_along_axis(fused["text"][:b], positions[..., None], 1)
  out["mlm_logits"] = module.mlm_logits(text_out)
  if k:
    item_out, pos = fused["items"], jnp.arange(b)
    out["mem_pred"] = module.entity_prediction(item_out[pos, out["mem_slot"]])
    out["lp_pred"] = module.link_prediction(item_out[pos, out["lp_slot"]],
                                            out["lp_relation"])
  return out


def with_distractors(idx: Array, replace: Array, u: Array, valid: Array,
                     kept: tuple[Array, ...]) -> Array:
  """``idx`` [P, k] with the slots where ``replace`` [P, k] holds, other than each
  row's ``kept`` slots ([P] each), set to the valid entity of rank floor(u * V)
  among the V valid ones (``u`` [P, k] uniforms in [0, 1), ``valid`` [E])."""
  slot = jnp.arange(idx.shape[1])[None]
  for kept_slot in kept:
    replace &= slot != kept_slot[:, None]
  ends = jnp.cumsum(valid.astype(jnp.int32))  # valid entities up to each row
  rank = jnp.minimum(jnp.floor(u * ends[-1]).astype(jnp.int32), ends[-1] - 1)
  drawn = jnp.searchsorted(ends, rank, side="right").astype(idx.dtype)
  return jnp.where(replace, drawn, idx)


def _table_size(memory: dict) -> int:
  """Rows of `_item_table`: E entities' m tokens, the masked entity, and each
  relation's masked triple at each triple slot in both directions."""
  e, t = memory["triples"].shape[:2]
  return e * (1 + t) + 1 + memory["relations"].shape[0] * t * 2


def _item_table(module, memory: dict, idx: Array) -> tuple[Array, Array]:
  """Every distinct item token, with its slot and type embeddings
  (``module.item_inputs``), and the ids of the retrieved items' tokens.

  Rows: entity e's token i at e * m + i (its key, then its triples); the masked
  entity (`_masked_entity_id`); relation r's masked triple at triple slot s in
  direction o (`_masked_triple_id`).

  Returns:
    (table [T, D], ids [pairs, k, m] of the unmasked items ``idx`` [pairs, k]).
  """
  relations = memory["relations"]
  e, t, d = memory["triples"].shape
  r, m = relations.shape[0], 1 + t
  entity_tokens = jnp.concatenate([memory["keys"][:, None], memory["triples"]], 1)
  features = jnp.concatenate([entity_tokens.reshape(e * m, d), jnp.zeros((1, d)),
                              jnp.repeat(relations, t * 2, axis=0)])
  slot = jnp.arange(m)
  slots = jnp.concatenate([jnp.tile(slot, e), jnp.zeros(1, jnp.int32),
                           jnp.tile(jnp.repeat(slot[1:], 2), r)])
  types = jnp.concatenate([jnp.tile(jnp.array([ENTITY] + [TRIPLE] * t), e),
                           jnp.array([MASKED_ENTITY]),
                           jnp.tile(jnp.array([MASKED_OUT, MASKED_IN]), r * t)])
  table = module.item_inputs(features, slots, types)
  return table, idx[..., None] * m + slot


def _masked_entity_id(memory: dict) -> int:
  e, t = memory["triples"].shape[:2]
  return e * (1 + t)


def _masked_triple_id(memory: dict, relation: Array, triple: Array,
                      masked_type: Array) -> Array:
  """`_item_table` rows of masked triples: ``relation``'s, at triple slot
  ``triple`` (0-based among the triples), of type ``MASKED_OUT`` or
  ``MASKED_IN`` (the table's order)."""
  t = memory["triples"].shape[1]
  return (_masked_entity_id(memory) + 1 + (relation * t + triple) * 2
          + masked_type - MASKED_OUT)


def make_search(mesh, shard: bool, approx: bool, block: int) -> Callable:
  """The index search of the step: sharded over ``mesh`` when ``shard`` and the
  mesh has several devices, else on the arrays as they are."""
  if shard and mesh is not None and mesh.size > 1:
    return lambda q, keys, n, valid: retriever.sharded_search(
        q, keys, n, mesh, valid=valid, approx=approx, block=block)
  return lambda q, keys, n, valid: retriever.search(q, keys, n, valid=valid,
                                                    approx=approx, block=block)
