"""SugarCrepe: file format and the official correctness rule.

SugarCrepe is the benchmark of Hsieh, Zhang, Ma, Kembhavi and Krishna, "SugarCrepe:
Fixing Hackable Benchmarks for Vision-Language Compositionality", NeurIPS 2023 Datasets
and Benchmarks (code: github.com/RAIVNLab/sugar-crepe). This module is our own
implementation, written after reading the official ``main_eval.py`` and ``data/``:

* Seven files ``{category}.json`` (categories in `SUGARCREPE_CATEGORIES`, in the order
  of ``main_eval.py``), each a JSON object keyed ``"0"``, ``"1"``, ... whose values
  are ``{"filename", "caption", "negative_caption"}``; ``filename`` is a COCO-2017
  val image name (``000000252219.jpg``). An early release of the repository named
  three files ``add_ent``/``replace_ent``/``swap_ent``; ``main_eval.py`` reads the
  ``*_obj`` names, which we follow.
* ``text_retrieval`` returns 1 iff ``pos_score > neg_score`` (strict, so a tie is
  wrong), and the metric of a category is ``correct / len(file)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable
from typing import Any

from vlkg import files
from vlkg.data.benchmarks.choice import ChoiceRule
from vlkg.data.benchmarks.errors import (
    BenchmarkFormatError,
    load_json,
    require_str,
    type_name,
)

SUGARCREPE_CATEGORIES: tuple[str, ...] = (
    "add_obj",
    "add_att",
    "replace_obj",
    "replace_att",
    "replace_rel",
    "swap_obj",
    "swap_att",
)
# Options [caption, negative_caption]; ``pos_score > neg_score`` makes a tie wrong.
TIE_RULE = ChoiceRule(answer=0, ties="wrong")
# Names used by an early release of the official repository.
_LEGACY_NAMES = ("add_ent", "replace_ent", "swap_ent")
_KEY_RE = re.compile(r"0|[1-9][0-9]*")


@dataclasses.dataclass(frozen=True)
class SugarCrepeItem:
  """One SugarCrepe test case.

  Attributes:
    filename: The COCO-2017 val image file name.
    caption: The positive caption.
    negative_caption: The hard negative caption.
  """

  filename: str
  caption: str
  negative_caption: str


def read_sugarcrepe_file(path: str | os.PathLike[str]) -> list[SugarCrepeItem]:
  """Reads one official SugarCrepe category file.

  Fields other than the three official ones are ignored.

  Args:
    path: e.g. ``data/swap_att.json``.

  Returns:
    The items, sorted by their key as an integer.

  Raises:
    FileNotFoundError: If the file does not exist.
    BenchmarkFormatError: If the file is not valid JSON, is not an object keyed by
      non-negative integers written in decimal, or an item lacks a field or has one
      that is not a string; the message names the file, the key and the field.
  """
  data = load_json(path)
  if not isinstance(data, dict):
    raise BenchmarkFormatError(
        path, f"top level must be a JSON object keyed '0', '1', ..., got "
        f"{type_name(data)}")
  keyed: list[tuple[int, SugarCrepeItem]] = []
  for key, record in data.items():
    if not _KEY_RE.fullmatch(key):
      raise BenchmarkFormatError(
          path, "key must be a non-negative integer in decimal", item=key)
    keyed.append((int(key), SugarCrepeItem(
        filename=require_str(record, "filename", path, key),
        caption=require_str(record, "caption", path, key),
        negative_caption=require_str(record, "negative_caption", path, key),
    )))
  keyed.sort(key=lambda pair: pair[0])
  return [item for _, item in keyed]


def read_sugarcrepe_dir(
    folder: str | os.PathLike[str]) -> dict[str, list[SugarCrepeItem]]:
  """Reads whichever of the seven category files exist in a folder.

  Args:
    folder: The official ``data/`` folder or one in the same layout.

  Returns:
    Category name -> items, in `SUGARCREPE_CATEGORIES` order, for the files found.

  Raises:
    BenchmarkFormatError: If none of the seven files exists (the message names the
      folder and the expected names) or a file is malformed.
  """
  found: dict[str, list[SugarCrepeItem]] = {}
  for category in SUGARCREPE_CATEGORIES:
    path = os.path.join(folder, f"{category}.json")
    if files.isfile(path):
      found[category] = read_sugarcrepe_file(path)
  if not found:
    expected = ", ".join(f"{c}.json" for c in SUGARCREPE_CATEGORIES)
    problem = f"no SugarCrepe file found; expected any of {expected}"
    legacy = [n for n in _LEGACY_NAMES
              if files.isfile(os.path.join(folder, f"{n}.json"))]
    if legacy:
      problem += (f" (found early-release names {legacy}; the official "
                  "main_eval.py reads *_obj instead of *_ent)")
    raise BenchmarkFormatError(folder, problem)
  return found


def write_sugarcrepe_file(path: str | os.PathLike[str],
                          items: Iterable[SugarCrepeItem]) -> None:
  """Writes items in the official layout, keyed ``"0"``, ``"1"``, ... in order.

  Args:
    path: The output JSON file.
    items: The items to write.
  """
  data: dict[str, Any] = {
      str(i): {
          "filename": item.filename,
          "caption": item.caption,
          "negative_caption": item.negative_caption,
      }
      for i, item in enumerate(items)
  }
  with files.open(path, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=4)
    f.write("\n")


def sugarcrepe_correct(score_pos: float, score_neg: float) -> bool:
  """Whether SugarCrepe counts an item as correct.

  Official ``text_retrieval``: ``1 if pos_score > neg_score else 0``; a tie (or a
  NaN) is wrong.

  Args:
    score_pos: The model's score for the positive caption.
    score_neg: The model's score for the negative caption.

  Returns:
    True iff ``score_pos > score_neg``.
  """
  return bool(TIE_RULE.correct([score_pos, score_neg]))
