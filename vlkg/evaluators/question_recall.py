"""Whether a retriever finds the knowledge a world knowledge-VQA question needs.

REAVL (Rao et al., "Retrieval-based Knowledge Augmented Vision Language
Pre-training", ACM MM 2023, §3) answers a question with the knowledge-graph
entities its retriever fetches for the image and question. Each question of the
world's knowledge-VQA suite (`vlkg.data.world.kvqa_suite`) is about one object and
needs the fact of one concept of it: its shape (the corner count and shape class
of a shape the question does not name; the shape a shape alias names) or its
colour (the family of a colour the question does not name; the colour a colour
alias names). This evaluator regenerates each question of ``split`` with its
object from the split's records, and reports

* ``reavl/question_recall@n`` for n in ``ns``: the share of questions whose needed
  concept is among the top-n entities retrieved for (image, question);
* the same per question type (``reavl/question_recall@n/<type>``);
* ``reavl/question_n_items``: the questions whose concept is in the index.

It needs an encoder with ``retrieve(images, token_ids, n)``, ``gold_rows(hashes)``
and ``tokenizer`` (REAVL's) and a world dataset; otherwise it reports nothing.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from vlkg import files
from vlkg.data.world import knowledge_benchmarks as kb_lib
from vlkg.evaluators.benchmark_images import pixel_chunks

# The attribute of the asked-about object whose concept each question type needs.
NEEDED = {"corners": "shape", "shape_class": "shape", "alias_color": "shape",
          "family": "color", "alias_shape": "color"}


def needed_concepts(pairs) -> list[str]:
  """The concept each ``(scene, question)`` needs (`NEEDED`)."""
  return [s.objects[q.about].attribute(NEEDED[q.type]) for s, q in pairs]


def evaluate(encoder, dataset_dir: str, split: str = "test", ns=(1, 5, 16),
             batch_size: int = 256) -> dict[str, float]:
  if not callable(getattr(encoder, "retrieve", None)):
    logging.info("question_recall: the encoder has no retriever; no metrics")
    return {}
  if not files.exists(os.path.join(dataset_dir, "world.json")):
    logging.info("question_recall: %s is not a world dataset; no metrics", dataset_dir)
    return {}
  from vlkg.methods.reavl_index import entity_hash
  pairs = kb_lib.vqa_questions(kb_lib.split_scenes(dataset_dir, split),
                               int(kb_lib.prepared_spec(dataset_dir)["seed"]),
                               kb_lib.knowledge_graph(dataset_dir))
  gold = np.asarray(encoder.gold_rows(np.asarray(
      [[entity_hash(c)] for c in needed_concepts(pairs)], np.int32)))[:, 0]
  items = [i for i in range(len(pairs)) if gold[i] >= 0]
  paths = [kb_lib.image_file(dataset_dir, split, s.index) for s, _ in pairs]
  most = max(ns)
  hit_rank = np.full(len(pairs), most, np.int64)  # rank of the concept, `most` if none
  for group, pixels in pixel_chunks(encoder, paths, items, batch_size):
    ids = encoder.tokenizer.encode([pairs[i][1].question for i in group])
    retrieved = np.asarray(encoder.retrieve(pixels, ids, most))
    for i, row in zip(group, retrieved):
      where = np.flatnonzero(row == gold[i])
      hit_rank[i] = where[0] if len(where) else most
  out: dict[str, float] = {"reavl/question_n_items": float(len(items))}
  if not items:
    return out
  types = np.asarray([q.type for _, q in pairs])
  kept = np.zeros(len(pairs), bool)
  kept[items] = True
  for n in ns:
    hit = hit_rank < n
    out[f"reavl/question_recall@{n}"] = float(hit[kept].mean())
    for t in sorted(set(types[kept])):
      mask = kept & (types == t)
      out[f"reavl/question_recall@{n}/{t}"] = float(hit[mask].mean())
  return out
