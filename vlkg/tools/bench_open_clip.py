"""``bench step --peer open_clip``: open_clip's training step beside vlkg's.

open_clip (Ilharco et al., "OpenCLIP", 2021; its ``CLIP`` is OpenAI's architecture,
Radford et al., ICML 2021, section 2.4) is the PyTorch implementation that CLIP
training at scale uses, so it is the peer a vlkg step is measured against: a
``CLIP`` with the widths, depths, heads, patch size, image size, context,
vocabulary and embedding size of the vlkg config (``model_config``), the same
batch, open_clip's own ``ClipLoss``, AdamW with the config's hyper-parameters and
gradient clipping, on the device vlkg runs on (a CUDA GPU when JAX runs on one).

Precision follows vlkg's ``model.dtype``: ``bfloat16`` runs the step under torch's
automatic mixed precision (``torch.autocast``, bf16, float32 params), as vlkg's
mixed precision does; ``float32`` runs it in float32. ``compile`` wraps the model
in ``torch.compile`` (its compilation is left out of the timing by the warm-up).

torch and open_clip are optional (not vlkg requirements): without them the peer is
skipped with a message that says what is missing.
"""

from __future__ import annotations

import importlib

import numpy as np

from vlkg.tools.timing import median_seconds


def model_config(config) -> dict:
  """open_clip ``CLIP(**model_config(config))`` keyword arguments of the shapes of
  ``config.model``: the same parameters as vlkg's CLIP (a patch stem, a class
  token, the text tower's vocabulary from the prepared dataset)."""
  m, img, txt = config.model, config.model.image, config.model.text
  if img.get("stem", "patch") != "patch":
    raise ValueError(f"model.image.stem={img.stem!r}: open_clip's ViT has a patch stem only")
  if img.width % img.heads or txt.width % txt.heads:
    raise ValueError("model widths must be multiples of their heads")
  if not txt.vocab_size:
    raise ValueError("model.text.vocab_size is 0: resolve the config against its "
                     "prepared dataset first (vlkg.train.resolve_config)")
  return {
      "embed_dim": m.embed_dim,
      "vision_cfg": {"layers": img.depth, "width": img.width,
                     "head_width": img.width // img.heads, "mlp_ratio": img.mlp_ratio,
                     "patch_size": img.patch_size, "image_size": m.image_size},
      "text_cfg": {"context_length": txt.context_length, "vocab_size": txt.vocab_size,
                   "width": txt.width, "heads": txt.heads, "layers": txt.depth,
                   "mlp_ratio": txt.mlp_ratio},
      "quick_gelu": img.act == "quick_gelu",
  }


def import_peer():
  """(torch, open_clip), or None after printing what is missing."""
  try:
    torch = importlib.import_module("torch")
    open_clip = importlib.import_module("open_clip")
  except ImportError as e:
    print(f"peer open_clip skipped: {e} (pip install torch open_clip_torch to time it)")
    return None
  return torch, open_clip


def make_step(torch, open_clip, config, batch: dict, device: str, compile: bool = False):
  """(step function, model) of one AdamW training step of open_clip's CLIP on
  ``batch`` (uint8 images ``[B, S, S, 3]``, int ``text`` ``[B, L]``)."""
  torch.manual_seed(0)
  model = open_clip.model.CLIP(**model_config(config)).to(device)
  model.train()
  o = config.optim
  opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.b1, o.b2), eps=o.eps,
                          weight_decay=o.weight_decay)
  loss_fn = open_clip.loss.ClipLoss()
  forward = torch.compile(model) if compile else model
  # uint8 on the device, normalised inside the step, as vlkg's model reads its batch.
  images = torch.from_numpy(np.array(batch["image"])).to(device).permute(0, 3, 1, 2)
  text = torch.from_numpy(np.array(batch["text"])).to(device=device, dtype=torch.long)
  mean = torch.tensor((0.48145466, 0.4578275, 0.40821073), device=device).view(1, 3, 1, 1)
  std = torch.tensor((0.26862954, 0.26130258, 0.27577711), device=device).view(1, 3, 1, 1)
  bf16 = config.model.get("dtype", "float32") == "bfloat16"
  device_type = "cuda" if device.startswith("cuda") else "cpu"

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
      pixels = (images.float() / 255.0 - mean) / std
      image_features, text_features, logit_scale = forward(pixels, text)
      loss = loss_fn(image_features, text_features, logit_scale)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip_norm)
    opt.step()
    if device_type == "cuda":
      torch.cuda.synchronize()
    return loss.detach()

  return step, model


def prepare_step(config, batch: dict, compile: bool = False, backend: str = "cpu"):
  """(description, step function) of open_clip's training step, warmed up (and
  compiled), or None when torch or open_clip is missing. ``backend`` is JAX's: on
  ``gpu`` the peer runs on CUDA."""
  peer = import_peer()
  if peer is None:
    return None
  torch, open_clip = peer
  device = "cuda" if backend == "gpu" and torch.cuda.is_available() else "cpu"
  step, _ = make_step(torch, open_clip, config, batch, device, compile)
  for _ in range(3 if compile else 1):
    step()
  precision = "bf16 autocast" if config.model.get("dtype") == "bfloat16" else "float32"
  where = torch.cuda.get_device_name() if device == "cuda" else \
      f"cpu, {torch.get_num_threads()} threads"
  name = (f"open_clip {getattr(open_clip, '__version__', '?')} CLIP (torch "
          f"{torch.__version__}, {where}, {precision}"
          f"{', torch.compile' if compile else ''})")
  return name, step


def step_seconds(config, batch: dict, repeats: int, compile: bool = False,
                 backend: str = "cpu"):
  """(description, median seconds per step) of open_clip's step alone, or None when
  torch or open_clip is missing (``bench step`` times it in alternation with
  vlkg's instead)."""
  made = prepare_step(config, batch, compile, backend)
  if made is None:
    return None
  name, step = made
  return name, median_seconds(step, repeats * 2, warmup=0)
