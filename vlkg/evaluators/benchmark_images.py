"""Benchmark images read from disk as the model sees them, streamed in chunks.

The real benchmarks (`vlkg.evaluators.real_benchmarks`) name their images by file:
ARO crops each to an item's bbox, the others use it whole. Each distinct view is
decoded and encoded once, ``batch_size`` at a time, and only its embedding is kept,
so memory does not grow with the number of images. Missing files are counted, not
fatal, because partial downloads of COCO or Visual Genome are common; a file that
exists but cannot be decoded is an error that names it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from vlkg import files
from vlkg.data.benchmarks import aro
from vlkg.evaluators import binary_choice, common
from vlkg.evaluators.encoder import Encoder


@dataclasses.dataclass(frozen=True)
class View:
  """One image as the model sees it: a file, optionally cropped (ARO's bbox)."""

  path: str
  bbox: tuple[float, float, float, float] | None = None


def _presizer(encoder: Encoder) -> Callable[[np.ndarray], np.ndarray]:
  """The encoder's own resize, applied per image, when we know it.

  `vlkg.api.Model` resizes each image alone (CLIP's bicubic shorter-side resize and
  center crop) and then encodes a fixed [B, S, S, 3] batch. Real benchmark images
  differ in size, and only same-shaped images can share an ``encode_images`` call,
  so without this every size would be its own small batch (and a jit compile per
  batch length). Running that same resize here gives bit-identical pixels, after
  which the model's own resize is the identity. Other encoders get raw pixels.
  """
  api = sys.modules.get("vlkg.api")  # an api.Model exists only if this is imported
  if api is not None and isinstance(encoder, api.Model):
    size = encoder.image_size
    from vlkg import preprocess
    return lambda image: preprocess.resize(image[None], size)[0]
  return lambda image: image


def _crop(image: np.ndarray, view: View) -> np.ndarray:
  crop = aro.crop_to_bbox(image, view.bbox)
  if crop.shape[0] == 0 or crop.shape[1] == 0:
    raise ValueError(f"{view.path}: bbox (x, y, w, h) = {view.bbox} gives an empty "
                     "crop")
  return crop


def embed_views(cache: common.EmbeddingCache,
                views: Sequence[View]) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Embeds image views read from disk, ``cache.batch_size`` images at a time.

  Each distinct view is read and encoded once; views of one file are read from
  one decode (they are processed in path order).

  Args:
    cache: Wraps the encoder.
    views: The views, repeats allowed.

  Returns:
    ``(rows, matrix, missing)``: int ``[len(views)]`` rows of the float32 ``[U, D]``
    ``matrix`` (-1 for a view whose file does not exist), and the sorted distinct
    paths that do not exist.

  Raises:
    vlkg.evaluators.binary_choice.ImageLoadError: If a file exists but is not a
      readable image; the message names the file.
    ValueError: If a bbox gives an empty crop.
  """
  distinct = list(dict.fromkeys(views))
  exists = {p: files.isfile(p) for p in dict.fromkeys(v.path for v in distinct)}
  missing = sorted(p for p, ok in exists.items() if not ok)
  todo = sorted((v for v in distinct if exists[v.path]),
                key=lambda v: (v.path, v.bbox or ()))
  presize = _presizer(cache.encoder)
  row_of: dict[View, int] = {}
  matrix = np.zeros((0, 0), np.float32)
  loaded_path, loaded = None, None
  for start in range(0, len(todo), cache.batch_size):
    part = todo[start:start + cache.batch_size]
    pixels = []
    for view in part:
      if view.path != loaded_path:
        loaded_path, loaded = view.path, binary_choice.load_image(view.path)
      pixels.append(presize(loaded if view.bbox is None else _crop(loaded, view)))
    rows, matrix = cache.image_rows(pixels)
    row_of.update(zip(part, rows.tolist()))
  rows = np.array([row_of.get(v, -1) for v in views], dtype=np.int64)
  return rows, matrix, missing


def existing(paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
  """Which items' image files exist: a bool mask over ``paths`` (repeats allowed) and
  the sorted distinct paths that do not."""
  found = {p: files.isfile(p) for p in dict.fromkeys(paths)}
  mask = np.array([found[p] for p in paths], dtype=bool)
  return mask, sorted(p for p, ok in found.items() if not ok)


def pixel_chunks(encoder: Encoder, paths: Sequence[str], items: Sequence[int],
                 batch_size: int) -> Iterator[tuple[list[int], np.ndarray]]:
  """The pixels of ``items`` (indices into ``paths``, whose files exist), for
  scorers that take images rather than embeddings (``answer_scores``,
  ``link_scores``).

  Items are taken ``batch_size`` at a time, in order; each path is decoded once per
  chunk and resized as the encoder would (`_presizer`), and a chunk is split by
  image shape, since a call takes one ``[n, H, W, 3]`` array.

  Yields:
    ``(item_indices, uint8 [n, H, W, 3])``.
  """
  presize = _presizer(encoder)
  for start in range(0, len(items), batch_size):
    part = list(items[start:start + batch_size])
    decoded = {p: presize(binary_choice.load_image(p))
               for p in dict.fromkeys(paths[i] for i in part)}
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i in part:
      by_shape.setdefault(decoded[paths[i]].shape, []).append(i)
    for group in by_shape.values():
      yield group, np.stack([decoded[paths[i]] for i in group])


def report_missing(benchmark: str, data: str, root: str, missing: list[str],
                    n_scored: int) -> None:
  if missing and n_scored == 0:
    raise FileNotFoundError(
        f"{benchmark}: none of the images of {data} was found under {root} "
        f"({len(missing)} files missing, first: {missing[0]}); pass the image folder "
        "with --images")
  if missing:
    logging.warning("%s: %d image files missing (first: %s); their items are not "
                    "scored", benchmark, len(missing), missing[0])


def subdir_or_root(root: str, subdir: str) -> str:
  """``root/subdir`` when it exists (the official layout), else ``root`` itself."""
  candidate = os.path.join(root, subdir)
  return candidate if files.isdir(candidate) else root


def default_image_root(data: str) -> str:
  """The folder of ``data``, or ``data`` itself when it is a folder."""
  data = os.fspath(data)
  return data if files.isdir(data) else os.path.dirname(files.abspath(data))
