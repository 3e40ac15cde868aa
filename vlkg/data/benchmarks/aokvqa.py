"""A-OKVQA: its one file per split, read, and the official scoring rules.

A-OKVQA is the benchmark of Schwenk, Khandelwal, Clark, Marino and Mottaghi,
"A-OKVQA: A Benchmark for Visual Question Answering using World Knowledge", ECCV 2022
(github.com/allenai/aokvqa). Each split is ``aokvqa_v1p0_{split}.json``, a JSON list
of ``{"split", "image_id", "question_id", "question", "choices",
"correct_choice_idx", "direct_answers", "difficult_direct_answer", "rationales"}``;
images are COCO 2017, ``{root}/{split}2017/{image_id:012d}.jpg`` (the repository's
``get_coco_path``). The test split ships without ``correct_choice_idx`` and
``direct_answers`` (its answers are private), so it cannot be scored here.

Scoring (the repository's ``evaluation/eval_predictions.py``):

* multiple choice: the prediction is one of the four ``choices``; correct iff it is
  ``choices[correct_choice_idx]``; every question counts;
* direct answer: the questions marked ``difficult_direct_answer`` are left out; the
  official script scores ``min(1, matches / 3)`` with the ten ``direct_answers``
  compared as raw strings (`official_direct_answer_accuracy`), while the paper speaks
  of the standard VQA metric, the leave-one-out mean over normalised answers
  (`vlkg.evaluators.vqa.accuracy`). Both are reported
  (`vlkg.evaluators.knowledge_vqa.evaluate_aokvqa`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from vlkg.data.benchmarks.errors import (BenchmarkFormatError, load_json, require_field,
                                         require_str, type_name)


@dataclasses.dataclass(frozen=True)
class AokvqaItem:
  """One A-OKVQA question.

  Attributes:
    question_id: The question's id (a string in A-OKVQA).
    image_id: The COCO 2017 image id.
    split: The item's ``split`` ("train", "val", "test").
    question: The question text.
    choices: The multiple-choice options.
    correct_choice_idx: The index of the right choice.
    direct_answers: The ten free-form human answers.
    difficult_direct_answer: Left out of direct-answer scoring when true.
  """

  question_id: str
  image_id: int
  split: str
  question: str
  choices: tuple[str, ...]
  correct_choice_idx: int
  direct_answers: tuple[str, ...]
  difficult_direct_answer: bool


def coco2017_image_name(image_id: int) -> str:
  """COCO 2017's file name: ``000000123456.jpg``."""
  return f"{image_id:012d}.jpg"


def _check_answered(record: Any, field: str, path: str, i: int) -> None:
  if isinstance(record, dict) and field not in record:
    raise BenchmarkFormatError(
        path, f"missing field {field!r}: the test split's answers are private, so "
        "only train and val can be scored", item=i, field=field)


def _strings(record: Any, field: str, path: str, i: int) -> tuple[str, ...]:
  value = require_field(record, field, path, i)
  if (not isinstance(value, list) or not value
      or not all(isinstance(v, str) for v in value)):
    raise BenchmarkFormatError(path, f"field {field!r} must be a non-empty list of "
                               "strings", item=i, field=field)
  return tuple(value)


def read_aokvqa(path: str | os.PathLike[str]) -> list[AokvqaItem]:
  """Reads ``aokvqa_v1p0_{split}.json``.

  Args:
    path: The split's file.

  Returns:
    The items in file order.

  Raises:
    FileNotFoundError: If the file does not exist.
    BenchmarkFormatError: Naming the file, the item index and the field, for a
      malformed item, a repeated question_id, a ``correct_choice_idx`` outside the
      choices, or a file without answers (the test split).
  """
  path = os.fspath(path)
  data = load_json(path)
  if not isinstance(data, list):
    raise BenchmarkFormatError(path, f"top level must be a JSON list, got "
                               f"{type_name(data)}")
  items, seen = [], set()
  for i, record in enumerate(data):
    qid = require_str(record, "question_id", path, i)
    if qid in seen:
      raise BenchmarkFormatError(path, f"question_id {qid!r} appears twice", item=i,
                                 field="question_id")
    seen.add(qid)
    image_id = require_field(record, "image_id", path, i)
    if isinstance(image_id, bool) or not isinstance(image_id, int):
      raise BenchmarkFormatError(path, f"field 'image_id' must be an integer, got "
                                 f"{type_name(image_id)}", item=i, field="image_id")
    choices = _strings(record, "choices", path, i)
    _check_answered(record, "correct_choice_idx", path, i)
    _check_answered(record, "direct_answers", path, i)
    index = record["correct_choice_idx"]
    if isinstance(index, bool) or not isinstance(index, int) or not (
        0 <= index < len(choices)):
      raise BenchmarkFormatError(
          path, f"field 'correct_choice_idx' must be an index into the "
          f"{len(choices)} choices, got {index!r}", item=i, field="correct_choice_idx")
    difficult = record.get("difficult_direct_answer", False)
    if not isinstance(difficult, bool):
      raise BenchmarkFormatError(path, "field 'difficult_direct_answer' must be a "
                                 f"boolean, got {type_name(difficult)}", item=i,
                                 field="difficult_direct_answer")
    split = record.get("split", "")
    items.append(AokvqaItem(
        question_id=qid, image_id=image_id,
        split=split if isinstance(split, str) else "",
        question=require_str(record, "question", path, i), choices=choices,
        correct_choice_idx=index,
        direct_answers=_strings(record, "direct_answers", path, i),
        difficult_direct_answer=difficult))
  return items


def official_direct_answer_accuracy(prediction: str,
                                    direct_answers: Sequence[str]) -> float:
  """The A-OKVQA script's direct-answer score: ``min(1, exact matches / 3)``."""
  return min(1.0, sum(prediction == a for a in direct_answers) / 3.0)
