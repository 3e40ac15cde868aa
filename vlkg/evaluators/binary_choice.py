"""Scoring "image + true caption + false caption(s)" items, and the official tie rules.

One scorer serves ARO's VG-Relation / VG-Attribution and COCO/Flickr-Order
(Yuksekgonul et al., ICLR 2023), SugarCrepe (Hsieh et al., NeurIPS 2023 D&B) and the
world's suites that copy their formats. Each option's score is the cosine
similarity of the image and the caption, as in those benchmarks' CLIP evaluations.

The benchmarks differ only in how a tie is counted (`vlkg.data.benchmarks.choice`):

* ARO relation/attribution: options ``[false, true]``; a tie is WRONG
  (`vlkg.data.benchmarks.aro.TIE_RULE`).
* SugarCrepe: options ``[positive, negative]``; a tie is WRONG
  (`vlkg.data.benchmarks.sugarcrepe.TIE_RULE`).
* Order: option 0 is the original; a tie with the original is CORRECT
  (`vlkg.data.benchmarks.order.order_correct`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from vlkg import files
from vlkg.data.benchmarks import aro
from vlkg.data.benchmarks import sugarcrepe
from vlkg.evaluators import common
from vlkg.evaluators.encoder import Encoder

# Bounds the float64 [items, options, D] product to ~64 MB.
_BLOCK_ELEMENTS = 1 << 23


class ImageLoadError(ValueError):
  """An image file that exists but cannot be decoded."""


def load_image(path: str | os.PathLike[str], *,
               missing_ok: bool = False) -> np.ndarray | None:
  """Reads an image file as uint8 RGB.

  Args:
    path: Any format Pillow reads; grey, palette and RGBA images become RGB, as
      the official loaders' ``.convert("RGB")`` does.
    missing_ok: Return None for a file that does not exist instead of raising, so
      that callers can count ``missing_images`` (partial downloads of COCO/VG are
      common) and score the rest.

  Returns:
    uint8 ``[H, W, 3]``, or None for a missing file when ``missing_ok``.

  Raises:
    FileNotFoundError: If the file does not exist and not ``missing_ok``.
    ImageLoadError: If the file exists but is not a readable image (truncated,
      corrupt); never swallowed, since a damaged dataset should be fixed, not
      silently scored on fewer items.
  """
  from PIL import Image
  path = os.fspath(path)
  if not files.isfile(path):
    if missing_ok:
      return None
    raise FileNotFoundError(f"image file not found: {path}")
  try:
    with files.open(path, "rb") as f, Image.open(f) as image:
      return np.asarray(image.convert("RGB"), dtype=np.uint8)
  except (OSError, ValueError, SyntaxError) as e:  # Pillow's decode errors
    raise ImageLoadError(f"cannot read image {path}: {e}") from e


def choice_scores(encoder: Encoder, images: Sequence[np.ndarray],
                  options: Sequence[Sequence[str]], batch_size: int = 256, *,
                  cache: common.EmbeddingCache | None = None) -> np.ndarray:
  """Cosine similarity of each item's image with each of its caption options.

  Every distinct image (by pixels) and caption (by text) is encoded once, and with
  a shared ``cache`` once across calls too; scoring itself is numpy. Options with
  equal embeddings get bit-identical scores, so ties are real ties.

  Args:
    encoder: The model.
    images: N uint8 ``[H, W, 3]`` images (sizes may differ between items).
    options: N lists of the same length K: the captions of each item, in the order
      the benchmark's tie rule expects (see the module docstring).
    batch_size: The largest batch passed to the encoder (ignored with ``cache``,
      which has its own).
    cache: Embeddings to reuse and extend; must wrap ``encoder``.

  Returns:
    float64 ``[N, K]`` scores.

  Raises:
    ValueError: If the lengths differ, items have different numbers of options, the
      cache wraps another encoder, or an encoder output is malformed.
  """
  if len(images) != len(options):
    raise ValueError(f"got {len(images)} images but {len(options)} option lists")
  counts = {len(o) for o in options}
  if len(counts) > 1:
    raise ValueError(f"items have different numbers of options: {sorted(counts)}")
  k = counts.pop() if counts else 0
  if options and k == 0:
    raise ValueError("items have no options")
  if cache is None:
    cache = common.EmbeddingCache(encoder, batch_size)
  elif cache.encoder is not encoder:
    raise ValueError("cache was built for another encoder")
  n = len(images)
  if n == 0:
    return np.zeros((0, k), np.float64)
  image_rows, image_matrix = cache.image_rows(images)
  text_rows, text_matrix = cache.text_rows([t for o in options for t in o])
  return scores_from_rows(image_matrix, image_rows, text_matrix,
                          text_rows.reshape(n, k))


def scores_from_rows(image_matrix: np.ndarray, image_rows: np.ndarray,
                     text_matrix: np.ndarray, text_rows: np.ndarray) -> np.ndarray:
  """Scores from embeddings already in an `EmbeddingCache`'s matrices.

  For callers that fetched the rows of many suites in one cache call, so that each
  image is looked up (hashed) once.

  Args:
    image_matrix: float32 ``[U, D]`` image embeddings.
    image_rows: int ``[N]`` row of each item's image.
    text_matrix: float32 ``[V, D]`` caption embeddings.
    text_rows: int ``[N, K]`` row of each item's options.

  Returns:
    float64 ``[N, K]`` dot products.
  """
  n, k = text_rows.shape
  if image_rows.shape != (n,):
    raise ValueError(f"image_rows has shape {image_rows.shape}, expected ({n},)")
  scores = np.empty((n, k), np.float64)
  if n == 0:
    return scores
  if image_matrix.shape[1] != text_matrix.shape[1]:
    raise ValueError(f"image embeddings have width {image_matrix.shape[1]} but text "
                     f"embeddings {text_matrix.shape[1]}")
  step = max(1, _BLOCK_ELEMENTS // (k * image_matrix.shape[1]))
  for start in range(0, n, step):
    part = slice(start, start + step)
    im = image_matrix[image_rows[part]].astype(np.float64)[:, None, :]
    tx = text_matrix[text_rows[part]].astype(np.float64)
    # An elementwise product summed along the contiguous axis repeats the same
    # operations for every option of an item, so equal embeddings tie exactly; a
    # blocked BLAS matmul may round two equal columns differently.
    scores[part] = (im * tx).sum(axis=-1)
  return scores


def _two_columns(scores: np.ndarray) -> np.ndarray:
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 2 or scores.shape[1] != 2:
    raise ValueError(f"scores must be [N, 2], got shape {scores.shape}")
  return scores


def aro_correct(scores: np.ndarray) -> np.ndarray:
  """ARO's rule per item for scores ``[N, 2]`` ordered ``[false, true]``.

  Returns:
    bool ``[N]``: the true caption scores strictly higher (a tie is wrong).
  """
  return aro.TIE_RULE.correct(_two_columns(scores))


def sugarcrepe_correct(scores: np.ndarray) -> np.ndarray:
  """SugarCrepe's rule per item for scores ``[N, 2]`` ordered ``[positive, negative]``.

  Returns:
    bool ``[N]``: the positive caption scores strictly higher (a tie is wrong).
  """
  return sugarcrepe.TIE_RULE.correct(_two_columns(scores))

