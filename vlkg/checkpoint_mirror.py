"""Checkpoints on file systems that orbax cannot write directly.

orbax writes the array data of a checkpoint with TensorStore, whose drivers reach
local disks and ``gs://`` and nothing else of vlkg's path layer (``vlkg.files``):
not TensorFlow's ``ram://``, nor ``hdfs://``. For those the ``Checkpointer`` keeps
orbax on a local staging copy and mirrors it:

* on opening, the finished steps of the remote directory are downloaded;
* after each save is on local disk, the new steps are uploaded, with orbax's
  ``commit_success.txt`` last, so a step without it on the remote side is one whose
  upload was cut and is never downloaded; the steps that orbax's preservation
  policy deleted locally are deleted remotely.

Saves there are synchronous (the upload follows the save) and the run must be a
single process: on several hosts use ``gs://`` or a shared mount, which orbax
writes directly and concurrently from every host.
"""

from __future__ import annotations

import os
import shutil

from vlkg import files

# orbax writes it into a step directory once the step is complete.
COMMIT_FILE = "commit_success.txt"


def native(directory: str) -> bool:
  """Whether orbax (TensorStore) writes ``directory`` itself."""
  return files.is_local(directory) or directory.startswith("gs://")


def finished_steps(directory: str) -> list[str]:
  """The names of the complete steps in a mirrored directory, oldest first."""
  if not files.isdir(directory):
    return []
  return sorted((n for n in files.listdir(directory)
                 if n.isdigit() and files.exists(os.path.join(directory, n, COMMIT_FILE))),
                key=int)


class Mirror:
  """A local staging directory that follows a remote checkpoints directory."""

  def __init__(self, remote: str):
    import jax
    if jax.process_count() > 1:
      raise ValueError(
          f"checkpoints in {remote}: orbax cannot write this file system directly, "
          "and a multi-host run cannot mirror it from one host; use gs:// or a "
          "directory every host mounts")
    self.remote = remote
    self._root = files.local_copy_dir()
    self.local = os.path.join(self._root, os.path.basename(remote) or "checkpoints")
    os.makedirs(self.local)
    for name in finished_steps(remote):
      files.copy_tree(os.path.join(remote, name), os.path.join(self.local, name))

  def push(self) -> None:
    """Uploads the finished local steps the remote lacks; deletes the remote steps
    that are gone locally."""
    here = [n for n in os.listdir(self.local)
            if n.isdigit() and os.path.exists(os.path.join(self.local, n, COMMIT_FILE))]
    there = (set(n for n in files.listdir(self.remote) if n.isdigit())
             if files.isdir(self.remote) else set())
    for name in sorted(set(here) - set(finished_steps(self.remote)), key=int):
      files.rmtree(os.path.join(self.remote, name), ignore_errors=True)  # a cut upload
      files.copy_tree(os.path.join(self.local, name), os.path.join(self.remote, name),
                      last=COMMIT_FILE)
    for name in there - set(here):
      files.rmtree(os.path.join(self.remote, name), ignore_errors=True)

  def drop(self, name: str) -> None:
    """Forgets the local copy of a step (set aside on the remote side)."""
    shutil.rmtree(os.path.join(self.local, name), ignore_errors=True)

  def close(self) -> None:
    shutil.rmtree(self._root, ignore_errors=True)
