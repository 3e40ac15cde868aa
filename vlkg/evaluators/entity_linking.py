"""Multimodal entity linking: WikiDiverse and the world's suite.

A mention in a caption, with the caption's image, is linked to one of its candidate
entities (WikiDiverse, Wang et al., ACL 2022, ten retrieved candidates per mention
in its release; multimodal entity linking is one of the tasks REAVL, Rao et al.,
ACM MM 2023, is judged on).
Each candidate is shown to the model as ``"name: description"`` from the knowledge
base (its name alone when the KB has no description), and:

* an encoder with ``link_scores`` (`vlkg.evaluators.encoder.LinkScorer`) scores the
  candidates itself;
* any other dual encoder scores candidate ``e`` zero-shot by the cosine of
  ``normalise(encode_images(image) + encode_texts(caption))`` with
  ``encode_texts(e)``.

The prediction is the best-scoring candidate (the first on a tie). Scoring
(`score_mentions`):

* NIL mentions (entity ``nil``) are left out and counted (``n_nil``), as the release's
  candidate-recall script leaves them out; a candidate ranker has no NIL answer;
* a mention whose gold entity is not among its candidates (or that has none) counts
  as wrong in ``accuracy``; ``accuracy_in_candidates`` is the accuracy over the
  mentions whose gold is a candidate, and ``candidate_recall`` their share;
* entities compare as the release compares them
  (`vlkg.data.benchmarks.wikidiverse.same_entity`).

Images stream from disk as for every real benchmark; a missing file leaves its
mentions out and is counted in ``missing_images``.

Metrics: ``wikidiverse/accuracy``, ``accuracy_in_candidates``, ``candidate_recall``,
``n_items`` (mentions scored), ``n_nil`` and ``missing_images``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from vlkg.data.benchmarks import wikidiverse
from vlkg.evaluators import common, encoder as encoder_lib
from vlkg.evaluators.benchmark_images import (View, default_image_root, embed_views,
                                              existing, pixel_chunks, report_missing)


def _check(scores, k: int, what: str) -> np.ndarray:
  arr = np.asarray(scores, dtype=np.float64).reshape(-1)
  if arr.shape != (k,) or not np.isfinite(arr).all():
    raise ValueError(f"{what} returned {arr.shape[0]} (or non-finite) scores for "
                     f"{k} candidates")
  return arr


def link_scores(cache: common.EmbeddingCache, paths: Sequence[str],
                contexts: Sequence[str], mentions: Sequence[str],
                candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
  """One score vector per item (each over its candidate texts); every image must
  exist, and every item must have at least one candidate."""
  encoder = cache.encoder
  items = list(range(len(paths)))
  if encoder_lib.has_link_scores(encoder):
    out: dict[int, np.ndarray] = {}
    for group, pixels in pixel_chunks(encoder, paths, items, cache.batch_size):
      scores = encoder.link_scores(pixels, [contexts[i] for i in group],
                                   [mentions[i] for i in group],
                                   [list(candidates[i]) for i in group])
      if len(scores) != len(group):
        raise ValueError(f"link_scores returned {len(scores)} score vectors for "
                         f"{len(group)} mentions")
      for i, s in zip(group, scores):
        out[i] = _check(s, len(candidates[i]), "link_scores")
    return [out[i] for i in items]
  rows, matrix, _ = embed_views(cache, [View(p) for p in paths])
  query = matrix[rows] + cache.texts(list(contexts))
  query /= np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
  text_rows, text_matrix = cache.text_rows([c for cs in candidates for c in cs])
  out_list, start = [], 0
  for q, cs in zip(query, candidates):
    out_list.append(text_matrix[text_rows[start:start + len(cs)]] @ q)
    start += len(cs)
  return out_list


def score_mentions(cache: common.EmbeddingCache, mentions: Sequence[wikidiverse.Mention],
                   kb: wikidiverse.KnowledgeBase, root: str
                   ) -> tuple[dict[str, float], list[str]]:
  """Links ``mentions`` (images under ``root``); see the module docstring.

  Returns:
    ``({"accuracy", "accuracy_in_candidates", "candidate_recall", "n_items",
    "n_nil"}, missing image files)``; the accuracies are 0 when nothing is scored.
  """
  linked = [m for m in mentions if not wikidiverse.is_nil(m.entity)]
  n_nil = len(mentions) - len(linked)
  paths = [wikidiverse.image_path(root, m.img_url) for m in linked]
  kept, missing = existing(paths)
  linked = [m for m, ok in zip(linked, kept) if ok]
  paths = [p for p, ok in zip(paths, kept) if ok]
  in_candidates = [any(wikidiverse.same_entity(c, m.entity) for c in m.candidates)
                   for m in linked]
  todo = [k for k, m in enumerate(linked) if m.candidates]
  scores = link_scores(
      cache, [paths[k] for k in todo], [linked[k].sentence for k in todo],
      [linked[k].mention for k in todo],
      [[kb.text(c) for c in linked[k].candidates] for k in todo]) if todo else []
  right = np.zeros(len(linked), dtype=bool)
  for k, s in zip(todo, scores):
    m = linked[k]
    right[k] = wikidiverse.same_entity(m.candidates[int(np.argmax(s))], m.entity)
  recall = np.array(in_candidates, dtype=bool)
  mean = lambda x: float(np.mean(x)) if len(x) else 0.0
  return {"accuracy": mean(right), "accuracy_in_candidates": mean(right[recall]),
          "candidate_recall": mean(recall), "n_items": float(len(linked)),
          "n_nil": float(n_nil)}, missing


def evaluate_wikidiverse(cache: common.EmbeddingCache, data: str,
                         images: str | None = None, *, split: str = "test",
                         kb: str | None = None) -> dict[str, float]:
  """WikiDiverse entity linking over its candidate lists.

  Args:
    cache: Wraps the encoder.
    data: ``test_w_10cands.json`` (mention level, with candidates), or its folder
      (`vlkg.data.benchmarks.wikidiverse.find_files`).
    images: The folder of the downloaded Wikinews images; default the folder of
      ``data``.
    split: Picks ``{split}_w_10cands.json`` in a folder with several ("valid").
    kb: The entity descriptions (``entity2desc``); default the ``entity2desc*``
      file beside the mention file or in its parent folder.

  Returns:
    ``wikidiverse/accuracy`` etc.; see the module docstring.
  """
  path, found_kb = wikidiverse.find_files(data, split)
  kb = kb or found_kb
  if kb is None:
    logging.warning("wikidiverse: no entity2desc file beside %s; candidates are "
                    "shown by name only", path)
  base = wikidiverse.KnowledgeBase(wikidiverse.read_kb(kb) if kb else {})
  mentions = wikidiverse.read_mentions(path)
  root = images or default_image_root(path)
  metrics, missing = score_mentions(cache, mentions, base, root)
  report_missing("wikidiverse", path, root, missing, int(metrics["n_items"]))
  out = {f"wikidiverse/{k}": v for k, v in metrics.items()}
  out["wikidiverse/missing_images"] = float(len(missing))
  return out
