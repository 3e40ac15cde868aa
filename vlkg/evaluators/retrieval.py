"""Image-text retrieval metrics with open_clip's names and definitions.

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

import numpy as np

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
