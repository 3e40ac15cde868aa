"""Winoground: file format, image paths and the official text / image / group scores.

Winoground is the benchmark of Thrush, Jiang, Bartolo, Singh, Williams, Kiela and Ross,
"Winoground: Probing Vision and Language Models for Visio-Linguistic
Compositionality", CVPR 2022 (data and evaluation notebook: huggingface.co/datasets/
facebook/winoground). This module is our own implementation, written after reading
the dataset card and the official evaluation; what it matches:

* ``data/examples.jsonl``: one JSON object per line with ``id`` (int), ``image_0``,
  ``image_1`` (image names such as ``ex_0_img_0``), ``caption_0``, ``caption_1``,
  ``tag``, ``secondary_tag``, ``num_main_preds`` (int) and ``collapsed_tag``. The
  images are ``data/images/<image_k>.png``, i.e. ``images/`` beside the jsonl.
* Caption ``c`` and image ``i`` of an item get one score ``s(c, i)``; the paper's
  metrics and the notebook's ``text_correct`` / ``image_correct`` /
  ``group_correct`` are (strict ``>``, so a tie fails):

  - text score: ``s(c0, i0) > s(c1, i0)`` and ``s(c1, i1) > s(c0, i1)``;
  - image score: ``s(c0, i0) > s(c0, i1)`` and ``s(c1, i1) > s(c1, i0)``;
  - group score: both hold.

  Each metric is the fraction of items for which it holds.

The four tag fields describe an item but play no part in the scores, so they are
optional here (None when absent) and type-checked when present; the files of the
official release always have them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlkg import files
from vlkg.data.benchmarks.choice import Ties, choice_correct
from vlkg.data.benchmarks.errors import (
    BenchmarkFormatError,
    load_json,
    require_field,
    require_str,
    type_name,
)

IMAGE_DIR = "images"
IMAGE_SUFFIX = ".png"
_OPTIONAL_STR = ("tag", "secondary_tag", "collapsed_tag")
# Every comparison of the text and image scores is a strict ``>``.
TIES: Ties = "wrong"


@dataclasses.dataclass(frozen=True)
class WinogroundItem:
  """One Winoground example: two images and two captions made of the same words.

  Attributes:
    id: The example id.
    image_0: Name of the image that ``caption_0`` describes (no folder, no suffix).
    image_1: Name of the image that ``caption_1`` describes.
    caption_0: The caption of ``image_0``.
    caption_1: The caption of ``image_1``, the same words in another order.
    tag: The linguistic tag (e.g. ``"Noun"``), or None.
    secondary_tag: e.g. ``"Symbolic"``, possibly empty, or None.
    num_main_preds: The number of main predicates, or None.
    collapsed_tag: ``"Object"``, ``"Relation"`` or ``"Both"``, or None.
  """

  id: int
  image_0: str
  image_1: str
  caption_0: str
  caption_1: str
  tag: str | None = None
  secondary_tag: str | None = None
  num_main_preds: int | None = None
  collapsed_tag: str | None = None


def _require_int(record: dict[str, Any], field: str, path: str | os.PathLike[str],
                 index: int) -> int:
  value = require_field(record, field, path, index)
  # A JSON true/false is a Python int subclass, but not an id or a count.
  if isinstance(value, bool) or not isinstance(value, int):
    raise BenchmarkFormatError(
        path, f"field {field!r} must be an integer, got {type_name(value)}",
        item=index, field=field)
  return value


def _parse_item(record: Any, path: str | os.PathLike[str],
                index: int) -> WinogroundItem:
  item_id = _require_int(record, "id", path, index)
  fields = {f: require_str(record, f, path, index)
            for f in ("image_0", "image_1", "caption_0", "caption_1")}
  optional: dict[str, Any] = {}
  for field in _OPTIONAL_STR:
    if record.get(field) is not None:
      optional[field] = require_str(record, field, path, index)
  if record.get("num_main_preds") is not None:
    optional["num_main_preds"] = _require_int(record, "num_main_preds", path, index)
  return WinogroundItem(id=item_id, **fields, **optional)


def _read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
  records = []
  try:
    with files.open(path, "r", encoding="utf-8") as f:
      lines = f.readlines()
  except UnicodeDecodeError as e:
    raise BenchmarkFormatError(path, f"not UTF-8 text ({e.reason})") from e
  for line_no, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      # The item index is the record's position, which is what other errors name.
      raise BenchmarkFormatError(
          path, f"line {line_no}: invalid JSON ({e.msg} at column {e.colno})",
          item=len(records)) from e
  return records


def read_winoground(path: str | os.PathLike[str]) -> list[WinogroundItem]:
  """Reads the official ``examples.jsonl``, or a JSON list of the same objects.

  A file whose name ends in ``.jsonl`` is read one object per line (blank lines
  skipped); any other file must hold one JSON list. Fields beyond the nine official
  ones are ignored.

  Args:
    path: The annotation file.

  Returns:
    The items in file order.

  Raises:
    FileNotFoundError: If the file does not exist.
    BenchmarkFormatError: If a line or the file is not valid JSON (e.g. truncated),
      the top level is not a list, an item lacks one of ``id``, ``image_0``,
      ``image_1``, ``caption_0``, ``caption_1``, or a field has the wrong type; the
      message names the file, the item and the field.
  """
  if os.fspath(path).endswith(".jsonl"):
    records = _read_jsonl(path)
  else:
    records = load_json(path)
    if not isinstance(records, list):
      raise BenchmarkFormatError(
          path, f"top level must be a JSON list (or use a .jsonl file), got "
          f"{type_name(records)}")
  return [_parse_item(record, path, i) for i, record in enumerate(records)]


def image_path(image_root: str | os.PathLike[str], name: str) -> str:
  """Where the official layout keeps image ``name``: ``<root>/images/<name>.png``.

  If ``<root>`` has no ``images`` folder, ``<root>`` itself is taken to be the
  image folder, so both the data folder and its ``images/`` may be passed.
  """
  image_dir = os.path.join(image_root, IMAGE_DIR)
  if not files.isdir(image_dir):
    image_dir = os.fspath(image_root)
  return os.path.join(image_dir, name + IMAGE_SUFFIX)


def _check_scores(scores: Any) -> np.ndarray:
  scores = np.asarray(scores, dtype=np.float64)
  if scores.shape[-2:] != (2, 2):
    raise ValueError(f"scores must be [..., 2, 2] indexed [caption, image], got shape "
                     f"{scores.shape}")
  return scores


def text_correct(scores: Any) -> np.ndarray:
  """The text score per item: each image prefers its own caption, strictly.

  Args:
    scores: ``[..., 2, 2]``, ``scores[..., c, i] = s(caption_c, image_i)``.

  Returns:
    bool ``[...]``: ``s(c0, i0) > s(c1, i0)`` and ``s(c1, i1) > s(c0, i1)``.
  """
  s = _check_scores(scores)
  # Image i chooses among the captions s[..., :, i]; its own caption is c = i.
  return (choice_correct(s[..., :, 0], 0, TIES)
          & choice_correct(s[..., :, 1], 1, TIES))


def image_correct(scores: Any) -> np.ndarray:
  """The image score per item: each caption prefers its own image, strictly.

  Args:
    scores: ``[..., 2, 2]`` as in `text_correct`.

  Returns:
    bool ``[...]``: ``s(c0, i0) > s(c0, i1)`` and ``s(c1, i1) > s(c1, i0)``.
  """
  s = _check_scores(scores)
  # Caption c chooses among the images s[..., c, :]; its own image is i = c.
  return (choice_correct(s[..., 0, :], 0, TIES)
          & choice_correct(s[..., 1, :], 1, TIES))


def group_correct(scores: Any) -> np.ndarray:
  """The group score per item: both the text and the image score hold."""
  return text_correct(scores) & image_correct(scores)


def winoground_scores(scores: Sequence[Any] | np.ndarray) -> dict[str, float]:
  """The three Winoground metrics over items.

  Args:
    scores: ``[N, 2, 2]`` with ``scores[n, c, i] = s(caption_c, image_i)`` of item n.

  Returns:
    ``{"text": ..., "image": ..., "group": ...}``, fractions in [0, 1].

  Raises:
    ValueError: If ``scores`` is not ``[N, 2, 2]`` with N >= 1 or holds a NaN (it
      would silently fail every comparison).
  """
  s = _check_scores(scores)
  if s.ndim != 3 or s.shape[0] == 0:
    raise ValueError(f"scores must be [N, 2, 2] with N >= 1, got shape {s.shape}")
  if np.isnan(s).any():
    raise ValueError("scores hold a NaN")
  return {"text": float(np.mean(text_correct(s))),
          "image": float(np.mean(image_correct(s))),
          "group": float(np.mean(group_correct(s)))}
