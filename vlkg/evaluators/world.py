"""Evaluates an encoder on the synthetic world: the ten suites per split, and retrieval.

The world's suites are written in the real benchmarks' file formats (see
`vlkg.data.world.build`), and are scored here with the real benchmarks' rules:

* ``attribute_swap`` / ``relation_swap``: ARO VG-Attribution / VG-Relation
  (Yuksekgonul et al., ICLR 2023): crop to the item's bbox, options
  ``[false, true]``, a tie is wrong. World bboxes cover the whole image, so the crop
  is the identity, but it runs anyway so this path is the real benchmark's. The
  value is plain accuracy over items (DESIGN's ``world/<suite>``), not ARO's macro
  accuracy over relations or attribute pairs, which the real benchmark reports as
  ``aro_relation/macro_accuracy``; on a small split few attribute pairs would
  reach ARO's 25-item minimum anyway.
* ``order``: ARO COCO-Order precision@1 over the original and its perturbations; a
  tie with the original is correct.
* ``replace_att``, ``replace_obj``, ``replace_rel``, ``swap_att``, ``swap_obj``,
  ``add_att`` (SugarCrepe, Hsieh et al., NeurIPS 2023 D&B) and ``knowledge`` (same
  format): correct iff the positive scores strictly higher.
* Retrieval on one split's records with open_clip's metrics
  (`vlkg.evaluators.retrieval.evaluate_split`), every caption of every image.
* Phrase grounding on ``test`` (`vlkg.evaluators.grounding`, LOUPE, Li et al., NeurIPS 2022): pointing game and accuracy at IoU >= 0.5 of each object phrase's
  patch-phrase similarity map, for encoders with ``encode_image_tokens``.
* Knowledge VQA and entity linking on ``val`` and ``test``
  (`vlkg.evaluators.world_knowledge`): the world's OK-VQA-format questions scored
  with the official VQA accuracy over the closed answer vocabulary, and its
  WikiDiverse-format mentions linked among their ten candidates; with an encoder's
  ``answer_scores`` / ``link_scores``, else zero-shot from its two embeddings.

Metric names (DESIGN contract): ``world/<suite>`` on ``test``, ``world_comp/<suite>``
on ``test_comp``, ``world_val/<suite>`` on ``val``; ``<prefix>/n_items`` (items scored
over all suites) and ``<prefix>/missing_images`` (distinct image files not on disk;
their items are left out rather than crash the run); and
``retrieval/<split>/image_to_text_R@1`` etc. with ``retrieval/<split>/n_items``
(images) and ``retrieval/<split>/missing_images`` (always 0: records hold the
pixels); ``grounding/pointing_acc``, ``grounding/iou50_acc`` and the rest of
`vlkg.evaluators.grounding`'s metrics; ``<prefix>/kvqa`` and
``<prefix>/entity_linking`` with ``<prefix>/kvqa_n_items`` and
``<prefix>/entity_linking_n_items`` (their images count in
``<prefix>/missing_images``). A suite with no items has no accuracy, and its metric
is left out.

Cost: every distinct image and caption of an evaluation is encoded once (test
images serve retrieval, all ten suites and the knowledge suites), in full batches;
the rest is numpy, except the knowledge-VQA zero-shot rule, which encodes each
distinct question with each answer of the vocabulary.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from vlkg import files
from vlkg.data import records
from vlkg.data.benchmarks import aro, order, sugarcrepe
from vlkg.data.benchmarks.errors import BenchmarkFormatError, load_json, type_name
from vlkg.data.world import suites as suites_lib
from vlkg.evaluators import binary_choice, common, encoder as encoder_lib
from vlkg.evaluators import grounding as grounding_lib
from vlkg.evaluators import retrieval, world_knowledge

SPLIT_PREFIX = {"test": "world", "test_comp": "world_comp", "val": "world_val"}


class SuiteItem(NamedTuple):
  """One suite item as the evaluator needs it.

  Attributes:
    image_path: Relative to ``<dataset>/benchmarks``, as stored in the file.
    bbox: ARO's ``(x, y, w, h)`` crop, or None for formats without one.
    options: The captions in the order the suite's tie rule expects: ARO
      ``(false, true)``, SugarCrepe ``(positive, negative)``, Order original first.
  """

  image_path: str
  bbox: tuple[float, float, float, float] | None
  options: tuple[str, ...]


def _read_order(path: str) -> list[SuiteItem]:
  data = load_json(path)
  if not isinstance(data, list):
    raise BenchmarkFormatError(path, f"top level must be a JSON list, got "
                               f"{type_name(data)}")
  items = []
  for i, record in enumerate(data):
    if not isinstance(record, dict) or not isinstance(record.get("image_path"), str):
      raise BenchmarkFormatError(path, "needs a string field 'image_path'", item=i,
                                 field="image_path")
    options = record.get("caption_options")
    if (not isinstance(options, list) or len(options) < 2
        or not all(isinstance(o, str) for o in options)):
      raise BenchmarkFormatError(
          path, "field 'caption_options' must be a list of at least two strings",
          item=i, field="caption_options")
    items.append(SuiteItem(record["image_path"], None, tuple(options)))
  return items


def suite_path(dataset_dir: str, split: str, suite: str) -> str:
  root = os.path.join(dataset_dir, "benchmarks", split)
  if suite in suites_lib.SUGARCREPE_SUITES:
    return os.path.join(root, "sugarcrepe", f"{suite}.json")
  return os.path.join(root, f"{suite}.json")


def _expected_count(dataset_dir: str, split: str, suite: str) -> int | None:
  try:
    with files.open(os.path.join(dataset_dir, "world.json")) as f:
      return int(json.load(f)["suites"][split].get(suite, 0))
  except (OSError, KeyError, ValueError, TypeError):
    return None


def read_suite(dataset_dir: str, split: str, suite: str) -> list[SuiteItem]:
  """Reads one suite of one split with the real benchmark's reader.

  Args:
    dataset_dir: A prepared world dataset.
    split: ``"test"``, ``"test_comp"`` or ``"val"``.
    suite: One of `vlkg.data.world.suites.SUITES`.

  Returns:
    The items in file order (by scene index).

  Raises:
    ValueError: For an unknown suite.
    FileNotFoundError: If the suite's file is missing although ``world.json`` says
      the suite has items (prepare writes no file for an empty suite).
    BenchmarkFormatError: If the file is malformed.
  """
  if suite not in suites_lib.SUITES:
    raise ValueError(f"unknown suite {suite!r}; expected one of {suites_lib.SUITES}")
  path = suite_path(dataset_dir, split, suite)
  if not files.isfile(path):
    if _expected_count(dataset_dir, split, suite) == 0:
      return []
    raise FileNotFoundError(f"suite file not found: {path}")
  if suite in suites_lib.ARO_SUITES:
    kind = "attribution" if suite == "attribute_swap" else "relation"
    return [SuiteItem(it.image_path, it.bbox, (it.false_caption, it.true_caption))
            for it in aro.read_aro(path, kind)]
  if suite == "order":
    return _read_order(path)
  return [SuiteItem(it.filename, None, (it.caption, it.negative_caption))
          for it in sugarcrepe.read_sugarcrepe_file(path)]


def _accuracy(suite: str, scores: np.ndarray) -> float:
  if suite in suites_lib.ARO_SUITES:
    return float(np.mean(binary_choice.aro_correct(scores)))
  if suite == "order":
    return order.precision_at_1(scores)
  return float(np.mean(binary_choice.sugarcrepe_correct(scores)))


def evaluate_suites(cache: common.EmbeddingCache, dataset_dir: str, split: str, *,
                    max_items: int | None = None) -> dict[str, float]:
  """The ten suites of one split; see the module docstring for names and rules.

  Args and returns as `suites_and_missing`, without the missing files.
  """
  return suites_and_missing(cache, dataset_dir, split, max_items=max_items)[0]


def suites_and_missing(cache: common.EmbeddingCache, dataset_dir: str, split: str, *,
                       max_items: int | None = None
                       ) -> tuple[dict[str, float], list[str]]:
  """The ten suites of one split, and the image files they lacked.

  Args:
    cache: Wraps the encoder; images and captions already in it are not re-encoded.
    dataset_dir: A prepared world dataset.
    split: A key of `SPLIT_PREFIX`.
    max_items: Score only the first ``max_items`` items of each suite (None or 0:
      all).

  Returns:
    ``<prefix>/<suite>`` accuracies, ``<prefix>/n_items`` and
    ``<prefix>/missing_images``; and the missing image files, relative to
    ``<dataset>/benchmarks``.
  """
  if split not in SPLIT_PREFIX:
    raise ValueError(f"no metric prefix for split {split!r}; expected one of "
                     f"{sorted(SPLIT_PREFIX)}")
  prefix = SPLIT_PREFIX[split]
  bench_root = os.path.join(dataset_dir, "benchmarks")
  cut = max_items or None
  per_suite = {s: read_suite(dataset_dir, split, s)[:cut] for s in suites_lib.SUITES}

  paths = dict.fromkeys(it.image_path for items in per_suite.values() for it in items)
  loaded = {p: binary_choice.load_image(os.path.join(bench_root, p), missing_ok=True)
            for p in paths}
  missing = sorted(p for p, image in loaded.items() if image is None)
  if missing:
    logging.warning("%s: %d image files missing under %s (first: %s); their items "
                    "are not scored", prefix, len(missing), bench_root, missing[0])

  kept: dict[str, list[SuiteItem]] = {}
  views: dict[tuple[str, Any], int] = {}  # (path, bbox) -> index into `images`
  images: list[np.ndarray] = []
  item_views: list[int] = []
  texts: list[str] = []
  for suite, items in per_suite.items():
    kept[suite] = [it for it in items if loaded[it.image_path] is not None]
    for it in kept[suite]:
      view = (it.image_path, it.bbox)
      if view not in views:
        image = loaded[it.image_path]
        views[view] = len(images)
        images.append(image if it.bbox is None else aro.crop_to_bbox(image, it.bbox))
      item_views.append(views[view])
      texts.extend(it.options)
  # One lookup for the whole split: each distinct view is hashed once and the
  # encoder sees the fewest, fullest batches.
  view_rows, image_matrix = cache.image_rows(images)
  image_rows = view_rows[np.asarray(item_views, dtype=np.int64)]
  text_rows, text_matrix = cache.text_rows(texts)

  metrics: dict[str, float] = {}
  n_items = i = t = 0
  for suite, items in kept.items():
    if not items:
      logging.warning("%s/%s has no items; no accuracy reported", prefix, suite)
      continue
    k = len(items[0].options)
    if any(len(it.options) != k for it in items):
      raise BenchmarkFormatError(suite_path(dataset_dir, split, suite),
                                 "items have different numbers of caption options")
    n = len(items)
    scores = binary_choice.scores_from_rows(
        image_matrix, image_rows[i:i + n], text_matrix,
        text_rows[t:t + n * k].reshape(n, k))
    i, t = i + n, t + n * k
    metrics[f"{prefix}/{suite}"] = _accuracy(suite, scores)
    n_items += n
  metrics[f"{prefix}/n_items"] = float(n_items)
  metrics[f"{prefix}/missing_images"] = float(len(missing))
  return metrics, missing


def evaluate(encoder: encoder_lib.Encoder, dataset_dir: str, *,
             splits: Sequence[str] = ("test", "test_comp"),
             retrieval_split: str | None = "test", batch_size: int = 256,
             max_items: int | None = None,
             use_token_ids: bool | None = None,
             grounding: bool = True, knowledge: bool = True,
             knowledge_max_items: int | None = None) -> dict[str, float]:
  """Evaluates ``encoder`` on a prepared world dataset.

  Args:
    encoder: The model (`vlkg.evaluators.encoder.Encoder`). Nothing is cached
      between calls, so the trainer can call this after every few steps.
    dataset_dir: The directory ``vlkg.data.prepare.ensure_prepared`` returned.
    splits: Splits whose suites to score; each a key of `SPLIT_PREFIX`.
    retrieval_split: Split for retrieval, or None to skip it.
    batch_size: The largest batch passed to the encoder.
    max_items: For quick evaluations during training: score only the first
      ``max_items`` items (in scene order) of each suite; None or 0 (what a locked
      config, which cannot hold None in an int field, passes) scores all. Retrieval
      is never cut:
      its metrics depend on the gallery size, so a cut one would not be comparable
      with a full one; pass ``retrieval_split=None`` to skip it instead.
    use_token_ids: See `vlkg.evaluators.retrieval.evaluate_split`.
    grounding: Also ground the object phrases of ``test``
      (`vlkg.evaluators.grounding`, ``grounding/*``); skipped for an encoder
      without ``encode_image_tokens``. ``max_items`` caps it at that many images.
    knowledge: Also score the knowledge-VQA and entity-linking suites of the
      splits that have them (``val``, ``test``; `vlkg.evaluators.world_knowledge`).
    knowledge_max_items: Score only the first this many questions and captions of
      each (None or 0: ``max_items``).

  Returns:
    Metric name -> value, names as in the module docstring.

  Raises:
    ValueError: For an unknown split or a bad ``max_items`` / ``batch_size``.
    vlkg.data.records.DataError: If ``dataset_dir`` is not a prepared dataset.
  """
  for split in splits:
    if split not in SPLIT_PREFIX:
      raise ValueError(f"no metric prefix for split {split!r}; expected one of "
                       f"{sorted(SPLIT_PREFIX)}")
  for name, value in (("max_items", max_items),
                      ("knowledge_max_items", knowledge_max_items)):
    if value is not None and (isinstance(value, bool) or value < 0):
      raise ValueError(f"{name} must be None or >= 0, got {value!r}")
  max_items = max_items or None
  records.read_manifest(dataset_dir)  # a clear error for a wrong or half-built dir
  start = time.time()
  cache = common.EmbeddingCache(encoder, batch_size)
  metrics: dict[str, Any] = {}
  # Retrieval first: its images are the test suites' images, which then hit the
  # cache.
  if retrieval_split is not None:
    metrics.update(retrieval.evaluate_split(cache, dataset_dir, retrieval_split,
                                            use_token_ids=use_token_ids))
  for split in dict.fromkeys(splits):
    suites, missing = suites_and_missing(cache, dataset_dir, split,
                                         max_items=max_items)
    metrics.update(suites)
    if knowledge and split in world_knowledge.SPLITS:
      prefix = SPLIT_PREFIX[split]
      known, gone = world_knowledge.score(
          cache, dataset_dir, split, prefix,
          max_items=knowledge_max_items or max_items)
      metrics.update(known)
      metrics[f"{prefix}/missing_images"] = float(len(set(missing) | gone))
  if grounding and encoder_lib.has_image_tokens(encoder):
    metrics.update(grounding_lib.evaluate(encoder, dataset_dir, split="test",
                                          batch_size=batch_size, max_images=max_items,
                                          cache=cache))
  elif grounding:
    logging.info("world eval: the encoder has no encode_image_tokens; no grounding")
  logging.info("world eval: %d images and %d captions encoded in %.1fs",
               cache.images_encoded, cache.texts_encoded, time.time() - start)
  return metrics
