"""Knowledge-graph completion on the dataset's held-out triplets, for every method.

Knowledge-CLIP (Pan et al., "Contrastive Language-Image Pre-Training with Knowledge
Graphs", NeurIPS 2022) claims that training on triplets makes the two towers know
the graph; its "CLIP + KG" ablation writes triplets as captions. This evaluator
asks the towers alone, so that every method is scored the same way, on the
triplets that ``vlkg.data.kg_table`` held out of training:

* an entity's embedding is the text tower's for a text and the image tower's for
  an image;
* the query of (h, r) is the model's own where it has one
  (`vlkg.evaluators.encoder.KGQueryEncoder`: Knowledge-CLIP's fusion encoder
  predicts the masked tail, as its E2E objective trains it to); otherwise the
  text "h r" (the triplet written as a caption's start) when h is a text, and
  normalise(e(h) + e(r)) when h is an image (the towers cannot read an image and
  words together);
* ``kg/tail_R@1``, ``kg/tail_R@5``: the true tail is among the k entities (all of
  the table's, texts and images) most similar to the query, other entities that
  complete (h, r) in the table left out of the ranking (the "filtered" setting of
  Bordes et al. 2013, "Translating Embeddings for Modeling Multi-relational
  Data");
* ``kg/relation_acc``: the relation r' whose query q(h, r') is most similar to the
  tail is r, other relations that hold between h and t left out;
* ``kg/n_items``: held-out triplets scored.

A dataset without a triplet table (a real corpus without a knowledge graph) has no
``kg`` metrics.
"""

from __future__ import annotations

import collections
import logging
import os

import numpy as np

from vlkg.data import kg_table
from vlkg.evaluators import common
from vlkg.evaluators import encoder as encoder_lib


def _normalise(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def entity_embeddings(encoder, table: kg_table.Table, batch_size: int) -> np.ndarray:
  """[E, D]: every entity by its tower."""
  is_image = table.is_image
  texts = table.entity_text[~is_image].tolist()
  out = None
  if texts:
    z = common.encode_batched(encoder.encode_texts, texts, batch_size, "encode_texts")
    out = np.zeros((table.num_entities, z.shape[1]), np.float32)
    out[~is_image] = z
  if is_image.any():
    z = common.encode_batched(encoder.encode_images,
                              table.images[table.entity_image[is_image]], batch_size,
                              "encode_images")
    if out is None:
      out = np.zeros((table.num_entities, z.shape[1]), np.float32)
    out[is_image] = z
  return out


def queries(encoder, table: kg_table.Table, entities: np.ndarray,
            pairs: list[tuple[int, int]], batch_size: int) -> np.ndarray:
  """[len(pairs), D]: the query of each (head, relation) pair (module docstring)."""
  out = np.zeros((len(pairs), entities.shape[1]), np.float32)
  texts = [k for k, (h, _) in enumerate(pairs) if not table.is_image[h]]
  images = [k for k, (h, _) in enumerate(pairs) if table.is_image[h]]
  if encoder_lib.has_kg_queries(encoder):
    for rows, are_images in ((texts, False), (images, True)):
      if rows:
        out[rows] = _own_queries(encoder, table, [pairs[k] for k in rows], batch_size,
                                 images=are_images)
    return out
  if texts:
    said = [f"{table.entity_text[pairs[k][0]]} {table.relations[pairs[k][1]]}"
            for k in texts]
    out[texts] = common.encode_batched(encoder.encode_texts, said, batch_size,
                                       "encode_texts")
  if images:
    relations = common.encode_batched(encoder.encode_texts, table.relations.tolist(),
                                      batch_size, "encode_texts")
    out[images] = _normalise(np.stack([entities[pairs[k][0]] + relations[pairs[k][1]]
                                       for k in images]))
  return out


def _own_queries(encoder, table: kg_table.Table, pairs: list[tuple[int, int]],
                 batch_size: int, images: bool) -> np.ndarray:
  """The encoder's `KGQueryEncoder.encode_kg_queries` of ``pairs``, whose heads are
  all images (``images``) or all texts."""

  def encode(chunk):
    relations = [str(table.relations[r]) for _, r in chunk]
    heads = [h for h, _ in chunk]
    if images:
      return encoder.encode_kg_queries(relations,
                                       images=table.images[table.entity_image[heads]])
    return encoder.encode_kg_queries(relations,
                                     texts=[str(t) for t in table.entity_text[heads]])

  return common.encode_batched(encode, pairs, batch_size, "encode_kg_queries")


def scores(table: kg_table.Table, entities: np.ndarray, pair_queries: dict,
           ks=(1, 5)) -> dict[str, float]:
  """The metrics from the embeddings (see the module docstring).

  Args:
    table: the triplet table.
    entities: [E, D] unit entity embeddings.
    pair_queries: (head, relation) -> unit query embedding [D], for every held-out
      triplet's head with every relation.
  """
  tails = collections.defaultdict(set)
  relations = collections.defaultdict(set)
  for h, r, t in table.triplets:
    tails[h, r].add(int(t))
    relations[h, t].add(int(r))
  held = table.triplets[table.heldout]
  hits = {k: [] for k in ks}
  correct = []
  for h, r, t in held:
    sims = entities @ pair_queries[h, r]
    others = [o for o in tails[h, r] if o != t]
    sims[others] = -np.inf
    rank = int(np.sum(sims > sims[t]))
    for k in ks:
      hits[k].append(rank < k)
    rel_sims = np.array([pair_queries[h, q] @ entities[t]
                         for q in range(len(table.relations))])
    rel_sims[[q for q in relations[h, t] if q != r]] = -np.inf
    correct.append(int(np.argmax(rel_sims)) == r)
  out = {f"kg/tail_R@{k}": float(np.mean(v)) for k, v in hits.items()}
  out["kg/relation_acc"] = float(np.mean(correct))
  out["kg/n_items"] = float(len(held))
  return out


def evaluate(encoder, dataset_dir: str, batch_size: int = 256,
             max_items: int = 0) -> dict[str, float]:
  """``kg/*`` on the held-out triplets of ``dataset_dir``'s table (at most
  ``max_items`` of them when > 0); {} when the dataset has no table."""
  if not os.path.exists(os.path.join(dataset_dir, kg_table.TABLE)):
    logging.info("kg: %s has no knowledge-graph triplets; no kg metrics", dataset_dir)
    return {}
  table = kg_table.read(dataset_dir)
  if max_items and table.heldout.sum() > max_items:
    keep = np.flatnonzero(table.heldout)[:max_items]
    heldout = np.zeros_like(table.heldout)
    heldout[keep] = True
    table = kg_table.Table(**{**table.__dict__, "heldout": heldout})
  if not table.heldout.any():
    return {}
  entities = entity_embeddings(encoder, table, batch_size)
  heads = sorted({int(h) for h in table.triplets[table.heldout, 0]})
  pairs = [(h, q) for h in heads for q in range(len(table.relations))]
  embedded = queries(encoder, table, entities, pairs, batch_size)
  return scores(table, entities, dict(zip(pairs, embedded)))
