"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Runs are killed mid-write (SIGKILL on preemption, DESIGN.md "resume after SIGKILL"),
several hosts load the same tokenizer or manifest while one of them writes it, and
``params.npz`` is read by other tools. Every file that another process may read is
therefore written to a temporary file in the same directory (so that the rename
stays on one file system) and renamed over the target with ``os.replace``, which
POSIX makes atomic.
"""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable, Union

Content = Union[bytes, str, Callable[[BinaryIO], object]]


def atomic_write(path: "str | os.PathLike", content: Content) -> str:
  """Writes ``content`` to ``path`` atomically and returns ``path`` as a string.

  Args:
    path: the file to write; its directory is made if missing.
    content: ``bytes``; a ``str``, written as UTF-8 with its newlines kept as they
      are (no platform translation); or a callable that writes into the binary
      file object it is given (``np.savez``, ``torch.save``, ``json`` via a
      wrapper...).

  If writing fails the old file, if any, is left untouched and the temporary file
  is removed; the exception propagates.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                             dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      if callable(content):
        content(f)
      elif isinstance(content, str):
        f.write(content.encode("utf-8"))
      else:
        f.write(content)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def read_json(path: "str | os.PathLike", error: type[Exception] = ValueError):
  """The JSON value of ``path``; malformed JSON raises ``error`` naming the file, the
  line and the column (a missing file stays a FileNotFoundError)."""
  import json
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise error(f"{os.fspath(path)}: malformed JSON ({e.msg} at line {e.lineno} "
                f"column {e.colno})") from e
