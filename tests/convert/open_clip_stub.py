"""Imports open_clip for the optional parity tests, on machines without torchvision.

open_clip's model code needs only torch, but its package imports torchvision's
transforms and ``ops.misc.FrozenBatchNorm2d`` at import time; there is no CPU
torchvision build for every torch. When torchvision is missing, a stub package with
just those names is written to a temporary directory and put on ``sys.path``. The
stub's transforms do nothing: the tests compare against a preprocessing reference of
their own, never against open_clip's transform objects.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile

import pytest

_STUB_FILES = {
    "torchvision/__init__.py": "",
    "torchvision/ops/__init__.py": "",
    "torchvision/ops/misc.py": (
        "import torch\n"
        "class FrozenBatchNorm2d(torch.nn.Module):\n"
        "  def __init__(self, *args, **kwargs):\n"
        "    raise NotImplementedError('torchvision stub')\n"),
    "torchvision/transforms/functional.py": "",
    "torchvision/transforms/__init__.py": (
        "import enum\n"
        "from . import functional\n"
        "class InterpolationMode(enum.Enum):\n"
        "  NEAREST = 'nearest'\n"
        "  BILINEAR = 'bilinear'\n"
        "  BICUBIC = 'bicubic'\n"
        "  LANCZOS = 'lanczos'\n"
        "class _Stub:\n"
        "  def __init__(self, *args, **kwargs):\n"
        "    self.args, self.kwargs = args, kwargs\n"
        "  def __call__(self, x):\n"
        "    raise NotImplementedError('torchvision stub')\n"
        "Normalize = Compose = RandomResizedCrop = ToTensor = Resize = _Stub\n"
        "CenterCrop = ColorJitter = Grayscale = _Stub\n"),
}


def _write_stub() -> str:
  root = tempfile.mkdtemp(prefix="torchvision_stub_")
  for rel, text in _STUB_FILES.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)
  return root


def import_open_clip():
  """open_clip and torch, or a pytest skip when either is not installed (of the
  test, or of the module when called at import time)."""
  torch = pytest.importorskip("torch")
  if importlib.util.find_spec("open_clip") is None:
    pytest.skip("open_clip is not installed", allow_module_level=True)
  if importlib.util.find_spec("torchvision") is None:
    sys.path.insert(0, _write_stub())
  try:
    open_clip = importlib.import_module("open_clip")
  except ImportError as e:  # e.g. ftfy or regex missing
    pytest.skip(f"open_clip does not import: {e}", allow_module_level=True)
  return open_clip, torch
