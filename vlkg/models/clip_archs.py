"""The shapes of the public CLIP ViTs, by open_clip model name, as vlkg model configs.

Numbers from Radford et al. 2021 (CLIP), Table 20 (ViT-B/32, ViT-B/16, ViT-L/14:
embedding dim, input resolution, layers, widths and heads of both towers), as
open_clip (Ilharco et al. 2021) writes them in ``model_configs/<name>.json``: vision
heads are width / 64, the text context is 77 BPE tokens over a vocabulary of 49,408.
OpenAI trained with QuickGELU (x * sigmoid(1.702 x)); open_clip's plain names use
torch's exact GELU and the ``-quickgelu`` names QuickGELU, so a checkpoint must be
paired with the name it was trained with (OpenAI's weights: ``-quickgelu``).

``model_config`` gives the ``config.model`` dict that ``two_towers.build_model``
reads, set up to compute exactly what open_clip's ``CLIP`` does: causal text
attention that masks no pad keys (pad id 0 is the BPE symbol "!"), pooling at EOT,
class-token image pooling.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vlkg.data import clip_bpe

IMAGE_SIZE = 224
VOCAB_SIZE = 49408


@dataclasses.dataclass(frozen=True)
class ClipArch:
  """One CLIP ViT dual encoder's hyper-parameters.

  Attributes:
    name: the open_clip model name (informational).
    embed_dim: joint embedding dimension.
    image_size: input side in pixels.
    patch_size: ViT patch side.
    vision_width / vision_layers / vision_heads: image Transformer.
    text_width / text_layers / text_heads: text Transformer.
    context_length: text positions.
    vocab_size: BPE ids.
    quick_gelu: QuickGELU (OpenAI weights) instead of exact GELU.
  """

  name: str
  embed_dim: int
  image_size: int
  patch_size: int
  vision_width: int
  vision_layers: int
  vision_heads: int
  text_width: int
  text_layers: int
  text_heads: int
  context_length: int = clip_bpe.CONTEXT_LENGTH
  vocab_size: int = VOCAB_SIZE
  quick_gelu: bool = False

  @property
  def grid(self) -> int:
    """Patches per image side."""
    return self.image_size // self.patch_size


def _vit(name: str, embed_dim: int, patch: int, vision_width: int, vision_layers: int,
         text_width: int, text_heads: int) -> dict[str, ClipArch]:
  base = ClipArch(name=name, embed_dim=embed_dim, image_size=IMAGE_SIZE,
                  patch_size=patch, vision_width=vision_width,
                  vision_layers=vision_layers, vision_heads=vision_width // 64,
                  text_width=text_width, text_layers=12, text_heads=text_heads)
  quick = dataclasses.replace(base, name=name + "-quickgelu", quick_gelu=True)
  return {base.name: base, quick.name: quick}


ARCHS: dict[str, ClipArch] = {
    **_vit("ViT-B-32", 512, 32, 768, 12, 512, 8),
    **_vit("ViT-B-16", 512, 16, 768, 12, 512, 8),
    **_vit("ViT-L-14", 768, 14, 1024, 24, 768, 12),
}


def get_arch(arch: str | ClipArch) -> ClipArch:
  """The ``ClipArch`` of an open_clip name (or ``arch`` itself if already one).

  Raises:
    ValueError: an unknown name; the message lists the known ones.
  """
  if isinstance(arch, ClipArch):
    return arch
  if arch not in ARCHS:
    raise ValueError(f"unknown CLIP architecture {arch!r}; known: {sorted(ARCHS)}")
  return ARCHS[arch]


def model_config(arch: str | ClipArch) -> dict[str, Any]:
  """The vlkg ``config.model`` dict of ``arch`` (plain, JSON-able).

  ``image_size`` is the model's input size: datasets are prepared at it and
  ``vlkg.api`` resizes its inputs to it.
  """
  a = get_arch(arch)
  act = "quick_gelu" if a.quick_gelu else "gelu"
  return {
      "embed_dim": a.embed_dim,
      "image_size": a.image_size,
      "image": {"width": a.vision_width, "depth": a.vision_layers,
                "heads": a.vision_heads, "patch_size": a.patch_size, "mlp_ratio": 4,
                "act": act, "stem": "patch", "pool_type": "cls"},
      "text": {"width": a.text_width, "depth": a.text_layers, "heads": a.text_heads,
               "vocab_size": a.vocab_size, "context_length": a.context_length,
               "mlp_ratio": 4, "act": act, "causal": True, "pool": "eot",
               "pad_id": clip_bpe.PAD_ID, "eot_id": a.vocab_size - 1,
               "mask_pad": False},
      "dtype": "float32",
      "attention": "xla",
      "max_logit_scale": 100.0,
      "min_logit_scale": None,
  }
