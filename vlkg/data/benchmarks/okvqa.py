"""OK-VQA: its two files (the VQA format), read and written.

OK-VQA is the benchmark of Marino, Rastegari, Farhadi and Mottaghi, "OK-VQA: A Visual
Question Answering Benchmark Requiring External Knowledge", CVPR 2019
(okvqa.allenai.org). It ships in the VQA format of Antol et al., ICCV 2015:

* questions, ``OpenEnded_mscoco_{split}2014_questions.json``:
  ``{"questions": [{"question_id", "question", "image_id"}], "data_subtype":
  "val2014", ...}``;
* annotations, ``mscoco_{split}2014_annotations.json``: ``{"annotations":
  [{"question_id", "image_id", "answers": [{"answer", "answer_id", ...}] * 10,
  "question_type", "answer_type", ...}]}``;
* images: COCO 2014, ``{root}/{split}2014/COCO_{split}2014_{image_id:012d}.jpg``.

Items are scored with the official VQA accuracy (`vlkg.evaluators.vqa`). The world's
knowledge-VQA suite is written with `write_okvqa` and read back with `read_okvqa`;
its images keep the world's own names (`vlkg.data.world.knowledge_benchmarks`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from vlkg import files
from vlkg.data.benchmarks.errors import (BenchmarkFormatError, load_json, require_field,
                                         require_str, type_name)

QUESTIONS_SUFFIX = "_questions.json"
ANNOTATIONS_SUFFIX = "_annotations.json"


@dataclasses.dataclass(frozen=True)
class VqaItem:
  """One question with its human answers.

  Attributes:
    question_id: The question's id.
    image_id: The image's id (COCO's, for OK-VQA).
    question: The question text.
    answers: The human answers as stored (OK-VQA: ten).
    question_type: The annotation's ``question_type``, if any.
  """

  question_id: int
  image_id: int
  question: str
  answers: tuple[str, ...]
  question_type: str | None = None


def coco_image_name(subtype: str, image_id: int) -> str:
  """COCO 2014's file name: ``COCO_val2014_000000123456.jpg``."""
  return f"COCO_{subtype}_{image_id:012d}.jpg"


def _require_int(record: Any, field: str, path: str, item: int) -> int:
  value = require_field(record, field, path, item)
  if isinstance(value, bool) or not isinstance(value, int):
    raise BenchmarkFormatError(path, f"field {field!r} must be an integer, got "
                               f"{type_name(value)}", item=item, field=field)
  return value


def _require_list(data: Any, key: str, path: str) -> list:
  if not isinstance(data, dict):
    raise BenchmarkFormatError(path, f"top level must be a JSON object with "
                               f"{key!r}, got {type_name(data)}")
  if not isinstance(data.get(key), list):
    raise BenchmarkFormatError(path, f"needs a list {key!r} at the top level",
                               field=key)
  return data[key]


def _read_questions(path: str) -> tuple[list[tuple[int, int, str]], str | None]:
  data = load_json(path)
  rows, seen = [], set()
  for i, record in enumerate(_require_list(data, "questions", path)):
    qid = _require_int(record, "question_id", path, i)
    if qid in seen:
      raise BenchmarkFormatError(path, f"question_id {qid} appears twice", item=i,
                                 field="question_id")
    seen.add(qid)
    rows.append((qid, _require_int(record, "image_id", path, i),
                 require_str(record, "question", path, i)))
  subtype = data.get("data_subtype")
  return rows, subtype if isinstance(subtype, str) else None


def _read_annotations(path: str) -> dict[int, tuple[int, tuple[str, ...], str | None]]:
  out = {}
  for i, record in enumerate(_require_list(load_json(path), "annotations", path)):
    qid = _require_int(record, "question_id", path, i)
    image_id = _require_int(record, "image_id", path, i)
    answers = require_field(record, "answers", path, i)
    if not isinstance(answers, list) or not answers:
      raise BenchmarkFormatError(path, "field 'answers' must be a non-empty list",
                                 item=i, field="answers")
    texts = []
    for k, answer in enumerate(answers):
      if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str):
        raise BenchmarkFormatError(
            path, f"answers[{k}] must be an object with a string 'answer'", item=i,
            field="answers")
      texts.append(answer["answer"])
    qtype = record.get("question_type")
    out[qid] = (image_id, tuple(texts), qtype if isinstance(qtype, str) else None)
  return out


