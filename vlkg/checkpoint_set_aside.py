"""Checkpoint steps that cannot be used, moved aside rather than deleted.

A step that fails to restore (a truncated file) and the tmp directory of a save
that never finished (a run killed mid-save) are moved to ``broken_checkpoints/``
beside the checkpoints, with a warning that names them, so that nothing saved is
lost and orbax no longer sees them. On several hosts, process 0 moves and all
hosts agree before going on.
"""

from __future__ import annotations

import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from vlkg import files

TMP_SUFFIX = ".orbax-checkpoint-tmp"


def all_hosts(ok: bool) -> bool:
  """Whether ``ok`` holds on every process (a collective on several hosts)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def sync(tag: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"vlkg: {tag}")


def move(directory: str, name: str) -> str:
  """Moves ``directory/name`` to ``broken_<basename>/`` beside ``directory`` (on
  process 0; callers ``sync`` after) and returns where it goes."""
  parent, base = os.path.split(directory.rstrip(os.sep))
  target = os.path.join(parent, f"broken_{base}", name)
  if jax.process_index() == 0:
    files.makedirs(os.path.dirname(target))
    final, n = target, 0
    while files.exists(final):  # the same step broken twice: keep both
      n += 1
      final = f"{target}.{n}"
    files.rename(os.path.join(directory, name), final)
    return final
  return target


def unfinished(directory: str) -> None:
  """Moves the tmp directories of saves that never finished (a run killed mid-save)
  out of the checkpoints, with a warning naming the step.

  orbax never lists them as steps, so a resumed run starts from the newest finished
  one by itself, and it deletes them (when it opens the directory with
  ``cleanup_tmp_directories``, or when it saves that step again); set aside, they
  are kept for inspection. Called when a run opens its checkpoints, before it saves.
  """
  names = []
  if files.isdir(directory):
    names = sorted(n for n in files.listdir(directory) if TMP_SUFFIX in n)
  for name in names:
    moved = move(directory, name)
    logging.warning("checkpoint step %s in %s was never finished (a run stopped while "
                    "saving it); moved to %s", name.split(".")[0], directory, moved)
  sync(f"unfinished checkpoints of {directory} set aside")
