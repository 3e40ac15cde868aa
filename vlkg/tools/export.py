"""Exports the params of a saved checkpoint to ``params.npz``.

    python -m vlkg.tools.export --workdir DIR [--step N] [--out FILE]

Writes the params of step N (default: the latest) of ``DIR/checkpoints`` to
``DIR/params.npz`` or FILE, with '/'-joined parameter paths as keys (DESIGN.md
contract). Shapes and dtypes come from the checkpoint's metadata, so no model code
or config is needed, and only the params (not the optimizer state) are read. From
the command line it runs on CPU, so it never competes with a training job for the
accelerator.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
import jax

from vlkg import checkpoint

FORMATS = ("npz",)


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
  step, params = checkpoint.load_checkpoint_params(workdir, step)
  out = out or os.path.join(workdir, checkpoint.PARAMS_NPZ)
  checkpoint.save_params_npz(out, params)
  logging.info("exported step %d of %s to %s", step, workdir, out)
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
  app.run(main)
