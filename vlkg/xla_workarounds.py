"""XLA settings for JAX's CPU backend, applied when vlkg is imported.

* **Collective rendezvous timeout.** On CPU (the tests' 8 fake devices, a
  laptop's ``--xla_force_host_platform_device_count``) each device's share of a
  collective (the gradients' all-reduce, REAVL's sharded index search) runs on a
  thread of one process, and XLA aborts the whole process when the threads do not
  meet within ``--xla_cpu_collective_call_terminate_timeout_seconds`` ("Termination
  timeout ... exceeded. Exiting to ensure a consistent program state"). REAVL's training test aborted silently (SIGABRT during a step, its
  message lost to pytest's capture) in 4 of about 20 runs on the 2-core machine
  while training jobs ran beside it, with YNN fusions on or off; late device
  threads are what that abort is for, so vlkg raises the limit to 600 s. It was not
  reproduced on demand: with a 1 s limit and a lighter load, no thread came late.

The flag is added to ``XLA_FLAGS`` unless that variable already names it (set it
yourself to choose another value), and only for jaxlib 0.10, whose flag it
is. It acts if vlkg is imported before JAX creates its CPU client (its first
computation), as ``vlkg.main``, the tests and the notebook do.
"""

from __future__ import annotations

import os

TIMEOUT_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds"
FLAGS = ((TIMEOUT_FLAG, "600"),)


def _jaxlib_version() -> str:
  try:
    from importlib import metadata
    return metadata.version("jaxlib")
  except Exception:  # not installed: nothing to work around
    return ""


def apply(environ=os.environ, jaxlib_version: str | None = None) -> list[str]:
  """Adds the flags that ``environ``'s ``XLA_FLAGS`` lacks; the ones it added."""
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if not version.startswith("0.10."):
    return []
  flags = environ.get("XLA_FLAGS", "")
  added = [f"{name}={value}" for name, value in FLAGS if name not in flags]
  if added:
    environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
  return added
