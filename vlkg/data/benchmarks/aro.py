"""ARO VG-Relation and VG-Attribution: file format, image crop and official metrics.

ARO is the benchmark of Yuksekgonul, Bianchi, Kalluri, Jurafsky and Zou, "When and why
vision-language models behave like bags-of-words, and what to do about it?", ICLR 2023
(code: github.com/mertyg/vision-language-models-are-bows). This module is our own
implementation, written after reading the official code; the behaviours it matches are:

* File layout (``dataset_zoo/aro_datasets.py``, ``VG_Relation`` / ``VG_Attribution``):
  a JSON list of objects with ``image_path``, ``bbox_x``, ``bbox_y``, ``bbox_w``,
  ``bbox_h``, ``true_caption``, ``false_caption``; VG-Relation items carry
  ``relation_name`` and VG-Attribution items carry ``attributes`` (two strings). The
  official VG-Attribution loader never reads ``relation_name``, so it is optional
  there. ``image_path`` is relative to the ``images`` folder of the ARO root.
* Crop (``__getitem__``): ``PIL.Image.crop((x, y, x + w, y + h))``. Pillow's
  ``Image._crop`` turns each coordinate into ``int(round(v))`` (Python's round, half
  to even) and fills the part of the box outside the image with zeros;
  `crop_to_bbox` does the same in numpy.
* Choice (``evaluate_scores``): the options are ``[false_caption, true_caption]`` and
  an item is correct when ``np.argmax`` over them is 1, so a tie picks index 0 (the
  false caption) and counts as wrong.
* VG-Relation macro accuracy: ``evaluate_scores`` records the mean correctness per
  relation (``np.unique`` over ``relation_name``, no minimum count); the official
  notebook "Replicate ARO! VG-Relation, VG-Attribution" then drops a fixed list of
  relations and prints the unweighted mean of the remaining per-relation accuracies.
* VG-Attribution macro accuracy: ``evaluate_scores`` groups items by
  ``f"{attributes[0]}_{attributes[1]}"``, skips groups with fewer than 25 items, and
  the notebook prints the unweighted mean of the per-group accuracies (no list of
  dropped pairs).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from vlkg import files
from vlkg.data.benchmarks.choice import ChoiceRule
from vlkg.data.benchmarks.errors import (
    BenchmarkFormatError,
    load_json,
    require_field,
    require_str,
    type_name,
)

AroKind = Literal["relation", "attribution"]
KINDS: tuple[str, ...] = ("relation", "attribution")
BBOX_FIELDS: tuple[str, ...] = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")
DROPPED_RELATIONS_FILE = "aro_vg_relation_dropped.json"
VG_ATTRIBUTION_MIN_COUNT = 25
# Options [false_caption, true_caption]; argmax's first maximum makes a tie wrong.
TIE_RULE = ChoiceRule(answer=1, ties="wrong")


@dataclasses.dataclass(frozen=True)
class AroItem:
  """One ARO VG-Relation or VG-Attribution test case.

  Attributes:
    image_path: The image path as stored in the file (relative to ``images/``).
    bbox: ``(x, y, w, h)`` in pixels, floats.
    true_caption: The caption that matches the cropped image.
    false_caption: The caption with the two relation arguments (VG-Relation) or the
      two attributes (VG-Attribution) swapped.
    relation_name: The relation (VG-Relation); None when the file has none.
    attributes: The two attributes (VG-Attribution); None when the file has none.
  """

  image_path: str
  bbox: tuple[float, float, float, float]
  true_caption: str
  false_caption: str
  relation_name: str | None = None
  attributes: tuple[str, str] | None = None


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _read_number(record: dict[str, Any], field: str, path: str | os.PathLike[str],
                 index: int) -> float:
  value = require_field(record, field, path, index)
  # bool is an int subclass in Python; a JSON true/false is not a coordinate.
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise BenchmarkFormatError(
        path, f"field {field!r} must be a number, got {type_name(value)}",
        item=index, field=field)
  if not math.isfinite(value):
    raise BenchmarkFormatError(
        path, f"field {field!r} must be finite, got {value!r}",
        item=index, field=field)
  return float(value)


def _read_attributes(value: Any, path: str | os.PathLike[str],
                     index: int) -> tuple[str, str]:
  if (not isinstance(value, list) or len(value) != 2
      or not all(isinstance(a, str) for a in value)):
    raise BenchmarkFormatError(
        path, f"field 'attributes' must be a list of two strings, got {value!r}",
        item=index, field="attributes")
  return (value[0], value[1])


def _parse_item(record: Any, kind: str, path: str | os.PathLike[str],
                index: int) -> AroItem:
  image_path = require_str(record, "image_path", path, index)
  bbox = tuple(_read_number(record, f, path, index) for f in BBOX_FIELDS)
  true_caption = require_str(record, "true_caption", path, index)
  false_caption = require_str(record, "false_caption", path, index)

  relation_name = None
  if kind == "relation":
    relation_name = require_str(record, "relation_name", path, index)
  elif record.get("relation_name") is not None:
    relation_name = require_str(record, "relation_name", path, index)

  attributes = None
  if kind == "attribution":
    attributes = _read_attributes(
        require_field(record, "attributes", path, index), path, index)
  elif record.get("attributes") is not None:
    attributes = _read_attributes(record["attributes"], path, index)

  return AroItem(
      image_path=image_path,
      bbox=bbox,  # type: ignore[arg-type]
      true_caption=true_caption,
      false_caption=false_caption,
      relation_name=relation_name,
      attributes=attributes,
  )


def read_aro(path: str | os.PathLike[str], kind: AroKind) -> list[AroItem]:
  """Reads an official ARO VG-Relation or VG-Attribution annotation file.

  Fields other than the official ones (e.g. an image id) are ignored.

  Args:
    path: ``visual_genome_relation.json`` / ``visual_genome_attribution.json`` or a
      file in the same layout.
    kind: ``"relation"`` (requires ``relation_name``) or ``"attribution"``
      (requires ``attributes``, a list of two strings).

  Returns:
    The items in file order.

  Raises:
    ValueError: If ``kind`` is unknown.
    FileNotFoundError: If the file does not exist.
    BenchmarkFormatError: If the file is not valid JSON, is not a list, or an item
      lacks a field or has one of the wrong type; the message names the file, the
      item index and the field.
  """
  _check_kind(kind)
  data = load_json(path)
  if not isinstance(data, list):
    raise BenchmarkFormatError(
        path, f"top level must be a JSON list, got {type_name(data)}")
  return [_parse_item(record, kind, path, i) for i, record in enumerate(data)]


def _item_record(item: AroItem, kind: str, path: str | os.PathLike[str],
                 index: int) -> dict[str, Any]:
  if len(item.bbox) != 4:
    raise BenchmarkFormatError(
        path, f"bbox must have 4 numbers, got {item.bbox!r}", item=index,
        field="bbox")
  record: dict[str, Any] = {"image_path": item.image_path}
  for field, value in zip(BBOX_FIELDS, item.bbox):
    value = float(value)
    if not math.isfinite(value):
      raise BenchmarkFormatError(
          path, f"field {field!r} must be finite, got {value!r}", item=index,
          field=field)
    # Whole numbers are written as JSON integers, as in the official files.
    record[field] = int(value) if value.is_integer() else value
  record["true_caption"] = item.true_caption
  record["false_caption"] = item.false_caption
  if kind == "relation" and item.relation_name is None:
    raise BenchmarkFormatError(
        path, "missing field 'relation_name' (needed for kind 'relation')",
        item=index, field="relation_name")
  if kind == "attribution" and item.attributes is None:
    raise BenchmarkFormatError(
        path, "missing field 'attributes' (needed for kind 'attribution')",
        item=index, field="attributes")
  if item.relation_name is not None:
    record["relation_name"] = item.relation_name
  if item.attributes is not None:
    record["attributes"] = list(item.attributes)
  return record


def write_aro(path: str | os.PathLike[str], items: Iterable[AroItem],
              kind: AroKind) -> None:
  """Writes items in the official ARO layout, readable by `read_aro` and ARO's code.

  Args:
    path: The output JSON file.
    items: The items to write.
    kind: ``"relation"`` (each item needs ``relation_name``) or ``"attribution"``
      (each item needs ``attributes``).

  Raises:
    ValueError: If ``kind`` is unknown.
    BenchmarkFormatError: If an item lacks what ``kind`` needs; nothing is written.
  """
  _check_kind(kind)
  records = [_item_record(item, kind, path, i) for i, item in enumerate(items)]
  with files.open(path, "w", encoding="utf-8") as f:
    json.dump(records, f, indent=1)
    f.write("\n")


def load_dropped_relations(
    path: str | os.PathLike[str] | None = None) -> frozenset[str]:
  """Loads the relations that the official notebook drops from VG-Relation.

  Args:
    path: A JSON file ``{"source": ..., "relations": [...]}``; defaults to the copy
      shipped as package data (``vlkg/data/benchmarks/aro_vg_relation_dropped.json``).

  Returns:
    The relation names.

  Raises:
    BenchmarkFormatError: If the file is not in that layout.
  """
  if path is None:
    resource = (importlib.resources.files("vlkg.data.benchmarks")
                / DROPPED_RELATIONS_FILE)
    with importlib.resources.as_file(resource) as resolved:
      return load_dropped_relations(resolved)
  data = load_json(path)
  if not isinstance(data, dict):
    raise BenchmarkFormatError(
        path, f"top level must be a JSON object, got {type_name(data)}")
  if "relations" not in data:
    raise BenchmarkFormatError(path, "missing field 'relations'", field="relations")
  relations = data["relations"]
  if (not isinstance(relations, list)
      or not all(isinstance(r, str) for r in relations)):
    raise BenchmarkFormatError(
        path, "field 'relations' must be a list of strings", field="relations")
  return frozenset(relations)


def aro_choice_correct(score_false: float, score_true: float) -> bool:
  """Whether ARO counts an item as correct, given the two caption scores.

  The official ``evaluate_scores`` takes ``np.argmax`` over
  ``[score_false, score_true]`` and counts the item correct when the argmax is 1; as
  argmax returns the first maximum, a tie is wrong. A NaN score is counted wrong.

  Args:
    score_false: The model's score for the false caption (option 0).
    score_true: The model's score for the true caption (option 1).

  Returns:
    True iff ``score_true > score_false``.
  """
  return bool(TIE_RULE.correct([score_false, score_true]))


def _check_lengths(items: Sequence[AroItem], correct: Sequence[bool]) -> np.ndarray:
  mask = np.asarray(correct, dtype=bool).reshape(-1)
  if mask.shape[0] != len(items):
    raise ValueError(
        f"got {len(items)} items but {mask.shape[0]} correctness values")
  return mask


def _group_accuracy(keys: Sequence[str],
                    mask: np.ndarray) -> dict[str, tuple[float, int]]:
  groups: dict[str, list[bool]] = {}
  for key, ok in zip(keys, mask.tolist()):
    groups.setdefault(key, []).append(ok)
  return {key: (float(np.mean(v)), len(v)) for key, v in sorted(groups.items())}


def vg_relation_macro_accuracy(
    items: Sequence[AroItem],
    correct: Sequence[bool],
    dropped: Iterable[str] | None = None,
) -> tuple[float, dict[str, float], int]:
  """VG-Relation macro accuracy as the official notebook computes it.

  Official: ``VG_Relation.evaluate_scores`` returns one record per relation
  (``np.unique`` of ``relation_name``) with the mean correctness of its items, with
  no minimum count; the notebook removes the records whose relation is in its fixed
  list and prints ``df.Accuracy.mean()``, the unweighted mean over the remaining
  relations. Each item thus weighs ``1 / count(relation)``, not ``1 / N``.

  Args:
    items: The items, each with ``relation_name``.
    correct: One bool per item, e.g. from `aro_choice_correct`.
    dropped: Relations to leave out; None means the packaged official list
      (`load_dropped_relations`). Pass ``()`` to keep every relation.

  Returns:
    ``(macro_accuracy, per_relation, n_items)``: the mean of the per-relation
    accuracies, the accuracy of each kept relation (sorted by name), and the number
    of items in the kept relations.

  Raises:
    ValueError: If the lengths differ, an item has no ``relation_name``, or no
      relation is left after dropping.
  """
  mask = _check_lengths(items, correct)
  dropped_set = load_dropped_relations() if dropped is None else frozenset(dropped)
  names = []
  for i, item in enumerate(items):
    if item.relation_name is None:
      raise ValueError(f"item {i} has no relation_name")
    names.append(item.relation_name)
  groups = {k: v for k, v in _group_accuracy(names, mask).items()
            if k not in dropped_set}
  if not groups:
    raise ValueError("no relation left after dropping; the macro accuracy is undefined")
  per_relation = {k: acc for k, (acc, _) in groups.items()}
  n_items = sum(n for _, n in groups.values())
  return float(np.mean(list(per_relation.values()))), per_relation, n_items


def vg_attribution_macro_accuracy(
    items: Sequence[AroItem],
    correct: Sequence[bool],
    min_count: int = VG_ATTRIBUTION_MIN_COUNT,
) -> tuple[float, dict[str, float], int]:
  """VG-Attribution macro accuracy as the official code computes it.

  Official: ``VG_Attribution.evaluate_scores`` groups items by
  ``f"{attributes[0]}_{attributes[1]}"`` (order as stored, so ``a_b`` and ``b_a``
  are different groups), skips groups with fewer than 25 items, and the notebook
  prints the unweighted mean of the per-group accuracies.

  Args:
    items: The items, each with ``attributes``.
    correct: One bool per item.
    min_count: Groups with fewer items are left out (official: 25).

  Returns:
    ``(macro_accuracy, per_pair, n_items)``: the mean of the per-pair accuracies,
    the accuracy of each kept pair (sorted by key), and the number of items in the
    kept pairs.

  Raises:
    ValueError: If the lengths differ, an item has no ``attributes``, or no pair
      has ``min_count`` items.
  """
  mask = _check_lengths(items, correct)
  keys = []
  for i, item in enumerate(items):
    if item.attributes is None:
      raise ValueError(f"item {i} has no attributes")
    keys.append(f"{item.attributes[0]}_{item.attributes[1]}")
  groups = {k: v for k, v in _group_accuracy(keys, mask).items() if v[1] >= min_count}
  if not groups:
    raise ValueError(
        f"no attribute pair has >= {min_count} items; the macro accuracy is undefined")
  per_pair = {k: acc for k, (acc, _) in groups.items()}
  n_items = sum(n for _, n in groups.values())
  return float(np.mean(list(per_pair.values()))), per_pair, n_items


def crop_to_bbox(image: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
  """Crops an image to an ARO box exactly as ``PIL.Image.crop`` does in ARO.

  ARO calls ``image.crop((x, y, x + w, y + h))``. Pillow rejects a box whose right
  (lower) edge is left of (above) its left (upper) edge, then rounds each of the four
  coordinates with Python's ``round`` (half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2)
  and crops; pixels of the box that lie outside the image are zero.

  Args:
    image: ``[H, W]`` or ``[H, W, C]`` array.
    bbox: ``(x, y, w, h)`` in pixels.

  Returns:
    ``[y1 - y0, x1 - x0(, C)]`` array of ``image.dtype`` with the rounded box
    ``(x0, y0, x1, y1)``.

  Raises:
    ValueError: If the image is not 2-D or 3-D, the box has not 4 finite numbers,
      or ``w`` or ``h`` is negative.
  """
  image = np.asarray(image)
  if image.ndim not in (2, 3):
    raise ValueError(f"image must be [H, W] or [H, W, C], got shape {image.shape}")
  if len(bbox) != 4:
    raise ValueError(f"bbox must be (x, y, w, h), got {bbox!r}")
  x, y, w, h = (float(v) for v in bbox)
  if not all(math.isfinite(v) for v in (x, y, w, h)):
    raise ValueError(f"bbox must be finite, got {bbox!r}")
  box = (x, y, x + w, y + h)
  if box[2] < box[0]:
    raise ValueError(f"bbox width is negative: {bbox!r}")
  if box[3] < box[1]:
    raise ValueError(f"bbox height is negative: {bbox!r}")
  x0, y0, x1, y1 = (int(round(v)) for v in box)
  height, width = image.shape[:2]
  out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], dtype=image.dtype)
  # The part of the box inside the image, in image and in output coordinates.
  sx0, sx1 = max(x0, 0), min(x1, width)
  sy0, sy1 = max(y0, 0), min(y1, height)
  if sx0 < sx1 and sy0 < sy1:
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
  return out
