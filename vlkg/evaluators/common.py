"""Shared plumbing for evaluators: batched encoder calls with checked outputs, and a
cache that embeds each distinct image and caption once.

Benchmarks reuse their inputs heavily: on the world every test image appears in up
to ten suites and in retrieval, ARO's VG-Relation has ~23k items over far fewer
images, and many captions recur across items. Encoding is the only costly part of
an evaluation, so everything that reaches the model goes through `EmbeddingCache`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# Relative slack on the unit norm: bfloat16 models normalise in low precision, but
# an unnormalised output (norms of ~10 or ~0.1) must not pass as cosine scores.
NORM_TOLERANCE = 1e-2


def check_embeddings(embeddings: Any, n: int, what: str) -> np.ndarray:
  """Checks an encoder output and returns it as float32 ``[n, D]``.

  Args:
    embeddings: What the encoder returned (numpy or jax array).
    n: The number of inputs it was given.
    what: The method, for error messages (e.g. ``"encode_texts"``).

  Returns:
    The embeddings as a float32 numpy array.

  Raises:
    ValueError: If the shape is not ``[n, D]``, a value is not finite, or a row is
      not of unit L2 norm (within `NORM_TOLERANCE`).
  """
  arr = np.asarray(embeddings)
  if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
    raise ValueError(f"{what} returned shape {arr.shape} for {n} inputs; expected "
                     f"[{n}, D]")
  arr = arr.astype(np.float32, copy=False)
  if not np.isfinite(arr).all():
    raise ValueError(f"{what} returned non-finite values")
  norms = np.linalg.norm(arr.astype(np.float64), axis=1)
  worst = int(np.argmax(np.abs(norms - 1.0)))
  if abs(norms[worst] - 1.0) > NORM_TOLERANCE:
    raise ValueError(f"{what} must return L2-normalised rows; row {worst} has norm "
                     f"{norms[worst]:.4g}")
  return arr


def encode_batched(fn: Callable[[Any], Any], inputs: Sequence[Any] | np.ndarray,
                   batch_size: int, what: str) -> np.ndarray:
  """Calls ``fn`` on consecutive slices of ``inputs`` and concatenates the results.

  Args:
    fn: An encoder method.
    inputs: A non-empty array (sliced along axis 0) or list.
    batch_size: The largest slice passed to ``fn``.
    what: The method's name, for error messages.

  Returns:
    float32 ``[len(inputs), D]``.

  Raises:
    ValueError: If ``batch_size`` is not positive, ``inputs`` is empty, or an
      output fails `check_embeddings` or changes width between batches.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  n = len(inputs)
  if n == 0:
    raise ValueError(f"{what}: nothing to encode")
  chunks = []
  for start in range(0, n, batch_size):
    part = inputs[start:start + batch_size]
    chunks.append(check_embeddings(fn(part), len(part), what))
  widths = {c.shape[1] for c in chunks}
  if len(widths) > 1:
    raise ValueError(f"{what} returned embeddings of different widths {sorted(widths)}")
  return np.concatenate(chunks)


def image_key(image: np.ndarray) -> tuple[tuple[int, ...], bytes]:
  """A content key for an image: equal pixels give equal keys.

  Content rather than object identity, so that the same picture read twice (from a
  PNG by one suite, from a TFRecord by retrieval, or cropped to the same box) is
  still encoded once.
  """
  data = np.ascontiguousarray(image)
  return data.shape, hashlib.blake2b(data.data, digest_size=16).digest()


def _check_image(image: Any, index: int) -> np.ndarray:
  if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
    kind = getattr(image, "dtype", type(image).__name__)
    raise ValueError(f"image {index} must be a uint8 numpy array, got {kind}")
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"image {index} must be [H, W, 3], got shape {image.shape}")
  return image


class _Store:
  """Append-only key -> embedding-row table."""

  def __init__(self) -> None:
    self.rows: dict[Any, int] = {}
    self._blocks: list[np.ndarray] = []
    self._matrix: np.ndarray | None = None

  def add(self, keys: Sequence[Any], embeddings: np.ndarray) -> None:
    if self._blocks and embeddings.shape[1] != self._blocks[0].shape[1]:
      raise ValueError(f"encoder returned width {embeddings.shape[1]}, earlier "
                       f"{self._blocks[0].shape[1]}")
    start = len(self.rows)
    for offset, key in enumerate(keys):
      self.rows[key] = start + offset
    self._blocks.append(embeddings)
    self._matrix = None

  def matrix(self) -> np.ndarray:
    if self._matrix is None:
      self._matrix = np.concatenate(self._blocks)
      self._blocks = [self._matrix]
    return self._matrix


