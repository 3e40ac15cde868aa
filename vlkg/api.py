"""The Python face of a trained model, for Colab and for evaluation elsewhere.

    from vlkg import api
    model = api.load("/tmp/vlkg_clip")          # a workdir, or a params.npz
    zi = model.encode_images(uint8_images)       # [B, D], L2-normalised numpy
    zt = model.encode_texts(["a red circle"])    # [N, D]
    zp = model.encode_image_tokens(uint8_images) # [B, P, D] patch tokens, each unit
    s = model.score(uint8_images, texts)         # [B, N] cosine similarities

``load`` needs only ``params.npz`` and the ``config.json`` beside it (the run's
config, with the tokenizer's description and the dataset it was trained on), so it
also loads CLIP weights imported with ``python -m vlkg.tools.import_clip``; their
``config.model.image_size`` (224) sets the input size and preprocessing is that of
OpenAI's ``clip.load`` (bicubic resize, center crop, CLIP mean/std).
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np

from vlkg import files
from vlkg.preprocess import normalize_images, resize


def _l2_normalize(x: jax.Array) -> jax.Array:
  from vlkg.models.two_towers import l2_normalize
  return l2_normalize(x)


class Model:
  """A two-tower model with its params, tokenizer and preprocessing.

  Inputs are encoded in fixed-size batches (padded; a call with fewer inputs than a
  batch pads to the next power of two), so each tower compiles a few programs.
  The jitted functions take the params as an argument: the trainer builds one
  encoder per run and sets ``params`` to the current ones before each evaluation,
  so evaluations after the first compile nothing.
  """

  def __init__(self, module, params, tokenizer, image_size: int, batch_size: int = 256):
    self.module, self.params, self.tokenizer = module, params, tokenizer
    self.image_size, self.batch_size = image_size, batch_size
    self._embed_images = jax.jit(lambda p, x: module.apply(
        {"params": p}, normalize_images(x), method=type(module).embed_images))
    self._embed_texts = jax.jit(lambda p, t: module.apply(
        {"params": p}, t, method=type(module).embed_texts))
    self._embed_image_tokens = jax.jit(lambda p, x: _l2_normalize(module.apply(
        {"params": p}, normalize_images(x), return_tokens=True,
        method=type(module).embed_images)[1]))

  def _batched(self, fn, *arrays: np.ndarray) -> np.ndarray:
    """fn(params, *chunks) over fixed-size, zero-padded chunks of the arrays.

    Fewer inputs than ``batch_size`` are padded to the next power of two, so that
    calls of many sizes share a few compiled programs."""
    n = len(arrays[0])
    if n == 0:
      raise ValueError("nothing to encode: got an empty batch")
    b = min(self.batch_size, 1 << (n - 1).bit_length())
    out = []
    for start in range(0, n, b):
      chunks = [x[start:start + b] for x in arrays]
      pad = b - len(chunks[0])
      if pad:
        chunks = [np.concatenate([c, np.zeros((pad,) + c.shape[1:], c.dtype)])
                  for c in chunks]
      out.append(np.asarray(fn(self.params, *chunks))[:b - pad])
    return np.concatenate(out)

  def _images(self, images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"encode_images takes uint8 [B,H,W,3]; got {images.dtype} "
                       f"{images.shape}")
    return resize(images, self.image_size)

  def encode_images(self, images) -> np.ndarray:
    return self._batched(self._embed_images, self._images(images))

  def encode_image_tokens(self, images) -> np.ndarray:
    """Patch tokens in the joint space, float32 [B, P, D], each L2-normalised.

    The image tower's tokens after ``ln_post`` and ``proj`` (the projection of the
    pooled embedding), row-major over the patch grid; the images are preprocessed
    as in `encode_images`. For patch-text similarity maps (grounding, LOUPE).
    """
    return self._batched(self._embed_image_tokens, self._images(images))

  def encode_token_ids(self, ids) -> np.ndarray:
    return self._batched(self._embed_texts, np.asarray(ids, np.int32))

  def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
    if isinstance(texts, str):
      raise TypeError("encode_texts takes a list of strings")
    if self.tokenizer is None:
      raise ValueError("this model was loaded without a tokenizer (config.json has "
                       "no 'tokenizer'); use encode_token_ids, or import the weights "
                       "with --bpe")
    return self.encode_token_ids(self.tokenizer.encode(list(texts)))

  def score(self, images, texts: Sequence[str]) -> np.ndarray:
    return self.encode_images(images) @ self.encode_texts(texts).T


def make_encoder(module, params, tokenizer, config, batch_size: int = 256,
                 dataset_dir: str | None = None) -> Model:
  """The evaluation encoder of a run: the method's own when its module has an
  ``eval_encoder`` hook (e.g. Structure-CLIP's fused text features, which read the
  prepared dataset ``dataset_dir`` where given), else the plain two towers."""
  from vlkg import methods
  image_size = config.model.image_size
  hook = getattr(methods.load(config.method), "eval_encoder", None)
  if hook is not None:
    encoder = hook(module, params, tokenizer, config, image_size=image_size,
                   batch_size=batch_size, dataset_dir=dataset_dir)
    if encoder is not None:
      return encoder
  return Model(module, params, tokenizer, image_size, batch_size)


def load(path: str, batch_size: int = 256, dataset_dir: str | None = None,
         config=None) -> Model:
  """Loads ``params.npz`` (a file, or a workdir holding one) with its ``config.json``;
  ``dataset_dir``: the prepared dataset it is evaluated on (``make_encoder``);
  ``config``: a config to build the model and encoder from instead of the run's
  own (the same model, evaluated otherwise: its ``eval_*`` keys, say).

  A ``config.json`` written before a key was renamed is read in today's keys
  (`vlkg.config.upgrade`).
  """
  from vlkg import checkpoint, config as config_lib, methods
  from vlkg.data import tokenizer as tok_lib
  params_path = os.path.join(path, "params.npz") if files.isdir(path) else path
  workdir = os.path.dirname(files.abspath(params_path))
  config_path = os.path.join(workdir, "config.json")
  for p in (params_path, config_path):
    if not files.exists(p):
      raise FileNotFoundError(f"{p} not found: api.load needs params.npz and "
                              "config.json side by side")
  own = config_lib.load_run_config(workdir)
  if config is None:
    config = own
  else:
    # What the trainer filled in (vocabulary size, tokenizer) is the run's.
    config = type(own)(config.to_dict())
    config.model.text.vocab_size = own.model.text.vocab_size
    if "tokenizer" in own:
      config.tokenizer = own.tokenizer
  module = methods.build_model(config)
  # Shapes at the model's own input size (config.model.image_size).
  abstract = methods.abstract_params(module, config)
  params = checkpoint.unflatten_params(
      checkpoint.load_params_npz(params_path, expected=abstract))
  desc = config.get("tokenizer", None)
  # Imported weights without a vocabulary still embed images and token ids.
  tokenizer = (tok_lib.from_description(desc.to_dict(), base_dir=workdir)
               if desc is not None else None)
  return make_encoder(module, jax.device_put(params), tokenizer, config, batch_size,
                      dataset_dir)
