"""Small files in the real benchmarks' on-disk formats, and `ColorStub`, a model
whose embeddings are designed by hand, for the tests of the real-benchmark
evaluators (tests/evaluators/test_real_benchmarks.py).

`ColorStub` embeds an image as the colors that cover at least a quarter of it and
a caption as the color words it holds (split on spaces), so each score is 1,
1/sqrt(2) or 0 and every expected metric can be worked out by hand.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from PIL import Image

from vlkg.evaluators import real_benchmarks

COLORS = ("red", "green", "blue", "yellow", "gray")
PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0),
                    (128, 128, 128)], np.float64)
RGB = dict(zip(COLORS, [tuple(int(v) for v in c) for c in PALETTE]))


class ColorStub:
  """Image -> its colors covering >= 25% of the pixels; text -> its color words.

  A text without a color word (and an image without a main color) embeds on an
  extra "other" axis, so it scores 0 with every image. Records the batch shapes.
  """

  def __init__(self):
    self.image_batches: list[tuple[int, ...]] = []

  def encode_images(self, images):
    images = np.asarray(images)
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3
    self.image_batches.append(images.shape)
    out = []
    for image in images.astype(np.float64):
      nearest = ((image[..., None, :] - PALETTE) ** 2).sum(-1).argmin(-1)
      share = np.bincount(nearest.ravel(), minlength=len(COLORS)) / nearest.size
      out.append(np.append(share >= 0.25, False))
    return unit_rows(out)

  def encode_texts(self, texts):
    assert not isinstance(texts, str)
    return unit_rows([[c in t.split() for c in COLORS] + [False] for t in texts])


def unit_rows(rows) -> np.ndarray:
  x = np.asarray(rows, np.float64)
  x[x.sum(axis=1) == 0, -1] = 1.0  # nothing recognised: the "other" axis
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------ fixture files


def write_image(path: pathlib.Path, pixels: np.ndarray, mode: str = "RGB") -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(path)


def write_solid(path: pathlib.Path, color: str, size=(12, 8), mode: str = "RGB") -> None:
  w, h = size
  write_image(path, np.broadcast_to(np.array(RGB[color]), (h, w, 3)), mode)


def write_halves(path: pathlib.Path, left: str, right: str, size=(40, 20),
            mode: str = "RGB") -> None:
  w, h = size
  pixels = np.zeros((h, w, 3))
  pixels[:, :w // 2] = RGB[left]
  pixels[:, w // 2:] = RGB[right]
  write_image(path, pixels, mode)


def write_json(path: pathlib.Path, data) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data), encoding="utf-8")
  return path


# ARO scene: 40 x 20, left half red, right half blue; the bbox picks what is seen.
RED, BLUE, HALF = (0, 0, 20, 20), (20, 0, 20, 20), (10, 0, 20, 20)


def aro_record(image: str, bbox, true: str, false: str, **extra) -> dict:
  x, y, w, h = bbox
  return {"image_id": "1", "image_path": image, "bbox_x": x, "bbox_y": y,
          "bbox_w": w, "bbox_h": h, "true_caption": true, "false_caption": false,
          **extra}


def write_aro_relation(root: pathlib.Path) -> pathlib.Path:
  write_halves(root / "images" / "scene.png", "red", "blue", mode="RGBA")
  rel = lambda name, bbox, true, false, image="scene.png": aro_record(
      image, bbox, true, false, relation_name=name)
  return write_json(root / "visual_genome_relation.json", [
      # tie (same color words) -> wrong
      rel("on", RED, "a red cup on a table", "a table on a red cup"),
      # correct only because the crop is red (the whole scene would tie)
      rel("on", RED, "a red cup on a table", "a blue cup on a table"),
      rel("on", BLUE, "a blue box on a shelf", "a red box on a shelf"),  # correct
      # wrong
      rel("under", BLUE, "a red cat under a chair", "a blue cat under a chair"),
      # 1 against 1/sqrt(2) on the half-and-half crop -> correct
      rel("behind", HALF, "a red and blue car behind a tree",
          "a red car behind a tree"),
      rel("with", RED, "a red man with a hat", "a blue man with a hat"),   # dropped
      rel("with", BLUE, "a red man with a hat", "a blue man with a hat"),  # dropped
      rel("on", RED, "a red cup on a table", "a blue cup on a table", image="gone.jpg"),
  ])


def write_aro_attribution(root: pathlib.Path) -> pathlib.Path:
  write_halves(root / "images" / "scene.png", "red", "blue", mode="RGBA")
  write_solid(root / "images" / "gray.png", "gray", (10, 10), mode="L")
  records = []
  att = lambda pair, image, bbox, true, false: records.append(aro_record(
      image, bbox, true, false, attributes=list(pair)))
  for k in range(25):  # red_blue: 20 correct + 5 ties -> 0.8
    if k < 20:
      att(("red", "blue"), "scene.png", RED, "a red cup", "a blue cup")
    else:
      att(("red", "blue"), "scene.png", RED, "the red cup and the blue plate",
          "the blue cup and the red plate")
  for k in range(26):  # red_gray: 13 correct + 13 wrong -> 0.5
    true, false = ("a gray stone", "a red stone") if k % 2 else ("a red stone",
                                                                 "a gray stone")
    att(("red", "gray"), "gray.png", (0, 0, 10, 10), true, false)
  for k in range(25):  # blue_red: 24 correct but one image missing: 24 < 25 items
    att(("blue", "red"), "gone.jpg" if k == 0 else "scene.png", BLUE, "a blue car",
        "a red car")
  return write_json(root / "visual_genome_attribution.json", records)


def write_coco_order(root: pathlib.Path) -> pathlib.Path:
  write_solid(root / "val2014" / "red.png", "red", (20, 16))
  write_solid(root / "val2014" / "blue.jpg", "blue", (9, 7))
  return write_json(root / "coco_karpathy_test.json", [
      {"image": "val2014/red.png",
       "caption": ["A red bus.", "a blue bus", "a flag in blue,red"]},
      {"image": "val2014/blue.jpg", "caption": ["A BLUE car", "a car with no colour"]},
      {"image": "val2014/gone.jpg", "caption": ["a red kite"]},
  ])


def write_flickr_order(root: pathlib.Path) -> pathlib.Path:
  write_solid(root / "flickr30k-images" / "1.jpg", "red", (16, 16))
  return write_json(root / "dataset_flickr30k.json", {"images": [
      {"filename": "1.jpg", "split": "test",
       "sentences": [{"raw": "Red!", "tokens": ["red"]}, {"raw": "a blue,red flag"}]},
      {"filename": "2.jpg", "split": "train", "sentences": [{"raw": "a blue sea"}]},
  ]})


def write_sugarcrepe(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  images = root / "val2017"
  write_solid(images / "red.png", "red", (14, 10), mode="P")
  write_solid(images / "blue.jpg", "blue", (10, 14))
  write_solid(images / "green.png", "green", (8, 8))
  item = lambda f, pos, neg: {"filename": f, "caption": pos, "negative_caption": neg}
  data = root / "data"
  write_json(data / "add_att.json", {
      "0": item("red.png", "a red ball", "a blue ball"),                # correct
      "1": item("red.png", "a ball", "a red ball"),                     # wrong
      "2": item("blue.jpg", "a blue and red cup", "a red and blue cup"),  # tie: wrong
      "3": item("blue.jpg", "a blue cup", "a cup"),                     # correct
  })
  write_json(data / "swap_obj.json", {
      "0": item("green.png", "green grass", "red grass"),  # correct
      "1": item("gone.jpg", "a red ball", "a blue ball"),  # missing image
  })
  write_json(data / "replace_rel.json", {"0": item("blue.jpg", "a cup", "a blue cup")})
  return data, images


def write_winoground(root: pathlib.Path) -> pathlib.Path:
  images = root / "images"
  pairs = [("red", "blue"), ("red", "blue"), (None, "green"), ("red", "blue"),
           ("red", None)]
  for i, (c0, c1) in enumerate(pairs):
    if c0 is None:
      write_halves(images / f"ex_{i}_img_0.png", "red", "green", (20, 10))
    else:
      write_solid(images / f"ex_{i}_img_0.png", c0)
    if c1 is not None:
      write_solid(images / f"ex_{i}_img_1.png", c1, mode="RGBA")
  captions = [("red", "blue"), ("red", "red blue"), ("red", "green"),
              ("blue", "red"), ("red", "blue")]
  lines = [json.dumps({"id": i, "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1",
                       "caption_0": c0, "caption_1": c1, "tag": "Noun",
                       "secondary_tag": "", "num_main_preds": 1,
                       "collapsed_tag": "Object"})
           for i, (c0, c1) in enumerate(captions)]
  path = root / "examples.jsonl"
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def write_retrieval(root: pathlib.Path) -> pathlib.Path:
  write_solid(root / "val2014" / "red.png", "red", (20, 16))
  write_solid(root / "val2014" / "blue.jpg", "blue", (8, 8))
  write_solid(root / "val2014" / "green.png", "green", (30, 10))
  entry = lambda name, split, *raw: {"filepath": "val2014", "filename": name,
                                     "split": split,
                                     "sentences": [{"raw": r} for r in raw]}
  return write_json(root / "dataset_coco.json", {"images": [
      entry("red.png", "test", "a red ball", "a ball"),
      entry("blue.jpg", "test", "a blue sky"),
      entry("red.png", "train", "a red train image, not in the test split"),
      entry("green.png", "test", "a kite"),
      entry("gone.jpg", "test", "a yellow thing"),
  ]})


def evaluate_with_stub(benchmark, data, images=None, **kwargs):
  stub = ColorStub()
  return real_benchmarks.evaluate(
      stub, benchmark=benchmark, data=str(data),
      images=None if images is None else str(images), **kwargs), stub
