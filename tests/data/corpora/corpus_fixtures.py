"""Tiny corpora in the real on-disk formats, written by the tests themselves."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

CAPTIONS = [
    "A man riding a brown horse on a beach.",
    "A small dog sitting next to a red car.",
    "Two people holding umbrellas in the rain.",
    "A white cat sleeping on a wooden table.",
    "A large green bus parked in front of a building.",
    "A woman wearing a blue hat and holding a cup.",
    "A black dog chasing a yellow ball in the grass.",
    "A plate of food with a fork on a table.",
]


def write_image(path: str, seed: int, size=(40, 30), fmt: str | None = None) -> None:
  """A random RGB image (width x height); PNG or JPEG by extension."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
  Image.fromarray(pixels).save(path, format=fmt)


def coco(root: str, n_train: int = 6, n_val: int = 3, missing: int = 0) -> str:
  """COCO 2017 layout: root/annotations/captions_{split}.json, root/{split}/*.jpg.
  The last ``missing`` training images are not written."""
  for split, n in (("train2017", n_train), ("val2017", n_val)):
    images, anns = [], []
    for i in range(n):
      image_id = 1000 * (split == "val2017") + i + 1
      name = f"{image_id:012d}.jpg"
      images.append({"id": image_id, "file_name": name, "height": 30, "width": 40})
      for k in range(2 + i % 2):
        anns.append({"image_id": image_id, "id": len(anns) + 1,
                     "caption": CAPTIONS[(i + k) % len(CAPTIONS)]})
      if not (split == "train2017" and i >= n - missing):
        write_image(os.path.join(root, split, name), image_id, fmt="JPEG")
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"captions_{split}.json"), "w") as f:
      json.dump({"info": {}, "images": images, "annotations": anns}, f)
  return os.path.join(root, "annotations", "captions_train2017.json")


def karpathy(root: str) -> str:
  images = []
  for i, split in enumerate(["train", "train", "restval", "restval", "val", "val",
                             "test"]):
    folder = "train2014" if split == "train" else "val2014"
    name = f"COCO_{folder}_{i:012d}.jpg"
    write_image(os.path.join(root, folder, name), 50 + i, fmt="JPEG")
    images.append({"filepath": folder, "filename": name, "split": split, "cocoid": i,
                   "sentences": [{"raw": CAPTIONS[(i + k) % len(CAPTIONS)],
                                  "tokens": []} for k in range(5)]})
  path = os.path.join(root, "dataset_coco.json")
  with open(path, "w") as f:
    json.dump({"images": images, "dataset": "coco"}, f)
  return path


def captions_tsv(root: str, n: int = 8, header: bool = True) -> str:
  lines = ["image\tcaption"] if header else []
  for i in range(n):
    write_image(os.path.join(root, "imgs", f"{i}.png"), 100 + i)
    lines.append(f"imgs/{i}.png\t{CAPTIONS[i % len(CAPTIONS)]}")
  path = os.path.join(root, "captions.tsv")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def captions_jsonl(root: str, n: int = 8) -> str:
  rows = []
  for i in range(n):
    write_image(os.path.join(root, "imgs", f"{i}.png"), 200 + i)
    rows.append(json.dumps({"image": f"imgs/{i}.png", "caption": CAPTIONS[i % len(CAPTIONS)]}))
  path = os.path.join(root, "captions.jsonl")
  with open(path, "w") as f:
    f.write("\n".join(rows) + "\n")
  return path


def _obj(object_id, name, x, y, w, h):
  return {"object_id": object_id, "names": [name], "x": x, "y": y, "w": w, "h": h,
          "synsets": []}


def visual_genome(root: str, n: int = 6) -> str:
  """VG v1.4 field names; image k shows a man riding a brown horse and a dog."""
  image_data, objects, attributes, relationships, regions = [], [], [], [], []
  for k in range(n):
    image_id = k + 1
    folder = "VG_100K" if k % 2 else "VG_100K_2"
    write_image(os.path.join(root, folder, f"{image_id}.jpg"), 300 + k, (50, 40), "JPEG")
    image_data.append({"image_id": image_id, "url": f"https://cs.stanford.edu/people/"
                       f"rak248/{folder}/{image_id}.jpg", "width": 50, "height": 40,
                       "coco_id": None, "flickr_id": None})
    man = _obj(10 * image_id, "man", 5, 2, 10, 20)
    horse = _obj(10 * image_id + 1, "horse", 4, 10, 20, 20)
    dog = _obj(10 * image_id + 2, "dog", 35, 25, 10, 10)
    objects.append({"image_id": image_id, "objects": [man, horse, dog]})
    attributes.append({"image_id": image_id, "attributes": [
        {**horse, "attributes": ["brown "]}, {**dog, "attributes": ["small", "white"]}]})
    relationships.append({"image_id": image_id, "relationships": [
        {"relationship_id": image_id, "predicate": "riding", "synsets": [],
         "subject": man, "object": horse}]})
    regions.append({"id": image_id, "regions": [
        {"region_id": 100 * image_id, "image_id": image_id,
         "phrase": "a man riding a brown horse", "x": 0, "y": 0, "width": 30,
         "height": 35},
        {"region_id": 100 * image_id + 1, "image_id": image_id,
         "phrase": "small white dog", "x": 30, "y": 20, "width": 20, "height": 20},
        {"region_id": 100 * image_id + 2, "image_id": image_id,
         "phrase": "green grass on the ground", "x": 0, "y": 30, "width": 50,
         "height": 10}]})
  for name, data in (("image_data", image_data), ("objects", objects),
                     ("attributes", attributes), ("relationships", relationships),
                     ("region_descriptions", regions)):
    with open(os.path.join(root, f"{name}.json"), "w") as f:
      json.dump(data, f)
  return root
