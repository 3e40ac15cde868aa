"""OpenAI / open_clip CLIP state dicts <-> vlkg params, as numpy.

The state-dict layout is the one of OpenAI's released ``clip/model.py`` (Radford et
al. 2021), which open_clip's ``CLIP`` (Ilharco et al. 2021, ``open_clip/model.py``)
keeps key for key for its ViT models:

  visual.conv1.weight, visual.class_embedding, visual.positional_embedding,
  visual.ln_pre.*, visual.transformer.resblocks.{i}.*, visual.ln_post.*, visual.proj,
  token_embedding.weight, positional_embedding, transformer.resblocks.{i}.*,
  ln_final.*, text_projection, logit_scale

with each block ``ln_1``, ``attn.in_proj_weight/bias``, ``attn.out_proj``, ``ln_2``,
``mlp.c_fc``, ``mlp.c_proj``. vlkg's modules use the same names (see
``vlkg/models/layers.py``), so the map is mechanical: '.' -> '/', ``resblocks.{i}``
-> ``resblocks_{i}``, LayerNorm ``weight`` -> ``scale``, ``Linear`` weights [out, in]
transposed to ``Dense`` kernels [in, out], the patch convolution [W, 3, p, p] to
[p, p, 3, W], the embedding table ``weight`` -> ``embedding``. ``visual.proj`` and
``text_projection`` are already [in, out] (used as ``x @ proj``). vlkg's
``logit_bias`` (SigLIP) has no CLIP counterpart: it imports as 0, and exports only
when non-zero (open_clip models made with ``init_logit_bias`` have that key).

Keys are '/'-joined vlkg param paths (``checkpoint.flatten_params``), the
``params.npz`` contract.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Mapping

import numpy as np

from vlkg.models import clip_archs
from vlkg.models.clip_archs import ClipArch

# Keys that OpenAI's TorchScript state dicts carry beside the weights (model
# hyper-parameters) and buffers that some open_clip versions saved; not weights.
_NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size")
_BUFFERS = re.compile(r"(^|\.)attn_mask$")


class StateDictMismatchError(ValueError):
  """A state dict that does not fit the architecture; the message names the keys."""


@dataclasses.dataclass(frozen=True)
class _Entry:
  torch_key: str
  vlkg_key: str
  torch_shape: tuple[int, ...]
  to_vlkg: Callable[[np.ndarray], np.ndarray]
  to_torch: Callable[[np.ndarray], np.ndarray]


def _same(x: np.ndarray) -> np.ndarray:
  return x


def _transpose(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x.T)


def _conv_to_vlkg(x: np.ndarray) -> np.ndarray:  # [W, 3, p, p] -> [p, p, 3, W]
  return np.ascontiguousarray(x.transpose(2, 3, 1, 0))


def _conv_to_torch(x: np.ndarray) -> np.ndarray:  # [p, p, 3, W] -> [W, 3, p, p]
  return np.ascontiguousarray(x.transpose(3, 2, 0, 1))


def _layer_norm(torch_prefix: str, vlkg_prefix: str, width: int) -> list[_Entry]:
  return [_Entry(f"{torch_prefix}.weight", f"{vlkg_prefix}/scale", (width,), _same, _same),
          _Entry(f"{torch_prefix}.bias", f"{vlkg_prefix}/bias", (width,), _same, _same)]


def _linear(torch_prefix: str, vlkg_prefix: str, n_in: int, n_out: int) -> list[_Entry]:
  return [_Entry(f"{torch_prefix}.weight", f"{vlkg_prefix}/kernel", (n_out, n_in),
                 _transpose, _transpose),
          _Entry(f"{torch_prefix}.bias", f"{vlkg_prefix}/bias", (n_out,), _same, _same)]


def _transformer(torch_prefix: str, vlkg_prefix: str, width: int,
                 layers: int) -> list[_Entry]:
  out = []
  for i in range(layers):
    t, v = f"{torch_prefix}.resblocks.{i}", f"{vlkg_prefix}/resblocks_{i}"
    out += _layer_norm(f"{t}.ln_1", f"{v}/ln_1", width)
    out += [_Entry(f"{t}.attn.in_proj_weight", f"{v}/attn/in_proj/kernel",
                   (3 * width, width), _transpose, _transpose),
            _Entry(f"{t}.attn.in_proj_bias", f"{v}/attn/in_proj/bias", (3 * width,),
                   _same, _same)]
    out += _linear(f"{t}.attn.out_proj", f"{v}/attn/out_proj", width, width)
    out += _layer_norm(f"{t}.ln_2", f"{v}/ln_2", width)
    out += _linear(f"{t}.mlp.c_fc", f"{v}/mlp/c_fc", width, 4 * width)
    out += _linear(f"{t}.mlp.c_proj", f"{v}/mlp/c_proj", 4 * width, width)
  return out


def layout(arch: str | ClipArch) -> list[_Entry]:
  """Every weight of ``arch``: torch key, vlkg key, torch shape and the transforms."""
  a = clip_archs.get_arch(arch)
  wv, wt, p = a.vision_width, a.text_width, a.patch_size
  entries = [
      _Entry("visual.conv1.weight", "img/conv1/kernel", (wv, 3, p, p),
             _conv_to_vlkg, _conv_to_torch),
      _Entry("visual.class_embedding", "img/class_embedding", (wv,), _same, _same),
      _Entry("visual.positional_embedding", "img/positional_embedding",
             (a.grid * a.grid + 1, wv), _same, _same),
      *_layer_norm("visual.ln_pre", "img/ln_pre", wv),
      *_transformer("visual.transformer", "img/transformer", wv, a.vision_layers),
      *_layer_norm("visual.ln_post", "img/ln_post", wv),
      _Entry("visual.proj", "img/proj", (wv, a.embed_dim), _same, _same),
      _Entry("token_embedding.weight", "txt/token_embedding/embedding",
             (a.vocab_size, wt), _same, _same),
      _Entry("positional_embedding", "txt/positional_embedding",
             (a.context_length, wt), _same, _same),
      *_transformer("transformer", "txt/transformer", wt, a.text_layers),
      *_layer_norm("ln_final", "txt/ln_final", wt),
      _Entry("text_projection", "txt/text_projection", (wt, a.embed_dim), _same, _same),
      _Entry("logit_scale", "logit_scale", (), _same, _same),
  ]
  return entries


def strip_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops the ``module.`` prefix that DistributedDataParallel checkpoints carry."""
  keys = list(state_dict)
  if keys and all(k.startswith("module.") for k in keys):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def infer_arch(state_dict: Mapping[str, np.ndarray], like: str | ClipArch) -> ClipArch:
  """The architecture the weights' shapes imply; heads and activation from ``like``.

  Attention heads and the activation are not visible in the weights, so they come
  from the named architecture; everything else is read off the shapes.

  Raises:
    StateDictMismatchError: a key needed to read a shape is missing (named).
  """
  sd = strip_prefix(state_dict)
  base = clip_archs.get_arch(like)

  def shape(key: str) -> tuple[int, ...]:
    if key not in sd:
      raise StateDictMismatchError(f"state dict lacks {key!r}, which every CLIP ViT has")
    return tuple(sd[key].shape)

  def depth(prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.resblocks\.(\d+)\.")
    found = {int(m.group(1)) for k in sd for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0

  conv = shape("visual.conv1.weight")
  positions = shape("visual.positional_embedding")[0] - 1
  grid = math.isqrt(max(positions, 0))
  return dataclasses.replace(
      base,
      embed_dim=shape("visual.proj")[1],
      image_size=grid * conv[-1],
      patch_size=conv[-1],
      vision_width=conv[0],
      vision_layers=depth("visual.transformer"),
      text_width=shape("token_embedding.weight")[1],
      text_layers=depth("transformer"),
      context_length=shape("positional_embedding")[0],
      vocab_size=shape("token_embedding.weight")[0],
  )


def _mismatch_lines(header: str, sections) -> list[str]:
  """An error message: ``header``, then each non-empty (title, items) section with
  its first 20 items."""
  lines = [header]
  for title, items in sections:
    if items:
      lines.append(f"  {title} ({len(items)}):")
      lines.extend(f"    {item}" for item in items[:20])
      if len(items) > 20:
        lines.append(f"    ... and {len(items) - 20} more")
  return lines


def _describe(a: ClipArch) -> str:
  return (f"embed_dim={a.embed_dim}, image {a.image_size}px patch {a.patch_size} "
          f"width {a.vision_width} x {a.vision_layers} layers, text width "
          f"{a.text_width} x {a.text_layers} layers, context {a.context_length}, "
          f"vocab {a.vocab_size}")


def to_vlkg(state_dict: Mapping[str, np.ndarray], arch: str | ClipArch,
            dtype=np.float32) -> dict[str, np.ndarray]:
  """Flat vlkg params (``{"img/conv1/kernel": ...}``) from a CLIP state dict.

  Args:
    state_dict: torch key -> numpy array, with or without a ``module.`` prefix.
    arch: an open_clip model name (``clip_archs.ARCHS``) or a ``ClipArch``.
    dtype: dtype of the returned arrays (fp16/bf16 checkpoints are upcast).

  Raises:
    StateDictMismatchError: keys missing, unexpected, or of the wrong shape; every
      offending key is named with the expected and the found shape, and the
      architecture the shapes suggest.
  """
  a = clip_archs.get_arch(arch)
  sd = strip_prefix(state_dict)
  entries = layout(a)
  known = {e.torch_key for e in entries} | {"logit_bias"}
  missing = [e.torch_key for e in entries if e.torch_key not in sd]
  unexpected = sorted(k for k in sd if k not in known and k not in _NOT_WEIGHTS
                      and not _BUFFERS.search(k))
  wrong = [f"{e.torch_key}: expected {e.torch_shape}, got {tuple(sd[e.torch_key].shape)}"
           for e in entries
           if e.torch_key in sd and tuple(sd[e.torch_key].shape) != e.torch_shape]
  for key, want in (("input_resolution", a.image_size),
                    ("context_length", a.context_length), ("vocab_size", a.vocab_size)):
    if key in sd and int(np.asarray(sd[key])) != want:
      wrong.append(f"{key}: expected {want}, got {int(np.asarray(sd[key]))}")
  if missing or unexpected or wrong:
    lines = _mismatch_lines(
        f"the state dict does not match CLIP architecture {a.name!r} ({_describe(a)}):",
        (("missing keys", missing), ("unexpected keys", unexpected),
         ("shape mismatches", wrong)))
    try:
      lines.append(f"  the weights' shapes suggest: {_describe(infer_arch(sd, a))}")
    except StateDictMismatchError:
      pass
    raise StateDictMismatchError("\n".join(lines))
  out = {e.vlkg_key: e.to_vlkg(np.asarray(sd[e.torch_key])).astype(dtype)
         for e in entries}
  out["logit_scale"] = out["logit_scale"].reshape(())
  bias = sd.get("logit_bias")
  out["logit_bias"] = (np.zeros((), dtype) if bias is None
                       else np.asarray(bias, dtype).reshape(()))
  return out


def from_vlkg(params: Mapping[str, np.ndarray], arch: str | ClipArch,
              dtype=np.float32) -> dict[str, np.ndarray]:
  """An open_clip ``CLIP`` state dict from flat (or nested) vlkg params.

  Raises:
    StateDictMismatchError: a vlkg param is missing, extra, or of the wrong shape
      for ``arch`` (named), e.g. params of a conv-stem or GAP model.
  """
  from vlkg import checkpoint  # heavy (orbax); only needed for nested input
  flat = dict(params)
  if any(isinstance(v, Mapping) for v in flat.values()):
    flat = checkpoint.flatten_params(flat)
  a = clip_archs.get_arch(arch)
  entries = layout(a)
  known = {e.vlkg_key for e in entries} | {"logit_bias"}
  missing = [e.vlkg_key for e in entries if e.vlkg_key not in flat]
  unexpected = sorted(k for k in flat if k not in known)
  out, wrong = {}, []
  for e in entries:
    if e.vlkg_key not in flat:
      continue
    value = e.to_torch(np.asarray(flat[e.vlkg_key], np.float32)).astype(dtype)
    if tuple(value.shape) != e.torch_shape:
      wrong.append(f"{e.vlkg_key}: gives {e.torch_key} of shape {tuple(value.shape)}, "
                   f"expected {e.torch_shape}")
    out[e.torch_key] = value
  if missing or unexpected or wrong:
    raise StateDictMismatchError("\n".join(_mismatch_lines(
        f"the vlkg params do not match CLIP architecture {a.name!r} ({_describe(a)}):",
        (("missing params", missing), ("unexpected params", unexpected),
         ("shape mismatches", wrong)))))
  bias = np.asarray(flat.get("logit_bias", 0.0), np.float32)
  if float(bias) != 0.0:
    out["logit_bias"] = bias.astype(dtype).reshape(())
  return out


def arch_from_model_config(model: Mapping, name: str = "vlkg") -> ClipArch:
  """The ``ClipArch`` of a vlkg ``config.model`` (for exporting a trained run).

  Raises:
    ValueError: the model is not expressible as an open_clip CLIP ViT (a conv stem,
      GAP pooling, non-4x MLP, a bidirectional text tower, or different activations
      in the two towers); the message names the field.
  """
  img, txt = model["image"], model["text"]
  checks = [("image.stem", img.get("stem", "patch"), "patch"),
            ("image.pool_type", img.get("pool_type", "cls"), "cls"),
            ("image.mlp_ratio", img.get("mlp_ratio", 4), 4),
            ("text.mlp_ratio", txt.get("mlp_ratio", 4), 4),
            ("text.causal", txt.get("causal", True), True),
            ("text.pool", txt.get("pool", "eot"), "eot")]
  for field, got, want in checks:
    if got != want:
      raise ValueError(f"config.model.{field}={got!r}: open_clip's CLIP needs {want!r}")
  act_img, act_txt = img.get("act", "gelu"), txt.get("act", "gelu")
  if act_img != act_txt:
    raise ValueError(f"config.model.image.act={act_img!r} differs from "
                     f"text.act={act_txt!r}; open_clip uses one activation for both")
  image_size = model.get("image_size")
  if not image_size:
    raise ValueError("config.model.image_size is not set; pass the image size")
  return ClipArch(
      name=name, embed_dim=int(model["embed_dim"]), image_size=int(image_size),
      patch_size=int(img["patch_size"]), vision_width=int(img["width"]),
      vision_layers=int(img["depth"]), vision_heads=int(img["heads"]),
      text_width=int(txt["width"]), text_layers=int(txt["depth"]),
      text_heads=int(txt["heads"]), context_length=int(txt["context_length"]),
      vocab_size=int(txt["vocab_size"]), quick_gelu=act_img == "quick_gelu")
