"""One run per workdir: a second run started on a workdir in use is refused.

Two runs on one workdir would write the same checkpoints and ``metrics.jsonl`` and
each resume from the other's steps. The lock is ``flock`` on ``<workdir>/run.lock``:
the kernel drops it when the process dies, however it dies (SIGKILL, a crash, an
OOM kill), so it never stays stuck, and no pid file has to be checked for liveness.
The file itself stays; it holds the pid and host of the last run that took it, for
the error message.

Only process 0 of a multi-host run takes it: the hosts of one run share the workdir.

File systems: on a local disk flock is exact. On NFS (v4, or v3 with lockd) Linux
emulates flock with byte-range locks that the server arbitrates, so it works across
clients; on file systems without locking (some FUSE mounts, e.g. gcsfuse) ``flock``
succeeds without excluding anyone, and on object stores (``gs://``) there is no file
to lock, so the check is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket

from absl import logging

LOCK_FILE = "run.lock"


class WorkdirInUseError(RuntimeError):
  """Another live process holds the workdir's lock."""


@contextlib.contextmanager
def hold(workdir: str, enabled: bool = True):
  """Holds the workdir's lock for the duration of the ``with`` block.

  Raises:
    WorkdirInUseError: another process holds it; the message names the workdir and
      the holder.
  """
  if not enabled:
    yield
    return
  if "://" in workdir:
    logging.warning("%s: no file lock on an object store; make sure no other run uses "
                    "this workdir", workdir)
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
        raise
      holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
      raise WorkdirInUseError(
          f"workdir {workdir} is in use by another run ({holder}; lock {path}). Wait for "
          "it to finish or stop it, or use another --workdir.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # closing the only descriptor releases the lock
