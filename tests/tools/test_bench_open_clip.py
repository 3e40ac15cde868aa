"""The open_clip peer of ``bench step`` (vlkg.tools.bench_open_clip): its model has
vlkg's shapes, it is skipped with a message without torch or open_clip, and, where
they are installed (torchvision may be the tests' stub), a tiny step trains."""

from __future__ import annotations

import importlib
import os
import sys
import types

import jax
import numpy as np
import pytest

from configs import clip
from vlkg import checkpoint, methods
from vlkg.tools import bench_open_clip, bench_step


def _config(preset="smoke", vocab=300):
  config = clip.get_config(preset)
  with config.unlocked():
    config.model.text.vocab_size = vocab  # as resolve_config sets it from the dataset
  return config


def test_model_config_has_the_shapes_of_the_vlkg_config():
  config = _config("")
  assert bench_open_clip.model_config(config) == {
      "embed_dim": 128,
      "vision_cfg": {"layers": 3, "width": 128, "head_width": 32, "mlp_ratio": 4,
                     "patch_size": 8, "image_size": 64},
      "text_cfg": {"context_length": 32, "vocab_size": 300, "width": 128, "heads": 4,
                   "layers": 2, "mlp_ratio": 4},
      "quick_gelu": False}
  b32 = _config("vit_b32", vocab=49408)
  out = bench_open_clip.model_config(b32)
  assert out["quick_gelu"] and out["vision_cfg"]["patch_size"] == 32
  assert out["vision_cfg"]["head_width"] == 64 and out["text_cfg"]["context_length"] == 77
  with pytest.raises(ValueError, match="vocab_size is 0"):
    bench_open_clip.model_config(_config(vocab=0))
  with pytest.raises(ValueError, match="patch stem only"):
    bench_open_clip.model_config(_config("base"))


def test_peers_are_chosen_by_name():
  assert bench_step.selected_peers(True) == ("transformers", "open_clip")
  assert bench_step.selected_peers(False) == ()
  assert bench_step.selected_peers(["open_clip"]) == ("open_clip",)
  with pytest.raises(ValueError, match=r"unknown peer\(s\) \['torch'\]"):
    bench_step.selected_peers(["torch"])


def test_the_peer_is_skipped_with_a_message_without_open_clip(monkeypatch, capsys):
  real = importlib.import_module

  def without_open_clip(name, *args):
    if name == "open_clip":
      raise ImportError("No module named 'open_clip'")
    if name == "torch":  # installed or not, torch is not what this test is about
      return types.ModuleType("torch")
    return real(name, *args)

  monkeypatch.setattr(bench_open_clip.importlib, "import_module", without_open_clip)
  batch = bench_step.synthetic_batch(_config(), 300)
  assert bench_open_clip.step_seconds(_config(), batch, repeats=1) is None
  out = capsys.readouterr().out
  assert "peer open_clip skipped: No module named 'open_clip'" in out
  assert "pip install torch open_clip_torch" in out


def test_a_tiny_open_clip_step_with_vlkg_shapes():
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "convert"))
  from open_clip_stub import import_open_clip
  open_clip, torch = import_open_clip()
  config = _config()
  batch = bench_step.synthetic_batch(config, 300)
  step, model = bench_open_clip.make_step(torch, open_clip, config, batch, "cpu")
  # The same parameters as vlkg's CLIP, tensor for tensor (vlkg's CLIP also has
  # SigLIP's logit_bias, fixed at 0).
  vlkg_model = methods.build_model(config)
  shapes = jax.eval_shape(lambda r: methods.init_params(vlkg_model, config, r),
                          jax.random.key(0))
  ours = {k: v.size for k, v in checkpoint.flatten_params(shapes).items()
          if k != "logit_bias"}
  theirs = {k: p.numel() for k, p in model.named_parameters()}
  assert len(ours) == len(theirs) and sum(ours.values()) == sum(theirs.values())
  before = [p.detach().clone() for p in model.parameters()]
  losses = [float(step()) for _ in range(2)]
  assert all(np.isfinite(losses)) and losses[0] > 0
  assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
  name, seconds = bench_open_clip.step_seconds(config, batch, repeats=1)
  assert name.startswith("open_clip ") and "float32" in name and seconds > 0
