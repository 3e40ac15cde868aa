"""``bench prepare``: how fast a real JPEG corpus becomes records.

A corpus of ``--images`` photo-like 640x480 JPEGs (quality 90, about 155 KB each;
COCO's photos average about 160 KB) with five captions each is written once in the Karpathy
layout (``vlkg.data.corpora.karpathy``), a tokenizer is trained on its captions
once, and then ``vlkg.data.corpora.build.build`` prepares it ``--repeats`` times
into fresh directories, as ``python -m vlkg.tools.prepare`` would, at
``--image_size`` px in ``world.workers`` processes (0: one per core).

Figures (medians over the repeats):

* ``images_per_second``: images over the seconds from the first shard's start to
  the last shard's end, all workers together once started: the rate that bounds a
  large corpus (CC3M's 3.3M images, COCO's 118k), where the workers' start-up (a
  few seconds each, importing TensorFlow) is negligible;
* ``end_to_end_images_per_second``: images over the build's wall time (reading the
  annotations, starting the workers, writing every shard), which a corpus of a
  few thousand images sees;
* ``images_per_second_per_process``: one worker's rate once started (images over the
  seconds its shards took);
* ``cpu_ms_per_image``: CPU time of the build and its workers per image, start-up
  included, and ``worker_cpu_ms_per_image``: the workers' CPU time per image once
  started. On a machine shared with other jobs, wall time depends on their load and
  CPU time hardly does: ``idle_cores_images_per_second``, the machine's cores over
  ``worker_cpu_ms_per_image``, is the rate once started if every core were free.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import tempfile
import time

import numpy as np

_NOUNS = ("man", "woman", "dog", "cat", "horse", "bus", "train", "plate", "table", "child",
          "bird", "car", "bicycle", "kite", "pizza", "giraffe", "skateboard", "umbrella")
_ADJECTIVES = ("small", "large", "red", "white", "black", "brown", "young", "old", "wooden",
               "green", "blue", "yellow")
_VERBS = ("sitting on", "standing next to", "riding", "holding", "walking past",
          "looking at", "parked near", "lying under", "in front of")
_PLACES = ("on a beach", "in a park", "on a city street", "in a kitchen", "in the grass",
           "near a building", "in the snow", "at a table")


def photo(rng: np.random.Generator, height: int = 480, width: int = 640) -> np.ndarray:
  """uint8 ``[height, width, 3]``: smooth colour regions with sensor-like noise, so
  that a JPEG of it is about as large, and as slow to decode, as a photo's (random
  pixels would be twice as large, a smooth image ten times smaller)."""
  from PIL import Image
  coarse = rng.integers(0, 256, (height // 32, width // 32, 3), dtype=np.uint8)
  pixels = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC),
                      np.int16)
  pixels = pixels + rng.integers(-30, 31, (height, width, 3), dtype=np.int16)
  return np.clip(pixels, 0, 255).astype(np.uint8)


def caption(rng: np.random.Generator) -> str:
  a, b = rng.choice(_NOUNS, 2, replace=False)
  return (f"A {rng.choice(_ADJECTIVES)} {a} {rng.choice(_VERBS)} a "
          f"{rng.choice(_ADJECTIVES)} {b} {rng.choice(_PLACES)}.")


def write_corpus(root: str, n: int, val: int = 100, seed: int = 0, height: int = 480,
                 width: int = 640, quality: int = 90) -> str:
  """``n`` JPEGs (the last ``val`` in the held-out split) and ``root/dataset_coco.json``
  in the Karpathy layout; returns the JSON's path."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  entries = []
  for i in range(n):
    name = f"{i:012d}.jpg"
    Image.fromarray(photo(rng, height, width)).save(os.path.join(root, "images", name),
                                                    format="JPEG", quality=quality)
    entries.append({"filepath": "images", "filename": name, "cocoid": i,
                    "split": "val" if i >= n - val else "train",
                    "sentences": [{"raw": caption(rng)} for _ in range(5)]})
  path = os.path.join(root, "dataset_coco.json")
  with open(path, "w") as f:
    json.dump({"images": entries, "dataset": "coco"}, f)
  return path


def corpus_config(config, path: str, image_size: int, workers: int):
  """``config`` reading the generated corpus: Karpathy's layout, every image."""
  import ml_collections
  config = ml_collections.ConfigDict(config.to_dict())
  config.input.data, config.input.path = "karpathy", path
  config.input.train_split, config.input.eval_split = "train", "val"
  config.input.max_items = 0
  config.model.image_size = image_size
  config.world.workers = workers or os.cpu_count() or 1
  return config


