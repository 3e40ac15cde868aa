"""The Karpathy split of COCO (or Flickr30k): ``dataset_coco.json`` of Karpathy &
Fei-Fei (CVPR 2015), the split that COCO retrieval numbers are reported on.

    {"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
                 "split": "test", "cocoid": 391895,
                 "sentences": [{"raw": "A man with a red helmet ...", ...}, ...]}, ...]}

``config.input.path`` is the JSON file; images are
``<input.images>/<filepath>/<filename>`` (``filepath`` is absent in
``dataset_flickr30k.json``), ``input.images`` defaulting to the JSON's folder.
Splits are ``train``, ``restval``, ``val`` and ``test``; ``input.train_split``
joins several with "+" (default ``train+restval``, the usual 113k images) and
``input.eval_split`` names the held-out one (default ``val``; ``test`` for the
final numbers).
"""

from __future__ import annotations

import os

from vlkg.data import corpora

DEFAULT_SPLITS = ("train+restval", "val")
KNOWN_SPLITS = ("train", "restval", "val", "test")


def annotation_files(options: corpora.Options) -> list[str]:
  return [options.path]


def _wanted(spec: str) -> set[str]:
  names = {s.strip() for s in spec.split("+") if s.strip()}
  unknown = names - set(KNOWN_SPLITS)
  if unknown:
    raise ValueError(f"unknown Karpathy split(s) {sorted(unknown)} in config.input."
                     f"train_split / eval_split; expected '+'-joined {KNOWN_SPLITS}")
  return names


def read(options: corpora.Options) -> corpora.Corpus:
  path = options.path
  train = _wanted(options.train_split or DEFAULT_SPLITS[0])
  held_out = _wanted(options.eval_split or DEFAULT_SPLITS[1])
  if train & held_out:
    raise ValueError(f"config.input.train_split and eval_split share {sorted(train & held_out)}")
  root = options.images or os.path.dirname(path)
  data = corpora.load_json(path)
  images = corpora.list_field(data, "images", path, "top level")
  out = {"train": [], "val": []}
  for i, image in enumerate(images):
    where = f"images[{i}]"
    split = corpora.field(image, "split", path, where, str)
    filename = corpora.field(image, "filename", path, where, str)
    folder = image.get("filepath", "")
    if not isinstance(folder, str):
      raise corpora.CorpusError(path, "field 'filepath' must be str", where)
    sentences = corpora.list_field(image, "sentences", path, where)
    captions = tuple(corpora.field(s, "raw", path, f"{where}.sentences[{j}]", str)
                     for j, s in enumerate(sentences))
    name = "train" if split in train else "val" if split in held_out else None
    if name:
      key = str(image.get("cocoid", image.get("imgid", os.path.join(folder, filename))))
      out[name].append(corpora.Item(key=key, image=os.path.join(root, folder, filename),
                                    captions=captions, source=path))
  return corpora.Corpus(out)
