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

import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# CLIP's preprocessing constants (Radford et al. 2021, released code).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def normalize_images(images: jax.Array) -> jax.Array:
  """uint8 [B,H,W,3] -> float32 normalised with CLIP's mean/std (jittable)."""
  x = images.astype(jnp.float32) / 255.0
  return (x - CLIP_MEAN) / CLIP_STD


def _l2_normalize(x: jax.Array) -> jax.Array:
  from vlkg.models.two_towers import l2_normalize
  return l2_normalize(x)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  """CLIP's eval transform: bicubic resize of the shorter side, then a center crop.

  Matches torchvision's ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` on PIL
  images, which OpenAI's ``clip.load`` and open_clip's ``image_transform`` use: the
  longer side becomes ``int(size * long / short)`` (truncated), an image whose
  shorter side is already ``size`` is not resampled, and the crop's offsets are
  ``round((side - size) / 2)`` (Python's round, half to even).
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


def image_size_of(config) -> int:
  """The model's input side: ``config.model.image_size`` when set (imported CLIP
  weights), else ``config.input.image_size`` when set (a real corpus), else the
  world's ``config.world.image_size`` (every run directory before these keys)."""
  for section in ("model", "input"):
    size = (config.get(section, None) or {}).get("image_size", None)
    if size:
      return int(size)
  return int(config.world.image_size)


class Model:
  """A two-tower model with its params, tokenizer and preprocessing.

  Inputs are encoded in fixed-size batches (padded), so each tower compiles once.
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
    """fn(params, *chunks) over fixed-size, zero-padded chunks of the arrays."""
    n = len(arrays[0])
    if n == 0:
      raise ValueError("nothing to encode: got an empty batch")
    b = min(self.batch_size, n)
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
    return _resize(images, self.image_size)

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


class FusedTextModel(Model):
  """Structure-CLIP's text side (PAPERS.md §1): each caption is parsed into a scene
  graph, its triples are encoded by the KEE and fused with the text embedding, as
  the paper's evaluation does. Token ids alone carry no graph, so this encoder only
  takes text (``encode_token_ids`` is None)."""

  encode_token_ids = None

  def __init__(self, module, params, tokenizer, image_size: int, graph_shape, parse,
               batch_size: int = 256):
    super().__init__(module, params, tokenizer, image_size, batch_size)
    self.graph_shape, self.parse = graph_shape, parse
    self._fused = jax.jit(lambda p, t, tr, m: module.apply(
        {"params": p}, t, tr, m, method=type(module).fused_text))

  def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
    from vlkg.graphs import tensorize
    if isinstance(texts, str):
      raise TypeError("encode_texts takes a list of strings")
    texts = list(texts)
    triples, mask = tensorize.triple_arrays([self.parse(t) for t in texts],
                                            self.tokenizer, self.graph_shape)
    return self._batched(self._fused, self.tokenizer.encode(texts), triples, mask)


def make_encoder(module, params, tokenizer, config, batch_size: int = 256) -> Model:
  """The evaluation encoder of a run: fused text features for methods that have a
  knowledge encoder (unless ``config.<method>.eval_text == "plain"``)."""
  image_size = image_size_of(config)
  section = config.get(config.method) or {}
  if hasattr(module, "fused_text") and section.get("eval_text", "fused") == "fused":
    from vlkg import graphs
    from vlkg.graphs import tensorize
    backend = "world" if config.input.data in ("world", "tfds:vlkg_world") else "general"
    shape = tensorize.GraphShape(config.graph.max_triples, config.graph.triple_tokens)
    return FusedTextModel(module, params, tokenizer, image_size, shape,
                          lambda text: graphs.parse(text, backend), batch_size)
  return Model(module, params, tokenizer, image_size, batch_size)


def load(path: str, batch_size: int = 256) -> Model:
  """Loads ``params.npz`` (a file, or a workdir holding one) with its ``config.json``."""
  import ml_collections

  from vlkg import checkpoint, methods
  from vlkg.data import tokenizer as tok_lib
  params_path = os.path.join(path, "params.npz") if os.path.isdir(path) else path
  workdir = os.path.dirname(os.path.abspath(params_path))
  config_path = os.path.join(workdir, "config.json")
  for p in (params_path, config_path):
    if not os.path.exists(p):
      raise FileNotFoundError(f"{p} not found: api.load needs params.npz and "
                              "config.json side by side")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  module = methods.build_model(config)
  size = image_size_of(config)
  # Shapes at the model's own input size, which may differ from the world's.
  abstract = jax.eval_shape(lambda r: module.init(
      r, jnp.zeros((1, size, size, 3), jnp.float32),
      jnp.zeros((1, config.model.text.context_length), jnp.int32))["params"],
      jax.random.key(0))
  params = checkpoint.unflatten_params(
      checkpoint.load_params_npz(params_path, expected=abstract))
  desc = config.get("tokenizer", None)
  # Imported weights without a vocabulary still embed images and token ids.
  tokenizer = (tok_lib.from_description(desc.to_dict(), base_dir=workdir)
               if desc is not None else None)
  return make_encoder(module, jax.device_put(params), tokenizer, config, batch_size)