def read_okvqa(questions: str | os.PathLike[str], annotations: str | os.PathLike[str]
               ) -> tuple[list[VqaItem], str | None]:
  """Reads an OK-VQA (VQA-format) questions file and its annotations.

  Args:
    questions: ``OpenEnded_mscoco_val2014_questions.json``.
    annotations: ``mscoco_val2014_annotations.json``.

  Returns:
    ``(items, data_subtype)``: the items in the questions file's order, and its
    ``data_subtype`` ("val2014"; None if absent), which names the COCO image folder.

  Raises:
    FileNotFoundError: If a file does not exist.
    BenchmarkFormatError: Naming the file, the item index and the field, for a
      malformed entry, a repeated question_id, a question with no annotation, or an
      annotation whose image_id differs from its question's.
  """
  questions, annotations = os.fspath(questions), os.fspath(annotations)
  rows, subtype = _read_questions(questions)
  answers = _read_annotations(annotations)
  items = []
  for i, (qid, image_id, text) in enumerate(rows):
    if qid not in answers:
      raise BenchmarkFormatError(annotations, f"no annotation for question_id {qid} "
                                 f"(item {i} of {questions})", field="question_id")
    ann_image, texts, qtype = answers[qid]
    if ann_image != image_id:
      raise BenchmarkFormatError(
          annotations, f"question_id {qid} has image_id {ann_image}, but "
          f"{questions} says {image_id}", field="image_id")
    items.append(VqaItem(qid, image_id, text, texts, qtype))
  return items, subtype


def find_okvqa_files(data: str | os.PathLike[str], subtype: str | None = None
                     ) -> tuple[str, str]:
  """The questions and annotations files that ``data`` names.

  Args:
    data: A questions file (its annotations are the ``*{subtype}_annotations.json``
      beside it), or a folder holding one questions and one annotations file (or
      several, one pair of which ``subtype`` picks).
    subtype: e.g. ``"val2014"``, to pick among several pairs.

  Returns:
    ``(questions_path, annotations_path)``.

  Raises:
    FileNotFoundError: If no pair is found, or which pair is meant is unclear; the
      message lists what the folder holds.
  """
  data = os.fspath(data)
  folder = data if files.isdir(data) else os.path.dirname(files.abspath(data))
  names = sorted(files.listdir(folder))
  if files.isdir(data):
    questions = [n for n in names if n.endswith(QUESTIONS_SUFFIX)
                 and (subtype is None or subtype in n)]
    if len(questions) != 1:
      raise FileNotFoundError(
          f"{data}: expected one *{QUESTIONS_SUFFIX} file"
          f"{'' if subtype is None else f' for {subtype}'}, found {questions or 'none'}")
    questions_path = os.path.join(folder, questions[0])
  else:
    questions_path = data
  stem = os.path.basename(questions_path)[:-len(QUESTIONS_SUFFIX)]
  # OpenEnded_mscoco_val2014 -> mscoco_val2014: the annotations drop the task prefix.
  wanted = [n for n in names if n.endswith(ANNOTATIONS_SUFFIX)
            and stem.endswith(n[:-len(ANNOTATIONS_SUFFIX)])]
  if len(wanted) != 1:
    raise FileNotFoundError(
        f"{questions_path}: expected one annotations file whose name ends its stem "
        f"({stem!r}) and {ANNOTATIONS_SUFFIX!r} beside it, found "
        f"{wanted or [n for n in names if n.endswith(ANNOTATIONS_SUFFIX)] or 'none'}")
  return questions_path, os.path.join(folder, wanted[0])


def write_okvqa(questions: str, annotations: str, items: Sequence[VqaItem], *,
                data_subtype: str, description: str = "") -> None:
  """Writes ``items`` as an OK-VQA questions file and annotations file.

  Each answer becomes ``{"answer", "raw_answer", "answer_confidence": "yes",
  "answer_id"}`` (ids from 1, as OK-VQA numbers them); the annotation's
  ``answer_type`` is "other" and its ``confidence`` 3, as in OK-VQA.
  """
  info = {"description": description}
  qs = {"info": info, "task_type": "Open-Ended", "data_type": "mscoco",
        "data_subtype": data_subtype, "license": {},
        "questions": [{"question_id": it.question_id, "question": it.question,
                       "image_id": it.image_id} for it in items]}
  anns = {"info": info, "data_type": "mscoco", "data_subtype": data_subtype,
          "license": {},
          "annotations": [{
              "question_id": it.question_id, "image_id": it.image_id,
              "question_type": it.question_type or "other", "answer_type": "other",
              "confidence": 3,
              "answers": [{"answer": a, "raw_answer": a, "answer_confidence": "yes",
                           "answer_id": k + 1} for k, a in enumerate(it.answers)]}
              for it in items]}
  for path, data in ((questions, qs), (annotations, anns)):
    with files.open(path, "w", encoding="utf-8") as f:
      json.dump(data, f, indent=0)
