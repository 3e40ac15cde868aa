"""COCO captions in their official layout (cocodataset.org, 2017 release).

``config.input.path`` is the annotation file ``annotations/captions_train2017.json``
(its ``val`` sibling is found by name) or the folder holding the files; each file is

    {"images": [{"id": 9, "file_name": "000000000009.jpg", ...}, ...],
     "annotations": [{"image_id": 9, "id": 1, "caption": "..."}, ...]}

Splits are named by the file (``captions_<split>.json``): ``input.train_split``
(default ``train2017``) and ``input.eval_split`` (default ``val2017``). Images are
``<input.images>/<file_name>``; without ``input.images``, COCO's own layout
``<root>/<split>/<file_name>`` next to the ``annotations`` folder. When
``input.images`` holds one folder per split, ``<input.images>/<split>/`` is used.
"""

from __future__ import annotations

import collections
import os

from vlkg import files
from vlkg.data import corpora

DEFAULT_SPLITS = ("train2017", "val2017")


def _annotation_dir(options: corpora.Options) -> str:
  return options.path if files.isdir(options.path) else os.path.dirname(options.path)


def annotation_file(options: corpora.Options, split: str) -> str:
  folder = _annotation_dir(options)
  for candidate in (os.path.join(folder, f"captions_{split}.json"),
                    os.path.join(folder, "annotations", f"captions_{split}.json")):
    if files.isfile(candidate):
      return candidate
  return os.path.join(folder, f"captions_{split}.json")


def splits(options: corpora.Options) -> tuple[str, str]:
  return (options.train_split or DEFAULT_SPLITS[0], options.eval_split or DEFAULT_SPLITS[1])


def annotation_files(options: corpora.Options) -> list[str]:
  return [annotation_file(options, s) for s in splits(options)]


def image_root(options: corpora.Options, split: str, annotations: str) -> str:
  if options.images:
    per_split = os.path.join(options.images, split)
    return per_split if files.isdir(per_split) else options.images
  folder = os.path.dirname(annotations)
  if os.path.basename(folder) == "annotations":
    folder = os.path.dirname(folder)
  return os.path.join(folder, split)


def read_file(path: str, root: str) -> list[corpora.Item]:
  """The items of one captions file, images in file order with their captions."""
  data = corpora.load_json(path)
  if not isinstance(data, dict):
    raise corpora.CorpusError(path, "must be a JSON object with 'images' and "
                              "'annotations'")
  images = corpora.list_field(data, "images", path, "top level")
  annotations = corpora.list_field(data, "annotations", path, "top level")
  order, names = [], {}
  for i, image in enumerate(images):
    where = f"images[{i}]"
    image_id = corpora.field(image, "id", path, where, (int, str))
    names[image_id] = corpora.field(image, "file_name", path, where, str)
    order.append(image_id)
  captions = collections.defaultdict(list)
  for i, ann in enumerate(annotations):
    where = f"annotations[{i}]"
    image_id = corpora.field(ann, "image_id", path, where, (int, str))
    if image_id not in names:
      raise corpora.CorpusError(path, f"image_id {image_id!r} is not in 'images'",
                                f"{where}.image_id")
    captions[image_id].append(corpora.field(ann, "caption", path, where, str))
  return [corpora.Item(key=str(image_id), image=os.path.join(root, names[image_id]),
                       captions=tuple(captions[image_id]), source=path)
          for image_id in order]


def read(options: corpora.Options) -> corpora.Corpus:
  out = {}
  for name, split in zip(("train", "val"), splits(options)):
    path = annotation_file(options, split)
    out[name] = read_file(path, image_root(options, split, path))
  return corpora.Corpus(out)
