"""Recall of a caption's gold knowledge-graph entities among those a retriever
fetches for its image and text.

REAVL (Rao et al., "Retrieval-based Knowledge Augmented Vision Language
Pre-training", ACM MM 2023, §3) retrieves knowledge-graph entities for an
image-text pair; its retriever is trained against each pair's gold entities
(``vlkg.methods.reavl_index``: the words of the caption's scene graph that name
an entity, stored in the records as ``reavl_gold``). On a split's captions this
evaluator reports

* ``reavl/recall@n`` for n in ``ns``: |gold ∩ top-n| / min(|gold|, n), averaged
  over the captions with a gold entity in the index
  (``vlkg.models.retriever.recall_at``);
* ``reavl/n_items``: those captions.

It needs an encoder with ``retrieve(images, token_ids, n)`` and
``gold_rows(hashes)`` (REAVL's) and a dataset whose records carry ``reavl_gold``
and have ``split``; otherwise it reports nothing.
"""

from __future__ import annotations

import logging

import numpy as np

from vlkg.data import input_pipeline, records

GOLD = "reavl_gold"


def recall(retrieved: np.ndarray, gold: np.ndarray, n: int) -> np.ndarray:
  """[N] per-caption recall@n (NaN without gold); gold rows -1 are padding."""
  valid = gold >= 0
  hit = (gold[:, :, None] == retrieved[:, None, :n]).any(-1) & valid
  count = valid.sum(-1)
  out = hit.sum(-1) / np.maximum(np.minimum(count, n), 1)
  return np.where(count > 0, out, np.nan)


def evaluate(encoder, dataset_dir: str, split: str = "test", ns=(1, 5, 16),
             batch_size: int = 256, max_items: int = 0) -> dict[str, float]:
  if not callable(getattr(encoder, "retrieve", None)):
    logging.info("knowledge_recall: the encoder has no retriever; no metrics")
    return {}
  manifest = records.read_manifest(dataset_dir)
  layout = records.layout_of(manifest)
  if GOLD not in {f.name for f in layout.features} or split not in manifest["splits"]:
    logging.info("knowledge_recall: %s has no %s or no split %r; no metrics",
                 dataset_dir, GOLD, split)
    return {}
  most = max(ns)
  per = {n: [] for n in ns}
  seen = 0
  for batch in input_pipeline.eval_iterator(dataset_dir, split, batch_size=batch_size,
                                            fields=("image", GOLD)):
    keep = batch["_mask"]
    images, texts, gold = batch["image"][keep], batch["texts"][keep], batch[GOLD][keep]
    # Every caption of each image: [B, C, ...] -> [B * C, ...].
    images = np.repeat(images, texts.shape[1], axis=0)
    texts, gold = texts.reshape(-1, texts.shape[-1]), gold.reshape(-1, gold.shape[-1])
    if not len(texts):
      continue
    retrieved = encoder.retrieve(images, texts, most)
    rows = encoder.gold_rows(gold)
    for n in ns:
      per[n].append(recall(retrieved, rows, min(n, retrieved.shape[1])))
    seen += len(texts)
    if max_items and seen >= max_items:
      break
  out = {}
  for n in ns:
    values = np.concatenate(per[n]) if per[n] else np.zeros(0)
    values = values[~np.isnan(values)]
    out[f"reavl/recall@{n}"] = float(values.mean()) if len(values) else 0.0
    out["reavl/n_items"] = int(len(values))
  return out
