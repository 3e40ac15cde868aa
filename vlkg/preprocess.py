"""The model's image preprocessing, in one place for training, evaluation and ``api``.

Images travel as uint8 ``[B, H, W, 3]`` everywhere (records, benchmarks, user
input). Two steps turn them into what the image tower reads:

* `resize` (host side, numpy): CLIP's eval transform to the model's square input
  size, ``config.model.image_size``; corpora are prepared with it too, so that the
  model trains on the pixels it is evaluated on;
* `normalize_images` (device side, jittable): scale to [0, 1] and standardise with
  CLIP's mean and std, inside the jitted training step and the encoders.

Constants and the transform are those of CLIP's released code (Radford et al.,
"Learning Transferable Visual Models From Natural Language Supervision", ICML 2021;
``clip.load``'s ``_transform``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def normalize_images(images: jax.Array) -> jax.Array:
  """uint8 [B,H,W,3] -> float32 normalised with CLIP's mean/std (jittable)."""
  x = images.astype(jnp.float32) / 255.0
  return (x - CLIP_MEAN) / CLIP_STD


def resize(images: np.ndarray, size: int) -> np.ndarray:
  """CLIP's eval transform: bicubic resize of the shorter side, then a center crop.

  Matches torchvision's ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` on PIL
  images, which OpenAI's ``clip.load`` and open_clip's ``image_transform`` use: the
  longer side becomes ``int(size * long / short)`` (truncated), an image whose
  shorter side is already ``size`` is not resampled, and the crop's offsets are
  ``round((side - size) / 2)`` (Python's round, half to even).

  Args:
    images: uint8 ``[B, H, W, 3]``.
    size: The output side.

  Returns:
    uint8 ``[B, size, size, 3]``; ``images`` itself when already that size.
  """
  if images.shape[1:3] == (size, size):
    return images
  from PIL import Image
  out = []
  for im in images:
    h, w = im.shape[:2]
    short, long = min(h, w), max(h, w)
    new_long = int(size * long / short)
    new_h, new_w = (new_long, size) if w <= h else (size, new_long)
    pil = Image.fromarray(im)
    if (new_h, new_w) != (h, w):
      pil = pil.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
    out.append(np.asarray(pil.crop((left, top, left + size, top + size))))
  return np.stack(out)
