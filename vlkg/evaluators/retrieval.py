"""Image-text retrieval: the evaluator, and its metrics with open_clip's names.

The one retrieval evaluator of vlkg (``config.evals.<name>.type = "retrieval"``,
``python -m vlkg.tools.evaluate --benchmark retrieval``). `evaluate` ranks the
images and captions of either

* a split of a prepared dataset (`evaluate_split`; the world or a real corpus,
  e.g. a COCO run's held-out ``val``), metrics ``retrieval/<split>/...``; or
* a Karpathy-split file in its official layout with its image folder
  (`evaluate_file`; COCO / Flickr30k test), metrics ``retrieval/<name>/...``
  with ``<name>`` the file's stem,

and scores them with `retrieval_metrics`, every caption of every image.

open_clip (Ilharco et al. 2021, github.com/mlfoundations/open_clip,
``src/open_clip_train/train.py``, ``get_clip_metrics``) ranks every text for each
image and every image for each text by cosine similarity and reports, for
``image_to_text`` and ``text_to_image``:

* ``R@1``, ``R@5``, ``R@10``: ``np.mean(preds < k)`` with ``preds`` the 0-based
  position of the ground truth in the descending ranking;
* ``mean_rank``: ``preds.mean() + 1``;
* ``median_rank``: ``np.floor(np.median(preds)) + 1``; with an even count
  ``np.median`` averages the two middle ranks, and the floor rounds that down.

What open_clip leaves open, and what we do:

* Several captions per image. open_clip's validation pairs caption ``i`` with image
  ``i``, so both directions have one ground truth. Here an image may have many
  captions (COCO and the world have 5 and K). A text's ground truth is its image.
  An image's position is that of its BEST-ranked caption, i.e. it counts as found
  at ``k`` when any of its captions is in the top ``k`` (the usual COCO/Flickr
  protocol since Karpathy & Fei-Fei, CVPR 2015). With one caption per image this
  is exactly open_clip's number.
* Ties. open_clip's ``torch.argsort`` does not define an order among equal
  scores. We rank pessimistically: every competitor whose score EQUALS the ground
  truth's counts as ranked above it. A collapsed model (all embeddings equal) then
  gets the worst ranks, not the best, and the result does not depend on the
  order of the inputs. For image -> text, the image's other captions are not
  competitors. Embeddings that are equal get exactly equal scores here (each
  distinct embedding is multiplied once), so a tie is never lost to rounding.
"""

from __future__ import annotations

import os

import numpy as np

from vlkg.data import input_pipeline, records
from vlkg.data import tokenizer as tok_lib
from vlkg.data.benchmarks import karpathy
from vlkg.evaluators import common, encoder as encoder_lib

RECALL_KS = (1, 5, 10)
DIRECTIONS = ("image_to_text", "text_to_image")
# Bounds the [rows, M] similarity blocks to ~64 MB of float32.
_BLOCK_ELEMENTS = 1 << 24


def metric_names() -> list[str]:
  """The keys of `retrieval_metrics`, without a prefix."""
  return [f"{d}_{m}" for d in DIRECTIONS
          for m in [*(f"R@{k}" for k in RECALL_KS), "mean_rank", "median_rank"]]


def _summary(preds: np.ndarray, name: str) -> dict[str, float]:
  out = {f"{name}_mean_rank": float(preds.mean() + 1),
         f"{name}_median_rank": float(np.floor(np.median(preds)) + 1)}
  for k in RECALL_KS:
    out[f"{name}_R@{k}"] = float(np.mean(preds < k))
  return out


