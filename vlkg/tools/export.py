"""Exports the params of a saved checkpoint to ``params.npz`` or an open_clip file.

    python -m vlkg.tools.export --workdir DIR [--step N] [--out FILE]
    python -m vlkg.tools.export --workdir DIR --format open_clip --out FILE.pt

``npz`` (default) writes the params of step N (default: the latest) of
``DIR/checkpoints`` to ``DIR/params.npz`` or FILE, with '/'-joined parameter paths
as keys (DESIGN.md contract). Shapes and dtypes come from the checkpoint's metadata,
so no model code or config is needed, and only the params (not the optimizer
state) are read. From the command line it runs on CPU, so it never competes with a
training job for the accelerator.

``open_clip`` writes the same params as an OpenAI/open_clip CLIP state dict (see
``vlkg.convert.open_clip``) that ``open_clip.create_model(<arch>)`` loads with
``load_state_dict(strict=True)``: FILE ``.safetensors`` is written with the
``safetensors`` package's numpy API, any other name with ``torch.save`` (torch
must be installed). The model
shape comes from ``DIR/config.json``; a directory without checkpoints (e.g. one
made by ``vlkg.tools.import_clip``) exports its ``params.npz``. The model must be
an open_clip CLIP ViT: patch stem, class-token pooling, causal EOT-pooled text.
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging
import jax
import numpy as np

from vlkg import checkpoint, config as config_lib, console, files
from vlkg.files import atomic_write

FORMATS = ("npz", "open_clip")


def _define_flags() -> None:
  # Defined only when run as a program: vlkg.main imports this module for
  # --mode export and has its own --workdir, which absl would reject as a
  # duplicate.
  flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
  flags.DEFINE_integer("step", None, "Step to export; the latest if unset.")
  flags.DEFINE_string("out", None, "Output file; DIR/params.npz if unset.")
  flags.DEFINE_enum("format", "npz", FORMATS, "Output format.")


def export(workdir: str, step: int | None = None, out: str | None = None,
           fmt: str = "npz") -> str:
  """Writes the params of ``step`` of ``workdir`` to ``out``; returns the path."""
  if fmt not in FORMATS:
    raise ValueError(f"--format={fmt!r} is not supported; use one of {FORMATS}")
  if fmt == "open_clip":
    return export_open_clip(workdir, out, step)
  step, params = checkpoint.load_checkpoint_params(workdir, step)
  out = out or os.path.join(workdir, checkpoint.PARAMS_NPZ)
  checkpoint.save_params_npz(out, params)
  logging.info("exported step %d of %s to %s", step, workdir, out)
  return out


def _run_params(workdir: str, step: int | None) -> tuple[str, dict]:
  """(where from, flat numpy params): a checkpoint step, else ``params.npz``."""
  has_checkpoints = files.isdir(os.path.join(workdir, checkpoint.CHECKPOINTS))
  if has_checkpoints or step is not None:
    step, params = checkpoint.load_checkpoint_params(workdir, step)
    flat = checkpoint.flatten_params(params)
    return f"step {step}", {k: np.asarray(v) for k, v in flat.items()}
  path = os.path.join(workdir, checkpoint.PARAMS_NPZ)
  if not files.isfile(path):
    raise FileNotFoundError(f"{workdir} has neither checkpoints/ nor params.npz")
  return path, checkpoint.load_params_npz(path)


def export_open_clip(workdir: str, out: str | None, step: int | None = None) -> str:
  """Writes ``workdir``'s params as an open_clip state dict to ``out``.

  Raises:
    ValueError: no ``out``, or the run's model is not an open_clip CLIP ViT (the
      message names the config field).
    ImportError: ``out`` is not ``.safetensors`` and torch is not installed.
  """
  from vlkg.convert import open_clip as convert  # pylint: disable=import-outside-toplevel
  from vlkg.convert import readers  # pylint: disable=import-outside-toplevel
  if not out:
    raise ValueError("--format=open_clip needs --out FILE (.pt or .safetensors); "
                     "only --format=npz has a default, DIR/params.npz")
  torch = None
  if not out.endswith(".safetensors"):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(
          f"writing {out} as a torch file needs torch (pip install torch); or name "
          "the output *.safetensors, which needs no torch and which open_clip also "
          "loads (open_clip.create_model(arch, pretrained=FILE))") from e
  with files.open(os.path.join(workdir, "config.json")) as f:
    config = config_lib.upgrade(json.load(f))  # model.image_size for older runs too
  model = dict(config["model"])
  arch = convert.arch_from_model_config(model, name=os.path.basename(workdir))
  text = model["text"]
  if text.get("eot_id") not in (None, arch.vocab_size - 1):
    # open_clip pools at argmax(ids), which is the EOT only when EOT is the last id.
    logging.warning("config.model.text.eot_id=%s is not the last id %d: open_clip "
                    "will pool these text weights at the largest token id, not at "
                    "EOT", text.get("eot_id"), arch.vocab_size - 1)
  source, flat = _run_params(workdir, step)
  # A method's own modules (Structure-CLIP's kee/, LOUPE's shapley/ and
  # region_head/) have no place in open_clip's CLIP; the two towers do.
  towers = ("img/", "txt/", "logit_scale", "logit_bias")
  extra = sorted({k.split("/")[0] for k in flat if not k.startswith(towers)})
  if extra:
    logging.warning("exporting only the two towers of %s to open_clip; left out: %s "
                    "(they stay in params.npz)", workdir, ", ".join(extra))
    flat = {k: v for k, v in flat.items() if k.startswith(towers)}
  state_dict = convert.from_vlkg(flat, arch)
  if torch is None:
    readers.write_safetensors(out, state_dict)
  else:
    atomic_write(out, lambda f: torch.save(
        {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, f))
  logging.info("exported %s of %s as an open_clip state dict to %s", source, workdir,
               out)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  print(export(f.workdir, f.step, f.out, f.format))


if __name__ == "__main__":
  # Before any backend starts: on a TPU/GPU host the accelerator belongs to the
  # training job, and restoring to numpy needs no accelerator.
  jax.config.update("jax_platforms", "cpu")
  _define_flags()
  flags.mark_flags_as_required(["workdir"])
  console.run(main)
