"""Workarounds for faults of the pinned jaxlib, applied when vlkg is imported.

* **YNN fusions on CPU.** jaxlib 0.10's CPU backend hands some fused
  elementwise and reduction graphs to YNNPACK ("YNN fusions"); in REAVL's training
  step one of them aborts the process at random (SIGABRT while the step runs: 2
  of 6 runs of ``tests/methods/test_reavl.py``'s training test on the 2-core
  machine, 0 of 6 with YNN fusions off). Turning them off
  (``--xla_cpu_experimental_ynn_fusion_type=``, an empty list of fusion kinds)
  changed CLIP's step by less than the run-to-run noise (docs/results.md,
  "Training step"). The flag is added to ``XLA_FLAGS`` unless that variable
  already names it (set it yourself to keep YNN fusions:
  ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=...``), and only for jaxlib
  0.10, whose flag it is. It acts if vlkg is imported before JAX creates its CPU
  client (its first computation), as ``vlkg.main``, the tests and the notebook do.
"""

from __future__ import annotations

import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def _jaxlib_version() -> str:
  try:
    from importlib import metadata
    return metadata.version("jaxlib")
  except Exception:  # not installed: nothing to work around
    return ""


def apply(environ=os.environ, jaxlib_version: str | None = None) -> bool:
  """Adds the workarounds' flags to ``environ``'s ``XLA_FLAGS``; whether it did."""
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if not version.startswith("0.10."):
    return False
  flags = environ.get("XLA_FLAGS", "")
  if YNN_FLAG in flags:
    return False
  environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}=".strip()
  return True
