"""TFDS ``coco_captions`` for users who have it prepared locally.

    tfds.load("coco_captions", split=..., data_dir=config.input.path, download=False)

The TFDS build has the Karpathy splits ``train``, ``restval``, ``val`` and ``test``
(``input.train_split`` joins several with "+", default ``train+restval``;
``input.eval_split`` default ``val``) and examples with ``image`` (JPEG, read here
undecoded), ``image/id``, ``image/filename`` and ``captions/text``
(``example_item``). Nothing is downloaded: a missing TFDS dataset is an error that
names ``data_dir``. ``config.input.path`` is the TFDS data_dir ("" = TFDS's
default).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from vlkg.data import corpora

NAME = "coco_captions"
DEFAULT_SPLITS = ("train+restval", "val")


def _builder(options: corpora.Options):
  import tensorflow_datasets as tfds
  return tfds.builder(NAME, data_dir=options.path or None)


def annotation_files(options: corpora.Options) -> list[str]:
  """The prepared dataset's metadata files (their size and time fingerprint it)."""
  try:
    folder = str(_builder(options).data_dir)
  except Exception:  # pylint: disable=broad-except
    return []
  return [os.path.join(folder, f) for f in ("dataset_info.json", "features.json")
          if os.path.exists(os.path.join(folder, f))]


def _as_str(value: Any) -> str:
  if hasattr(value, "numpy"):
    value = value.numpy()
  if hasattr(value, "item") and not isinstance(value, (bytes, str)):
    value = value.item()
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def example_item(example: Mapping[str, Any], source: str = NAME) -> corpora.Item:
  """One TFDS example (a dict of tensors or numpy values) as an ``Item``.

  The image is either still encoded (bytes, read with ``SkipDecoding``) or pixels
  ``[H, W, 3]``; the captions are ``example["captions"]["text"]``.
  """
  for key in ("image", "captions"):
    if key not in example:
      raise corpora.CorpusError(source, f"missing field {key!r}", "example")
  captions = example["captions"]
  if not isinstance(captions, Mapping) or "text" not in captions:
    raise corpora.CorpusError(source, "missing field 'captions/text'", "example")
  texts = captions["text"]
  if hasattr(texts, "numpy"):
    texts = texts.numpy()
  image = example["image"]
  if hasattr(image, "numpy"):
    image = image.numpy()
  if not isinstance(image, bytes) and getattr(image, "dtype", None) is not None \
      and image.dtype.kind in "SO" and image.ndim == 0:
    image = image.item()
  key = example.get("image/id", example.get("image/filename"))
  if key is None:
    raise corpora.CorpusError(source, "missing field 'image/id'", "example")
  return corpora.Item(key=_as_str(key), image=image,
                      captions=tuple(_as_str(t) for t in list(texts)), source=source)


def _split(options, spec: str) -> list[corpora.Item]:
  import tensorflow_datasets as tfds
  parts = [s.strip() for s in spec.split("+") if s.strip()]
  try:
    datasets = [tfds.load(NAME, split=p, data_dir=options.path or None, download=False,
                          decoders={"image": tfds.decode.SkipDecoding()})
                for p in parts]
  except Exception as e:  # pylint: disable=broad-except
    raise corpora.CorpusError(
        options.path or "TFDS default data_dir",
        f"cannot read {NAME} split(s) {parts} without downloading ({e}); prepare it "
        "with TFDS first or point config.input.path at its data_dir") from None
  source = f"{NAME}@{options.path or 'default data_dir'}"
  return [example_item(ex, source) for ds in datasets for ex in tfds.as_numpy(ds)]


def read(options: corpora.Options) -> corpora.Corpus:
  return corpora.Corpus({
      "train": _split(options, options.train_split or DEFAULT_SPLITS[0]),
      "val": _split(options, options.eval_split or DEFAULT_SPLITS[1])})
