"""Readers of real image-caption corpora, one module per on-disk format.

``config.input.data`` names a module here (``coco``, ``karpathy``,
``visual_genome``, ``captions``, ``tfds_coco``); each has

  * ``annotation_files(options) -> list[str]``: the files whose identity is part of
    the prepared dataset's fingerprint, and
  * ``read(options) -> Corpus``: the items as ``{"train": [...], "val": [...]}``,
    the held-out split being the one retrieval is evaluated on,

and ``vlkg.data.corpora.build`` turns the items into the same records as the world's
(``vlkg.data.records``), so the input pipeline and every method read them unchanged.

Readers check what they read: a malformed file or a missing field raises a
``CorpusError`` that names the file, the item and the field. Images are not opened
here (a missing image is counted at build time, a corrupt one is an error there).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np

from vlkg import files
from vlkg.data.benchmarks import errors
from vlkg.graphs.scene_graph import SceneGraph

NAMES = ("coco", "karpathy", "visual_genome", "captions", "tfds_coco")


class CorpusError(ValueError):
  """A corpus file that does not follow its format; the message names the file, the
  item and the field."""

  def __init__(self, path: str, problem: str, where: str | None = None):
    self.path, self.problem, self.where = path, problem, where
    super().__init__(": ".join(p for p in (path, where, problem) if p))

  def __reduce__(self):  # crosses process boundaries from the prepare workers
    return (CorpusError, (self.path, self.problem, self.where))


@dataclasses.dataclass(frozen=True)
class Options:
  """What ``config.input`` says about a real corpus (see ``vlkg.config.base``)."""
  path: str
  images: str = ""
  train_split: str = ""
  eval_split: str = ""
  val_size: int = 1000

  @classmethod
  def from_config(cls, config) -> Options:
    i = config.input
    expand = lambda p: files.abspath(p) if p else ""
    return cls(path=expand(i.path), images=expand(i.images), train_split=i.train_split,
               eval_split=i.eval_split, val_size=i.val_size)


@dataclasses.dataclass(frozen=True)
class Item:
  """One image and its captions.

  Attributes:
    key: unique within the corpus (an image id or file name); kept in the manifest's
      list of missing images.
    image: a file path, encoded bytes, or uint8 ``[H, W, 3]`` pixels.
    captions: the image's captions, in file order.
    graphs: ground-truth scene graph of each caption (Visual Genome), an entry None
      where there is none; None for corpora without ground truth (parsed instead).
    image_graph: the ground-truth graph of the whole image, stored in the record's
      ``scene_graph`` field; None if unknown.
    source: the annotation file the item came from, for error messages.
  """
  key: str
  image: Any
  captions: tuple[str, ...]
  graphs: tuple[SceneGraph | None, ...] | None = None
  image_graph: SceneGraph | None = None
  source: str = ""


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A corpus as read: its splits and, if it has one, its own vocabulary
  (``{"objects", "attributes", "relations"}`` word lists) that extends the caption
  parser's lexicon and the words replacement negatives draw from."""
  splits: dict[str, list[Item]]
  vocabulary: dict[str, list[str]] | None = None


def load(name: str):
  """The reader module of ``config.input.data``."""
  if name not in NAMES:
    raise ValueError(f"config.input.data={name!r} is not a known dataset; expected "
                     f"'world' or one of {NAMES}")
  return importlib.import_module(f"vlkg.data.corpora.{name}")


# ------------------------------------------------------------- shared helpers


def load_json(path: str) -> Any:
  """A JSON file, or an error that names it (missing, not JSON, not UTF-8)."""
  if not files.isfile(path):
    raise CorpusError(path, "file not found")
  try:
    return errors.load_json(path)
  except errors.BenchmarkFormatError as e:
    raise CorpusError(path, e.problem) from None


def field(record: Any, name: str, path: str, where: str, kind=None) -> Any:
  """``record[name]``, checked: the record is an object, has the field, and the value
  is of ``kind`` (a type or tuple of types) if given."""
  if not isinstance(record, dict):
    raise CorpusError(path, f"must be a JSON object, got {errors.type_name(record)}", where)
  if name not in record:
    raise CorpusError(path, f"missing field {name!r}", where)
  value = record[name]
  if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)):
    names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
    raise CorpusError(path, f"field {name!r} must be {names}, got "
                      f"{errors.type_name(value)}", where)
  return value


def list_field(record: Any, name: str, path: str, where: str) -> list:
  return field(record, name, path, where, list)


def hold_out(items: list[Item], val_size: int, path: str) -> dict[str, list[Item]]:
  """Train and val of a corpus without a split of its own: the last ``val_size``
  items in file order are held out, a choice that every host makes alike."""
  if val_size < 1:
    raise ValueError(f"config.input.val_size={val_size} must be >= 1 for {path}, which "
                     "has no held-out split of its own")
  if len(items) <= val_size:
    raise CorpusError(path, f"{len(items)} images, not more than config.input.val_size="
                      f"{val_size}; nothing would be left to train on")
  return {"train": items[:-val_size], "val": items[-val_size:]}


def norm_text(text: str) -> str:
  """Whitespace-normalised; real captions carry trailing spaces and newlines."""
  return " ".join(text.split())


def pixels(image: Any) -> np.ndarray:
  """uint8 ``[H, W, 3]`` from an in-memory image (array or tensor)."""
  arr = np.asarray(image)
  if arr.ndim == 2:
    arr = np.repeat(arr[..., None], 3, axis=-1)
  if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or arr.dtype != np.uint8:
    raise ValueError(f"image must be uint8 [H, W, 1|3|4], got {arr.dtype} {arr.shape}")
  if arr.shape[-1] == 1:
    arr = np.repeat(arr, 3, axis=-1)
  return arr[..., :3]
