"""vlkg vs open_clip on the same weights, images and captions (optional: torch and
open_clip are not vlkg dependencies; these tests skip without them).

Randomly initialised open_clip ``CLIP`` models of each ViT shape (widths and depths
reduced so that the test runs on a laptop CPU; patch sizes, image size, context and
vocabulary are the real ones) go through the file formats, ``import_clip``,
``vlkg.api.load`` and back through ``export``. The full-size models are in the
``slow`` test.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from open_clip_stub import import_open_clip
from vlkg import api, preprocess
from vlkg.convert import readers
from vlkg.models import clip_archs
from vlkg.tools import export, import_clip

open_clip = torch = oc_tokenizer = CLIP = CLIPTextCfg = CLIPVisionCfg = None


@pytest.fixture(scope="module", autouse=True)
def _open_clip():
  """Imports open_clip and torch (or skips) when this file's tests first run, not
  when the suite is collected: a test worker that runs none of them never imports
  torch."""
  global open_clip, torch, oc_tokenizer, CLIP, CLIPTextCfg, CLIPVisionCfg
  open_clip, torch = import_open_clip()
  from open_clip import tokenizer as oc_tokenizer
  from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

TOL = 1e-4
# "!#%" encodes as ids [0, 2, 260]: id 0 is both "!" and the pad id, so a tower that
# masked pad keys would differ from open_clip on it.
TEXTS = ["a photo of a cat", "A DOG!!! on the beach, at 5pm?", "", "it's what we're doing",
         "caf\u00e9 &amp; cr\u00e8me br\u00fbl\u00e9e \u6771\u4eac", "wow! " * 40,
         "sale !#% now"]


def reduced(name: str) -> clip_archs.ClipArch:
  a = clip_archs.ARCHS[name]
  return dataclasses.replace(a, vision_width=64, vision_layers=2, vision_heads=2,
                             text_width=64, text_layers=2, text_heads=4, embed_dim=32)


def make_open_clip(arch: clip_archs.ClipArch, seed: int = 0):
  torch.manual_seed(seed)
  model = CLIP(
      arch.embed_dim,
      CLIPVisionCfg(layers=arch.vision_layers, width=arch.vision_width,
                    head_width=arch.vision_width // arch.vision_heads,
                    patch_size=arch.patch_size, image_size=arch.image_size),
      CLIPTextCfg(context_length=arch.context_length, vocab_size=arch.vocab_size,
                  width=arch.text_width, heads=arch.text_heads, layers=arch.text_layers),
      quick_gelu=arch.quick_gelu)
  with torch.no_grad():  # LayerNorms away from identity, so that they are tested
    for name, p in model.named_parameters():
      if ".ln_" in name or name.startswith("ln_"):
        p.add_(0.2 * torch.randn_like(p))
    model.logit_scale.fill_(3.3)
  return model.eval()


def reference_preprocess(images: np.ndarray, size: int) -> np.ndarray:
  """OpenAI's eval transform as [B, 3, S, S] floats: torchvision's Resize(size,
  BICUBIC) + CenterCrop + ToTensor + Normalize when torchvision is installed,
  else the same steps written out with PIL."""
  if importlib.util.find_spec("torchvision") is not None and hasattr(
      open_clip, "image_transform"):
    try:
      transform = open_clip.image_transform(size, is_train=False)
      return np.stack([transform(Image.fromarray(im)).numpy() for im in images])
    except NotImplementedError:  # our torchvision stub
      pass
  out = []
  for im in images:
    pil = Image.fromarray(im)
    w, h = pil.size
    if w <= h:
      new = (size, int(size * h / w))
    else:
      new = (int(size * w / h), size)
    if new != (w, h):
      pil = pil.resize(new, Image.BICUBIC)
    w, h = pil.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    x = np.asarray(pil.crop((left, top, left + size, top + size)), np.float32) / 255
    out.append(((x - preprocess.CLIP_MEAN) / preprocess.CLIP_STD).transpose(2, 0, 1))
  return np.stack(out).astype(np.float32)


def images_of_sizes(seed: int) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  # Smooth-ish images (upsampled noise), so resizing matters but stays well posed.
  out = []
  for h, w in ((224, 224), (240, 320), (300, 225)):
    small = rng.integers(0, 256, (2, h // 8, w // 8, 3), dtype=np.uint8)
    out.append(np.stack([np.asarray(Image.fromarray(s).resize((w, h), Image.BILINEAR))
                         for s in small]))
  return out


def save(model, path: str, how: str) -> str:
  sd = model.state_dict()
  if how == "safetensors":
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
  elif how == "ddp":
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 1}, path)
  elif how == "fp16":
    torch.save({k: v.half() for k, v in sd.items()}, path)
  else:
    torch.save(sd, path)
  return path


CASES = [("ViT-B-32", "ddp"), ("ViT-B-32-quickgelu", "pt"), ("ViT-B-16", "safetensors"),
         ("ViT-B-16-quickgelu", "pt"), ("ViT-L-14", "fp16"), ("ViT-L-14-quickgelu", "pt")]


def check_parity(arch, model, ckpt, out_dir, tmp_path, how):
  bpe = oc_tokenizer.default_bpe()
  run = import_clip.import_clip(ckpt, arch, out_dir, bpe=bpe)
  vlkg_model = api.load(run, batch_size=4)
  if how == "fp16":  # compare against the weights as the file holds them
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
  errors = {}
  with torch.no_grad():
    img_err = 0.0
    for batch in images_of_sizes(0):
      want = model.encode_image(torch.from_numpy(reference_preprocess(batch, 224)), normalize=True)
      got = vlkg_model.encode_images(batch)
      img_err = max(img_err, float(np.abs(got - want.numpy()).max()))
    ids = oc_tokenizer.SimpleTokenizer()(TEXTS)
    assert any(0 in row[:row.index(49407)] for row in ids.tolist())  # a real id 0
    want = model.encode_text(ids, normalize=True).numpy()
    got = vlkg_model.encode_texts(TEXTS)
    np.testing.assert_array_equal(vlkg_model.tokenizer.encode(TEXTS), ids.numpy())
    errors = {"image": img_err, "text": float(np.abs(got - want).max())}
  print(f"{arch.name} ({how}): max abs error image {errors['image']:.2e} "
        f"text {errors['text']:.2e}")
  assert errors["image"] <= TOL and errors["text"] <= TOL, errors

  # Export: the same tensors back, which open_clip loads strictly.
  original = {k: v.clone() for k, v in model.state_dict().items()}
  for name in ("back.pt", "back.safetensors"):
    path = export.export(run, out=str(tmp_path / name), fmt="open_clip")
    if name.endswith(".pt"):
      sd = torch.load(path, map_location="cpu", weights_only=True)
    else:
      from safetensors.torch import load_file
      sd = load_file(path)
    fresh = make_open_clip(arch, seed=1)
    fresh.load_state_dict(sd, strict=True)
    assert sorted(sd) == sorted(original)
    for k, v in original.items():
      torch.testing.assert_close(sd[k], v, rtol=0, atol=0, msg=k)
  return errors


@pytest.mark.parametrize("name, how", CASES)
def test_parity_reduced(name, how, tmp_path):
  arch = reduced(name)
  model = make_open_clip(arch)
  suffix = "safetensors" if how == "safetensors" else "pt"
  ckpt = save(model, str(tmp_path / f"ckpt.{suffix}"), how)
  check_parity(arch, model, ckpt, str(tmp_path / "run"), tmp_path, how)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(clip_archs.ARCHS))
def test_parity_full_size(name, tmp_path):
  arch = clip_archs.ARCHS[name]
  model = make_open_clip(arch)
  ckpt = save(model, str(tmp_path / "ckpt.pt"), "pt")
  check_parity(arch, model, ckpt, str(tmp_path / "run"), tmp_path, "pt")


def test_torchscript_archive_imports_as_quickgelu(tmp_path):
  """OpenAI ships TorchScript archives; they are read with torch and imply QuickGELU."""
  arch = reduced("ViT-B-32-quickgelu")
  model = make_open_clip(arch)

  class Wrapper(torch.nn.Module):  # scriptable stand-in holding the same state dict
    def __init__(self, inner):
      super().__init__()
      for k, v in inner.named_children():
        self.add_module(k, v)
      for k, v in inner.named_parameters(recurse=False):
        self.register_parameter(k, v)

    def forward(self, x):
      return x

  path = str(tmp_path / "openai.pt")
  torch.jit.save(torch.jit.script(Wrapper(model)), path)
  assert zipfile.is_zipfile(path) and readers.is_torchscript(path)
  sd = readers.read_checkpoint(path)
  assert "visual.conv1.weight" in sd
  # Named without -quickgelu: switched, and the outputs match the QuickGELU model.
  plain = dataclasses.replace(arch, name="ViT-B-32", quick_gelu=False)
  run = import_clip.import_clip(path, plain, str(tmp_path / "run"),
                                bpe=oc_tokenizer.default_bpe())
  vlkg_model = api.load(run)
  with torch.no_grad():
    ids = oc_tokenizer.SimpleTokenizer()(TEXTS)
    want = model.encode_text(ids, normalize=True).numpy()
  assert np.abs(vlkg_model.encode_texts(TEXTS) - want).max() <= TOL


def test_api_preprocessing_matches_the_reference():
  for batch in images_of_sizes(1):
    np.testing.assert_allclose(
        np.asarray(preprocess.normalize_images(preprocess.resize(batch, 224))).transpose(0, 3, 1, 2),
        reference_preprocess(batch, 224), atol=1e-6)
  assert os.path.exists(oc_tokenizer.default_bpe())