class EmbeddingCache:
  """Embeds images (keyed by pixels) and captions (keyed by text) at most once.

  Misses are encoded in batches of ``batch_size`` when a lookup asks for them, so
  the caller decides how large the encoder's calls are: asking for everything an
  evaluation needs in one call gives the fewest, fullest batches.
  """

  def __init__(self, encoder: Any, batch_size: int) -> None:
    """Creates an empty cache.

    Args:
      encoder: An `vlkg.evaluators.encoder.Encoder`.
      batch_size: The largest batch passed to the encoder.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.encoder = encoder
    self.batch_size = batch_size
    self._images = _Store()
    self._texts = _Store()
    self.images_encoded = 0
    self.texts_encoded = 0

  def image_rows(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the cache's image-embedding matrix for ``images``; encodes new ones.

    Args:
      images: uint8 ``[H, W, 3]`` arrays; sizes may differ.

    Returns:
      ``(rows, matrix)``: int ``[len(images)]`` rows and the float32 ``[U, D]``
      matrix they index.
    """
    keys = [image_key(_check_image(im, i)) for i, im in enumerate(images)]
    missing: dict[Any, np.ndarray] = {}
    for key, image in zip(keys, images):
      if key not in self._images.rows and key not in missing:
        missing[key] = image
    # The encoder takes [B, H, W, 3], so only images of one shape share a batch.
    by_shape: dict[tuple[int, ...], list[Any]] = {}
    for key in missing:
      by_shape.setdefault(key[0], []).append(key)
    for group in by_shape.values():
      for start in range(0, len(group), self.batch_size):
        part = group[start:start + self.batch_size]
        batch = np.stack([missing[k] for k in part])
        emb = encode_batched(self.encoder.encode_images, batch, self.batch_size,
                             "encode_images")
        self._images.add(part, emb)
        self.images_encoded += len(part)
    rows = np.array([self._images.rows[k] for k in keys], dtype=np.int64)
    return rows, (self._images.matrix() if keys else np.zeros((0, 0), np.float32))

  def text_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices into a float32 ``[U, D]`` matrix for ``texts``; see `image_rows`."""
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise ValueError(f"text {i} must be a str, got {type(text).__name__}")
    missing = list(dict.fromkeys(t for t in texts if t not in self._texts.rows))
    if missing:
      emb = encode_batched(self.encoder.encode_texts, missing, self.batch_size,
                           "encode_texts")
      self._texts.add(missing, emb)
      self.texts_encoded += len(missing)
    rows = np.array([self._texts.rows[t] for t in texts], dtype=np.int64)
    return rows, (self._texts.matrix() if len(texts) else np.zeros((0, 0), np.float32))

  def images(self, images: Sequence[np.ndarray]) -> np.ndarray:
    """float32 ``[len(images), D]`` embeddings, encoding only unseen images."""
    rows, matrix = self.image_rows(images)
    return matrix[rows]

  def texts(self, texts: Sequence[str]) -> np.ndarray:
    """float32 ``[len(texts), D]`` embeddings, encoding only unseen texts."""
    rows, matrix = self.text_rows(texts)
    return matrix[rows]


def encode_unique_rows(fn: Callable[[np.ndarray], Any], ids: np.ndarray,
                       batch_size: int, what: str) -> np.ndarray:
  """Encodes the distinct rows of ``ids`` once and returns one embedding per row.

  Args:
    fn: e.g. ``encoder.encode_token_ids``.
    ids: ``[N, L]`` token ids.
    batch_size: The largest batch passed to ``fn``.
    what: The method's name, for error messages.

  Returns:
    float32 ``[N, D]``.
  """
  unique, inverse = np.unique(ids, axis=0, return_inverse=True)
  emb = encode_batched(fn, unique, batch_size, what)
  return emb[inverse.reshape(-1)]
