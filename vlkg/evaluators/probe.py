"""Linear probes of the image embedding: what does the image tower know?

For the world's single-object images, a ridge-regression one-vs-all classifier is
fitted on the embeddings of one split and scored on another, once per object
attribute (shape, color, size, texture) and for where the object is (``position``:
the image quadrant of its centre, which spatial relations presuppose). Chance is
1 / number of classes (shape 1/9, color 1/8, size 1/2, position 1/4, texture about
0.6 for the majority class "solid").

The structure methods' claims (attribute binding, relations) presuppose an image
tower that encodes the attributes being bound; when a suite sits at chance, this
probe says whether the attributes themselves are missing (docs/results.md). The
classifier is closed-form and seed-free, so the figures are exactly reproducible.
"""

from __future__ import annotations

import numpy as np

from vlkg.data import input_pipeline
from vlkg.data.world import ontology
from vlkg.evaluators.encoder import Encoder

ATTRIBUTES = ("shape", "color", "size", "texture", "position")
QUADRANTS = 4  # position classes: 2 * (centre below the middle) + (right of it)


def quadrant(boxes: np.ndarray, image_size: int) -> np.ndarray:
  """[N] quadrant ids of (x, y, w, h) boxes [N, 4]: 0 top left, 1 top right,
  2 bottom left, 3 bottom right (image y grows downwards)."""
  cx = boxes[:, 0] + boxes[:, 2] / 2
  cy = boxes[:, 1] + boxes[:, 3] / 2
  return (2 * (cy >= image_size / 2) + (cx >= image_size / 2)).astype(np.int64)


def single_object_attributes(dataset_dir: str, split: str,
                             batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 images [N, H, W, 3], attribute ids [N, 5]) of the split's one-object scenes.

  The attribute columns follow ``ATTRIBUTES`` (ids index ``ontology.SHAPES``,
  ``COLORS``, ``SIZES``, ``TEXTURES``; the last is the object's `quadrant`).
  """
  images, attributes = [], []
  for batch in input_pipeline.eval_iterator(dataset_dir, split, batch_size=batch_size,
                                            fields=("image", "objects")):
    keep = batch["_mask"] & (batch["num_objects"] == 1)
    images.append(batch["image"][keep])
    where = quadrant(batch["boxes"][keep, 0], batch["image"].shape[1])
    attributes.append(np.concatenate([batch["object_attributes"][keep, 0],
                                      where[:, None]], axis=1))
  return np.concatenate(images), np.concatenate(attributes)


def ridge_classifier(x: np.ndarray, y: np.ndarray, num_classes: int,
                     ridge: float = 1e-2) -> np.ndarray:
  """Weights [D + 1, C] of least squares onto one-hot targets (bias in the last row)."""
  xb = np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1).astype(np.float64)
  targets = np.eye(num_classes)[y]
  gram = xb.T @ xb + ridge * len(x) * np.eye(xb.shape[1])
  return np.linalg.solve(gram, xb.T @ targets)


def predict(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
  xb = np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1)
  return np.argmax(xb @ weights, axis=1)


def evaluate(encoder: Encoder, dataset_dir: str, fit_split: str = "val",
             score_split: str = "test", ridge: float = 1e-2) -> dict[str, float]:
  """``probe/<attribute>`` accuracies and ``probe/<attribute>_chance`` baselines.

  Args:
    encoder: anything with ``encode_images`` (uint8 -> [N, D]).
    dataset_dir: a prepared world dataset.
    fit_split: split whose one-object images fit the classifiers.
    score_split: split they are scored on.
    ridge: L2 penalty per example on the (un-normalised) embedding.
  """
  num_classes = (len(ontology.SHAPES), len(ontology.COLORS), len(ontology.SIZES),
                 len(ontology.TEXTURES), QUADRANTS)
  fit_images, fit_y = single_object_attributes(dataset_dir, fit_split)
  score_images, score_y = single_object_attributes(dataset_dir, score_split)
  if not len(fit_y) or not len(score_y):
    raise ValueError(f"{dataset_dir}: no one-object images in split "
                     f"{fit_split if not len(fit_y) else score_split!r}")
  fit_x = np.asarray(encoder.encode_images(fit_images), np.float64)
  score_x = np.asarray(encoder.encode_images(score_images), np.float64)
  out = {"probe/n_fit": float(len(fit_y)), "probe/n_score": float(len(score_y))}
  for k, (name, c) in enumerate(zip(ATTRIBUTES, num_classes)):
    weights = ridge_classifier(fit_x, fit_y[:, k], c, ridge)
    out[f"probe/{name}"] = float(np.mean(predict(weights, score_x) == score_y[:, k]))
    # The best constant guess, learned on the fit split.
    majority = np.bincount(fit_y[:, k], minlength=c).argmax()
    out[f"probe/{name}_chance"] = float(np.mean(score_y[:, k] == majority))
  return out