def _check(image_emb: np.ndarray, text_emb: np.ndarray,
           text_to_image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  image_emb = np.asarray(image_emb, dtype=np.float32)
  text_emb = np.asarray(text_emb, dtype=np.float32)
  text_to_image = np.asarray(text_to_image)
  if (image_emb.ndim != 2 or text_emb.ndim != 2
      or image_emb.shape[1] != text_emb.shape[1]):
    raise ValueError(f"need image_emb [N, D] and text_emb [M, D], got "
                     f"{image_emb.shape} and {text_emb.shape}")
  n, m = image_emb.shape[0], text_emb.shape[0]
  if n == 0 or m == 0:
    raise ValueError("retrieval needs at least one image and one text")
  if text_to_image.shape != (m,) or text_to_image.dtype.kind not in "iu":
    raise ValueError(f"text_to_image must be an int array of shape ({m},), got "
                     f"{text_to_image.dtype} {text_to_image.shape}")
  if text_to_image.min() < 0 or text_to_image.max() >= n:
    raise ValueError(f"text_to_image has values outside [0, {n})")
  without = np.setdiff1d(np.arange(n), text_to_image)
  if without.size:
    raise ValueError(f"{without.size} images have no caption (first: image "
                     f"{without[0]}); their image -> text rank is undefined")
  if not (np.isfinite(image_emb).all() and np.isfinite(text_emb).all()):
    raise ValueError("embeddings hold non-finite values")
  return image_emb, text_emb, text_to_image.astype(np.int64)


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray,
                      text_to_image: np.ndarray) -> dict[str, float]:
  """open_clip's retrieval metrics for N images and M captions.

  Scores are dot products, i.e. cosine similarities of L2-normalised embeddings.
  With several captions per image, the image -> text position of an image is the
  best (lowest) position among its captions; see the module docstring for this
  and for ties, which count against the model.

  Args:
    image_emb: float ``[N, D]``.
    text_emb: float ``[M, D]``.
    text_to_image: int ``[M]``, the image each caption describes; every image needs
      at least one caption.

  Returns:
    ``image_to_text_R@1``, ``_R@5``, ``_R@10``, ``_mean_rank``, ``_median_rank`` and
    the same for ``text_to_image``; ranks are 1-based. Keys have no prefix.

  Raises:
    ValueError: On bad shapes, an out-of-range index, an image without a caption, or
      a non-finite embedding.
  """
  image_emb, text_emb, text_to_image = _check(image_emb, text_emb, text_to_image)
  n, m = image_emb.shape[0], text_emb.shape[0]
  # Equal embeddings share one column/row of scores, so their ties are exact.
  images_u, image_inv = np.unique(image_emb, axis=0, return_inverse=True)
  texts_u, text_inv = np.unique(text_emb, axis=0, return_inverse=True)
  image_inv, text_inv = image_inv.reshape(-1), text_inv.reshape(-1)

  i2t = np.empty(n, dtype=np.int64)
  rows = max(1, _BLOCK_ELEMENTS // m)
  for start in range(0, n, rows):
    idx = np.arange(start, min(start + rows, n))
    scores = (images_u[image_inv[idx]] @ texts_u.T)[:, text_inv]  # [b, M]
    own = text_to_image[None, :] == idx[:, None]
    best = np.where(own, scores, -np.inf).max(axis=1)
    i2t[idx] = ((scores >= best[:, None]) & ~own).sum(axis=1)

  t2i = np.empty(m, dtype=np.int64)
  rows = max(1, _BLOCK_ELEMENTS // n)
  for start in range(0, m, rows):
    idx = np.arange(start, min(start + rows, m))
    scores = (texts_u[text_inv[idx]] @ images_u.T)[:, image_inv]  # [b, N]
    truth = scores[np.arange(len(idx)), text_to_image[idx]]
    # The ground truth itself satisfies >=; it is not a competitor.
    t2i[idx] = (scores >= truth[:, None]).sum(axis=1) - 1

  return {**_summary(i2t, "image_to_text"), **_summary(t2i, "text_to_image")}


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
  return {f"{prefix}/{name}": value for name, value in metrics.items()}


def evaluate_split(cache: common.EmbeddingCache, dataset_dir: str, split: str, *,
                   use_token_ids: bool | None = None) -> dict[str, float]:
  """Image-text retrieval over one split's records, all captions of every image.

  Args:
    cache: Wraps the encoder; the split's images are added to it.
    dataset_dir: A prepared dataset.
    split: The split whose records to read.
    use_token_ids: Embed captions from the records' token ids with
      ``encode_token_ids``; None means whenever the encoder has it. Otherwise the
      ids are decoded with the dataset's tokenizer and passed to ``encode_texts``.

  Returns:
    ``retrieval/<split>/<metric>`` for open_clip's metrics, plus ``n_items`` (images)
    and ``missing_images`` (0: records hold the pixels).
  """
  encoder = cache.encoder
  if use_token_ids is None:
    use_token_ids = encoder_lib.has_token_ids(encoder)
  elif use_token_ids and not encoder_lib.has_token_ids(encoder):
    raise ValueError("use_token_ids=True but the encoder has no encode_token_ids")
  manifest = records.read_manifest(dataset_dir)
  image_rows, ids = [], []
  matrix = np.zeros((0, 0), np.float32)
  # Every host reads the whole split: the metrics need all images against all texts.
  for batch in input_pipeline.eval_iterator(dataset_dir, split,
                                            batch_size=cache.batch_size,
                                            fields=("image",), process_index=0,
                                            process_count=1):
    real = batch["_mask"]
    if not real.any():
      continue
    rows, matrix = cache.image_rows(list(batch["image"][real]))
    image_rows.append(rows)
    ids.append(batch["texts"][real])
  if not ids:
    raise records.DataError(f"{dataset_dir}: split {split!r} has no records")
  image_emb = matrix[np.concatenate(image_rows)]
  ids_all = np.concatenate(ids)  # [N, K, L]
  n, k, length = ids_all.shape
  flat = ids_all.reshape(n * k, length)
  text_to_image = np.repeat(np.arange(n), k)
  # A caption slot with no tokens at all is padding, not a caption.
  real = (flat != tok_lib.PAD_ID).any(axis=1)
  flat, text_to_image = flat[real], text_to_image[real]
  if use_token_ids:
    text_emb = common.encode_unique_rows(encoder.encode_token_ids, flat,
                                         cache.batch_size, "encode_token_ids")
  else:
    tokenizer = tok_lib.from_description(manifest["tokenizer"], base_dir=dataset_dir)
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    text_emb = cache.texts(tokenizer.decode(unique))[inverse.reshape(-1)]
  prefix = f"retrieval/{split}"
  out = _prefixed(prefix, retrieval_metrics(image_emb, text_emb, text_to_image))
  out[f"{prefix}/n_items"] = float(n)
  out[f"{prefix}/missing_images"] = 0.0
  return out


def evaluate_file(cache: common.EmbeddingCache, data: str, images: str | None = None,
                  *, name: str | None = None, split: str = "test") -> dict[str, float]:
  """Image <-> text retrieval on a Karpathy file, open_clip's metrics.

  Captions are given to the encoder as stored (no cleaning, as open_clip's
  retrieval evaluation). Images are read from disk as the real benchmarks read
  them (`vlkg.evaluators.benchmark_images.embed_views`): a missing file is counted
  and its image left out.

  Args:
    cache: Wraps the encoder.
    data: A Karpathy file in either layout (`vlkg.data.benchmarks.karpathy`).
    images: The image root the file's paths are relative to; default its folder.
    name: The metric infix; default the file's stem (``coco_karpathy_test``).
    split: The split of an original-layout file.

  Returns:
    ``retrieval/<name>/image_to_text_R@1`` etc., ``n_items`` (images scored),
    ``n_texts`` and ``missing_images``.
  """
  # The real benchmarks' image streaming; imported here, as that module imports
  # this one.
  from vlkg.evaluators import benchmark_images as rb
  name = name or os.path.splitext(os.path.basename(data))[0]
  benchmark = f"retrieval/{name}"
  entries = karpathy.read_karpathy(data, split)
  root = images or rb.default_image_root(data)
  rows, matrix, missing = rb.embed_views(
      cache, [rb.View(os.path.join(root, e.image)) for e in entries])
  kept = rows >= 0
  rb.report_missing(benchmark, data, root, missing,
                     int(kept.sum()))
  texts, text_to_image = [], []
  for j, entry in enumerate(e for e, ok in zip(entries, kept.tolist()) if ok):
    texts.extend(entry.captions)
    text_to_image.extend([j] * len(entry.captions))
  metrics = retrieval_metrics(matrix[rows[kept]], cache.texts(texts),
                              np.asarray(text_to_image, np.int64))
  return (_prefixed(benchmark, metrics)
          | {f"{benchmark}/n_items": float(kept.sum()),
             f"{benchmark}/missing_images": float(len(missing)),
             f"{benchmark}/n_texts": float(len(texts))})


def evaluate(encoder: encoder_lib.Encoder, dataset_dir: str | None = None, *,
             split: str | None = None, data: str | None = None,
             images: str | None = None, name: str | None = None,
             batch_size: int = 256,
             use_token_ids: bool | None = None) -> dict[str, float]:
  """Retrieval on a prepared dataset's split, or on a Karpathy file (``data``).

  Args:
    encoder: The model (`vlkg.evaluators.encoder.Encoder`).
    dataset_dir: A prepared dataset (what the trainer passes every evaluator);
      ignored when ``data`` is given.
    split: The dataset's split (default ``"val"``), or an original-layout Karpathy
      file's (default ``"test"``).
    data: A Karpathy file to rank instead of the dataset (`evaluate_file`).
    images: The image root of ``data``; default its folder.
    name: The metric infix for ``data``; default its stem.
    batch_size: The largest batch passed to the encoder.
    use_token_ids: For a dataset split; see `evaluate_split`.

  Returns:
    ``retrieval/<split or name>/...`` metrics.
  """
  cache = common.EmbeddingCache(encoder, batch_size)
  if data is not None:
    return evaluate_file(cache, os.fspath(data), images, name=name,
                         split=split or "test")
  if dataset_dir is None:
    raise ValueError("retrieval needs a prepared dataset_dir or a Karpathy file (data)")
  return evaluate_split(cache, dataset_dir, split or "val", use_token_ids=use_token_ids)