def _cpu_seconds() -> float:
  """CPU time of this process and of its finished children (the prepare workers)."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_build(config, tokenizer_source, root: str) -> dict:
  """One build of ``config``'s corpus into a fresh directory under ``root``: its
  wall and CPU seconds, the images written and the workers' own seconds."""
  from vlkg.data.corpora import build
  out = tempfile.mkdtemp(dir=root, prefix="records-")
  shutil.rmtree(out)
  cpu, start = _cpu_seconds(), time.perf_counter()
  info = build.build(out, config, tokenizer_source)
  seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
  images = sum(r["images"] for r in info["report"].values())
  size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
             if f.endswith(".tfrecord"))
  shutil.rmtree(out)
  return {"seconds": seconds, "cpu_seconds": cpu, "images": images,
          "worker_seconds": info["worker_seconds"], "write_seconds": info["write_seconds"],
          "worker_cpu_seconds": info["worker_cpu_seconds"], "bytes_per_image": size / images}


def run(config, repeats: int, n_images: int, image_size: int, workers: int = 0) -> dict:
  from vlkg.data.corpora import build
  root = tempfile.mkdtemp(prefix="vlkg-bench-prepare-")
  try:
    start = time.perf_counter()
    path = write_corpus(os.path.join(root, "corpus"), n_images, val=max(1, n_images // 20))
    config = corpus_config(config, path, image_size, workers)
    tokenizer_dir = os.path.join(root, "tokenizer")
    os.makedirs(tokenizer_dir)
    from vlkg.data import corpora
    train = corpora.load("karpathy").read(corpora.Options.from_config(config)).splits["train"]
    desc = build.train_tokenizer(tokenizer_dir, train, config.input.vocab_size,
                                 config.seed, config.input.text_len, "")
    print(f"corpus: {n_images} JPEGs of 640x480 with 5 captions each, written in "
          f"{time.perf_counter() - start:.0f}s; records at {image_size} px, "
          f"{config.world.workers} worker processes")
    runs = []
    for r in range(repeats):
      runs.append(time_build(config, (desc, tokenizer_dir), root))
      t = runs[-1]
      print(f"build {r + 1}/{repeats}: {t['images'] / t['write_seconds']:.0f} images/s "
            f"once started, {t['images'] / t['seconds']:.0f} images/s end to end "
            f"({t['seconds']:.1f}s), {t['images'] / t['worker_seconds']:.0f} images/s per "
            f"process, {1e3 * t['worker_cpu_seconds'] / t['images']:.2f} CPU ms/image")
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return summary(runs, image_size, config.world.workers)


def summary(runs: list[dict], image_size: int, workers: int) -> dict:
  """The medians over ``runs`` (``time_build``'s), printed and returned."""
  rate = lambda seconds: statistics.median(t["images"] / t[seconds] for t in runs)
  out = {
      "images": runs[0]["images"], "image_size": image_size, "workers": workers,
      "repeats": len(runs),
      "images_per_second": rate("write_seconds"),
      "end_to_end_images_per_second": rate("seconds"),
      "images_per_second_per_process": rate("worker_seconds"),
      "cpu_ms_per_image": 1e3 * statistics.median(
          t["cpu_seconds"] / t["images"] for t in runs),
      "worker_cpu_ms_per_image": 1e3 * statistics.median(
          t["worker_cpu_seconds"] / t["images"] for t in runs),
      "seconds": statistics.median(t["seconds"] for t in runs),
      "bytes_per_image": statistics.median(t["bytes_per_image"] for t in runs),
  }
  out["idle_cores_images_per_second"] = \
      (os.cpu_count() or 1) * 1e3 / out["worker_cpu_ms_per_image"]
  print(f"prepare: {out['images_per_second']:.0f} images/s once started "
        f"({out['end_to_end_images_per_second']:.0f} end to end, "
        f"{out['images_per_second_per_process']:.0f} per process); CPU "
        f"{out['worker_cpu_ms_per_image']:.2f} ms/image once started, "
        f"{out['cpu_ms_per_image']:.2f} with start-up (the machine's {os.cpu_count()} "
        f"cores, if free: {out['idle_cores_images_per_second']:.0f} images/s once "
        f"started); {out['bytes_per_image'] / 1e3:.1f} KB/image in the records")
  return out
