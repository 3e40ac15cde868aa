"""Linear probes on a tiny prepared world, with encoders whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from configs import clip
from vlkg.data import prepare
from vlkg.data.world import ontology
from vlkg.evaluators import probe

TINY = ("smoke,world.num_train=64,world.num_val=48,world.num_test=48,"
        "world.num_test_comp=16,world.num_shards=2,world.workers=1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  return prepare.ensure_prepared(clip.get_config(TINY + f",data_dir='{root}'"))


class ColorOracle:
  """Embeds each one-object image as the one-hot of its true color (looked up by its
  pixels), so it knows color perfectly and nothing else."""

  def __init__(self, dataset):
    self.color_of = {}
    for split in ("val", "test"):
      images, attrs = probe.single_object_attributes(dataset, split)
      self.color_of.update({im.tobytes(): a[1] for im, a in zip(images, attrs)})

  def encode_images(self, images):
    return np.eye(len(ontology.COLORS))[[self.color_of[im.tobytes()] for im in images]]


def test_one_object_images_carry_their_attributes(dataset):
  images, attrs = probe.single_object_attributes(dataset, "test")
  assert len(images) == len(attrs) > 0
  assert images.dtype == np.uint8 and attrs.shape == (len(images), 5)
  assert attrs[:, 0].max() < len(ontology.SHAPES)
  assert attrs[:, 1].max() < len(ontology.COLORS)
  assert set(attrs[:, 4]) <= {0, 1, 2, 3}


def test_quadrant_hand_worked():
  # (x, y, w, h) on a 64-pixel image: centres (10, 10), (50, 10), (10, 50), (40, 40),
  # and (32, 31): on the vertical middle line counts as right.
  boxes = np.array([[5, 5, 10, 10], [45, 5, 10, 10], [5, 45, 10, 10],
                    [30, 30, 20, 20], [30, 29, 4, 4]], np.float32)
  np.testing.assert_array_equal(probe.quadrant(boxes, 64), [0, 1, 2, 3, 1])


def test_position_of_each_one_object_image_matches_its_pixels(dataset):
  # The object's pixels differ from the background's: their centroid lies in the
  # quadrant the probe's label names.
  images, attrs = probe.single_object_attributes(dataset, "test")
  for image, where in zip(images, attrs[:, 4]):
    background = image[0, 0].astype(int)
    ys, xs = np.nonzero(np.abs(image.astype(int) - background).sum(-1) > 60)
    if len(xs) < 4:
      continue
    size = image.shape[0]
    got = 2 * (ys.mean() >= size / 2) + (xs.mean() >= size / 2)
    near_middle = min(abs(ys.mean() - size / 2), abs(xs.mean() - size / 2)) < 3
    assert near_middle or got == where


def test_ridge_classifier_separates_separable_data():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 60)
  x = np.eye(3)[y] * 5 + rng.normal(0, 0.1, (60, 3))
  weights = probe.ridge_classifier(x, y, 3)
  assert weights.shape == (4, 3)
  np.testing.assert_array_equal(probe.predict(weights, x), y)


def test_color_oracle_is_perfect_on_color_only(dataset):
  # Fitted and scored on the same split: the tiny val split misses some colors.
  result = probe.evaluate(ColorOracle(dataset), dataset, "test", "test")
  assert result["probe/color"] == 1.0
  # The embedding holds color only, so no classifier on it beats the best
  # color -> shape lookup table on the scored items.
  _, attrs = probe.single_object_attributes(dataset, "test")
  best_lookup = sum(np.bincount(attrs[attrs[:, 1] == c, 0]).max()
                    for c in np.unique(attrs[:, 1])) / len(attrs)
  assert result["probe/shape"] <= best_lookup + 1e-9
  assert result["probe/n_fit"] > 0 and result["probe/n_score"] > 0


def test_constant_encoder_scores_the_majority_class(dataset):
  class Constant:
    def encode_images(self, images):
      return np.ones((len(images), 4))
  result = probe.evaluate(Constant(), dataset)
  for name in probe.ATTRIBUTES:
    assert result[f"probe/{name}"] == result[f"probe/{name}_chance"]
