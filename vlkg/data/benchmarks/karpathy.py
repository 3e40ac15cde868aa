"""Karpathy-split caption files: the test images of COCO / Flickr30k and their captions.

The split is that of Karpathy and Fei-Fei, "Deep Visual-Semantic Alignments for
Generating Image Descriptions", CVPR 2015 (5k test images for COCO, 1k for
Flickr30k, five captions each). Two on-disk layouts are in use, and this module
reads both into one list of `KarpathyImage`:

* The original release, ``dataset_coco.json`` / ``dataset_flickr30k.json``: an object
  ``{"images": [...]}`` whose entries have ``filename``, ``split`` (``train``,
  ``restval``, ``val`` or ``test``) and ``sentences`` (a list of objects with the
  caption in ``raw``); COCO's entries also have ``filepath`` (``val2014``), the
  folder of the image under the COCO root, and Flickr30k's have none (the images
  lie in one folder). Only the entries of the requested split are returned.
* The list layout of BLIP (Li et al., ICML 2022, github.com/salesforce/BLIP), which
  ARO's COCO-Order / Flickr30k-Order read (Yuksekgonul et al., ICLR 2023,
  ``dataset_zoo/aro_datasets.py``): ``coco_karpathy_test.json`` /
  ``flickr30k_test.json``, a JSON list of ``{"image": "val2014/<file>.jpg",
  "caption": [...]}``, already one split, with ``image`` relative to the image
  root. BLIP's train files hold one caption string per entry; a string is read as
  a list of one caption.

Captions are returned raw; each benchmark cleans them its own way.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from vlkg.data.benchmarks.errors import (
    BenchmarkFormatError,
    load_json,
    require_field,
    require_str,
    type_name,
)

SPLITS: tuple[str, ...] = ("train", "restval", "val", "test")


@dataclasses.dataclass(frozen=True)
class KarpathyImage:
  """One image and its captions.

  Attributes:
    image: The image path relative to the image root, '/'-separated as stored
      (``val2014/COCO_val2014_000000391895.jpg``, or a bare file name).
    captions: The raw captions, in file order (at least one).
  """

  image: str
  captions: tuple[str, ...]


def _original_entry(record: Any, path: str | os.PathLike[str],
                    index: int) -> tuple[str, KarpathyImage]:
  filename = require_str(record, "filename", path, index)
  split = require_str(record, "split", path, index)
  folder = ""
  if record.get("filepath") is not None:
    folder = require_str(record, "filepath", path, index)
  sentences = require_field(record, "sentences", path, index)
  if not isinstance(sentences, list) or not sentences:
    got = "an empty list" if sentences == [] else type_name(sentences)
    raise BenchmarkFormatError(
        path, f"field 'sentences' must be a non-empty list, got {got}",
        item=index, field="sentences")
  captions = []
  for j, sentence in enumerate(sentences):
    if not isinstance(sentence, dict) or not isinstance(sentence.get("raw"), str):
      got = (type_name(sentence.get("raw")) if isinstance(sentence, dict)
             else type_name(sentence))
      raise BenchmarkFormatError(
          path, f"field 'sentences[{j}].raw' must be a string, got {got}",
          item=index, field=f"sentences[{j}].raw")
    captions.append(sentence["raw"])
  image = f"{folder}/{filename}" if folder else filename
  return split, KarpathyImage(image, tuple(captions))


def _list_entry(record: Any, path: str | os.PathLike[str],
                index: int) -> KarpathyImage:
  image = require_str(record, "image", path, index)
  captions = require_field(record, "caption", path, index)
  if isinstance(captions, str):
    captions = [captions]
  if (not isinstance(captions, list) or not captions
      or not all(isinstance(c, str) for c in captions)):
    got = ("an empty list" if captions == [] else "a list holding a non-string"
           if isinstance(captions, list) else type_name(captions))
    raise BenchmarkFormatError(
        path, f"field 'caption' must be a string or a non-empty list of strings, "
        f"got {got}", item=index, field="caption")
  return KarpathyImage(image, tuple(captions))


def read_karpathy(path: str | os.PathLike[str],
                  split: str = "test") -> list[KarpathyImage]:
  """Reads a Karpathy-split caption file in either layout (see the module docstring).

  Args:
    path: ``dataset_coco.json``, ``dataset_flickr30k.json``,
      ``coco_karpathy_test.json``, ``flickr30k_test.json`` or a file in one of those
      layouts.
    split: For the original layout, the split to keep; the list layout holds one
      split already and ignores it.

  Returns:
    The images in file order, each with its captions.

  Raises:
    ValueError: If ``split`` is not a Karpathy split.
    FileNotFoundError: If the file does not exist.
    BenchmarkFormatError: If the file is not valid JSON, is in neither layout, an
      entry lacks a field or has one of the wrong type, or (original layout) no
      entry is in ``split``; the message names the file, the entry's index and the
      field.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  data = load_json(path)
  if isinstance(data, list):
    return [_list_entry(record, path, i) for i, record in enumerate(data)]
  if not isinstance(data, dict):
    raise BenchmarkFormatError(
        path, f"top level must be a JSON list (BLIP layout) or an object with "
        f"'images' (Karpathy's layout), got {type_name(data)}")
  if "images" not in data:
    raise BenchmarkFormatError(path, "missing field 'images'", field="images")
  entries = data["images"]
  if not isinstance(entries, list):
    raise BenchmarkFormatError(
        path, f"field 'images' must be a list, got {type_name(entries)}",
        field="images")
  out = []
  for i, record in enumerate(entries):
    entry_split, image = _original_entry(record, path, i)
    if entry_split == split:
      out.append(image)
  if not out:
    raise BenchmarkFormatError(path, f"no image is in split {split!r}", field="split")
  return out
