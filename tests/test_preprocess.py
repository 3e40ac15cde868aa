"""vlkg.preprocess: CLIP's normalisation and resize, shared by training, evaluation
and vlkg.api (the resize's torchvision semantics are checked in
tests/convert/test_convert.py)."""

import jax
import numpy as np

from vlkg import preprocess


def test_normalize_images_uses_clip_mean_and_std():
  images = np.zeros((2, 3, 3, 3), np.uint8)
  images[1] = 255
  got = np.asarray(jax.jit(preprocess.normalize_images)(images))
  assert got.dtype == np.float32 and got.shape == (2, 3, 3, 3)
  np.testing.assert_allclose(got[0, 0, 0], -preprocess.CLIP_MEAN / preprocess.CLIP_STD,
                             rtol=1e-6)
  np.testing.assert_allclose(got[1, 2, 2], (1 - preprocess.CLIP_MEAN) / preprocess.CLIP_STD,
                             rtol=1e-6)
  np.testing.assert_allclose(got[1, 0, 0], [1.9303361, 2.0748837, 2.1458970], rtol=1e-6)


def test_resize_keeps_images_of_the_size_and_crops_others_square():
  images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  assert preprocess.resize(images, 8) is images
  wide = np.zeros((1, 4, 8, 3), np.uint8)
  wide[0, :, 2:6] = 200  # the center square survives the crop exactly
  np.testing.assert_array_equal(preprocess.resize(wide, 4), wide[:, :, 2:6])
  assert preprocess.resize(images, 4).shape == (2, 4, 4, 3)
