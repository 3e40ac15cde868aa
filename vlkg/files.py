"""The one path layer of vlkg: local paths and ``gs://`` (or any TensorFlow file
system) alike, and atomic writes.

TPU pod slices keep their runs and data in buckets: every host must see the
workdir, ``data_dir``, the checkpoints, ``params.npz``, ``metrics.jsonl``, the
TensorBoard events, the tokenizer files, the benchmark files and the exports.
Every file vlkg reads or writes therefore goes through the functions here.

* A local path (no ``scheme://``) uses ``os`` and ``open`` exactly as before, and
  imports nothing more.
* A URL (``gs://bucket/run``, TF's in-memory ``ram://``, ``s3://`` or ``hdfs://``
  where TensorFlow has them) uses ``tf.io.gfile``, the layer of big_vision and
  orbax's own metadata I/O (``etils.epath`` delegates ``gs://`` to it when
  TensorFlow is installed, and has no ``ram://``). tf.data, TFRecord writers and
  TensorBoard summary writers take the same URLs natively.

Atomic writes (``atomic_write``): a reader sees the old file or the new one, never
half of one. Runs are killed mid-write (SIGKILL, pre-emption), several hosts read
the tokenizer or manifest one of them writes, and other tools read ``params.npz``.

* On a local disk the content goes to a temporary file in the same directory (the
  rename stays on one file system) that ``os.replace`` renames over the target,
  which POSIX makes atomic.
* Object stores have no atomic rename (``gs://`` copies and deletes). There the
  content is built in memory and written with one upload, and an object store
  makes each single upload atomic: readers see the old object or the new one.
  A kill during the upload leaves the old object. ``ram://`` writes the buffer in
  one call likewise.
* Directories are never atomic on object stores: a prepared dataset is complete
  when its manifest exists (``copy_tree`` writes the file named ``last`` last), and
  orbax marks its finished checkpoints itself.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import tempfile
from typing import BinaryIO, Callable, Iterator, Union

Content = Union[bytes, str, Callable[[BinaryIO], object]]
PathLike = Union[str, "os.PathLike[str]"]


def is_local(path: PathLike) -> bool:
  """Whether ``path`` is on the local file system (it has no ``scheme://``)."""
  return "://" not in os.fspath(path)


def _gfile():
  import tensorflow as tf  # only for URLs: a local run never pays for it here
  return tf.io.gfile


def abspath(path: PathLike) -> str:
  """A local path made absolute (``~`` expanded); a URL as it is, minus trailing
  slashes (``os.path.abspath`` would turn ``gs://b`` into ``<cwd>/gs:/b``)."""
  path = os.fspath(path)
  if is_local(path):
    return os.path.abspath(os.path.expanduser(path))
  scheme, rest = path.split("://", 1)
  return f"{scheme}://{rest.rstrip('/')}"


def under(base_dir: PathLike | None, path: PathLike) -> str:
  """``path`` if it is absolute or a URL, else ``path`` within ``base_dir`` (where a
  description names its files relative to the directory it lies in)."""
  path = os.fspath(path)
  if base_dir is None or os.path.isabs(path) or not is_local(path):
    return path
  return os.path.join(os.fspath(base_dir), path)


def open(path: PathLike, mode: str = "r", encoding: str | None = None):  # pylint: disable=redefined-builtin
  """A file object, as ``open`` gives. Text on a URL is always UTF-8, and a missing
  file is a FileNotFoundError there too (TensorFlow's would come at the first read,
  as its own error type)."""
  path = os.fspath(path)
  if is_local(path):
    return builtins.open(path, mode, encoding=encoding)
  if "r" in mode and not _gfile().exists(path):
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
  if "w" in mode and path.startswith("ram://") and _gfile().exists(path):
    _gfile().remove(path)  # ram:// writes over an old file without truncating it
  return _gfile().GFile(path, mode)


def exists(path: PathLike) -> bool:
  path = os.fspath(path)
  return os.path.exists(path) if is_local(path) else _gfile().exists(path)


def isdir(path: PathLike) -> bool:
  path = os.fspath(path)
  return os.path.isdir(path) if is_local(path) else _gfile().isdir(path)


def isfile(path: PathLike) -> bool:
  path = os.fspath(path)
  if is_local(path):
    return os.path.isfile(path)
  return _gfile().exists(path) and not _gfile().isdir(path)


def getsize(path: PathLike) -> int:
  path = os.fspath(path)
  return os.path.getsize(path) if is_local(path) else _gfile().stat(path).length


def listdir(path: PathLike) -> list[str]:
  """The names in a directory (no trailing slashes on URLs' sub-directories)."""
  path = os.fspath(path)
  if is_local(path):
    return os.listdir(path)
  return [n.rstrip("/") for n in _gfile().listdir(path)]


def makedirs(path: PathLike, exist_ok: bool = True) -> None:
  """Makes ``path`` and its parents. On object stores directories are prefixes, so
  ``exist_ok=False`` checks for an existing one first."""
  path = os.fspath(path)
  if is_local(path):
    os.makedirs(path, exist_ok=exist_ok)
    return
  if not exist_ok and _gfile().exists(path):
    raise FileExistsError(path)
  _gfile().makedirs(path)


def remove(path: PathLike) -> None:
  path = os.fspath(path)
  if is_local(path):
    os.remove(path)
  else:
    _gfile().remove(path)


def rmtree(path: PathLike, ignore_errors: bool = False) -> None:
  path = os.fspath(path)
  if is_local(path):
    shutil.rmtree(path, ignore_errors=ignore_errors)
    return
  try:
    _gfile().rmtree(path)
  except Exception:  # pylint: disable=broad-except  # tf.errors.NotFoundError and kin
    if not ignore_errors:
      raise


def walk(path: PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
  """``os.walk``: (directory, sub-directory names, file names), top down."""
  path = os.fspath(path)
  if is_local(path):
    yield from os.walk(path)
    return
  for root, dirs, names in _gfile().walk(path):
    yield root, [d.rstrip("/") for d in dirs], names


def rename(src: PathLike, dst: PathLike) -> None:
  """Moves a file or a directory to ``dst``, which must not exist.

  Atomic on a local disk. On a URL a directory is copied file by file and then
  deleted (object stores have no directories to rename, and ``ram://`` renames a
  directory's entry without its files): a reader may see both for a moment.
  """
  src, dst = os.fspath(src), os.fspath(dst)
  if exists(dst):  # os.rename would replace an empty directory
    raise FileExistsError(dst)
  if is_local(src) and is_local(dst):
    os.rename(src, dst)
    return
  if isdir(src):
    copy_tree(src, dst)
    rmtree(src)
  else:
    copyfile(src, dst)
    remove(src)


def copyfile(src: PathLike, dst: PathLike) -> None:
  """Copies one file, between any two file systems of the layer."""
  src, dst = os.fspath(src), os.fspath(dst)
  if is_local(src) and is_local(dst):
    shutil.copyfile(src, dst)
  elif is_local(src) or is_local(dst) or src.split("://")[0] != dst.split("://")[0]:
    with open(src, "rb") as f:
      atomic_write(dst, f.read())
  else:
    _gfile().copy(src, dst, overwrite=True)


def copy_tree(src: PathLike, dst: PathLike, last: str | None = None) -> None:
  """Copies the files under ``src`` to the same relative paths under ``dst``.

  ``last``: the name of a file (relative to ``src``) copied after every other one,
  such as a manifest that marks the copy complete to whoever reads ``dst``.
  """
  src, dst = abspath(src), os.fspath(dst)
  makedirs(dst)
  held = None
  for root, dirs, names in walk(src):
    rel = os.path.relpath(root, src) if is_local(src) else root[len(src):].strip("/")
    target = dst if rel in ("", ".") else os.path.join(dst, rel)
    for d in dirs:
      makedirs(os.path.join(target, d))
    for name in names:
      here = os.path.join(rel, name) if rel not in ("", ".") else name
      if here == last:
        held = (os.path.join(root, name), os.path.join(target, name))
        continue
      copyfile(os.path.join(root, name), os.path.join(target, name))
  if held is not None:
    copyfile(*held)


def read_bytes(path: PathLike) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def load_npz(path: PathLike) -> dict:
  """Every array of an ``.npz`` (``np.load`` with ``allow_pickle=False``) as a dict;
  a URL is read into memory first, since zip needs seeks."""
  import numpy as np
  source = os.fspath(path) if is_local(path) else io.BytesIO(read_bytes(path))
  with np.load(source, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def atomic_write(path: PathLike, content: Content) -> str:
  """Writes ``content`` to ``path`` atomically and returns ``path`` as a string.

  Args:
    path: the file to write; its directory is made if missing.
    content: ``bytes``; a ``str``, written as UTF-8 with its newlines kept as they
      are (no platform translation); or a callable that writes into the binary
      file object it is given (``np.savez``, ``torch.save``, ``json`` via a
      wrapper...).

  If writing fails the old file, if any, is left untouched and the temporary file
  is removed; the exception propagates. On a URL the content is built in memory
  and uploaded in one write (see the module docstring).
  """
  path = os.fspath(path)
  if not is_local(path):
    data = _as_bytes(content)
    makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
      f.write(data)
    return path
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                             dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      _write(f, content)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def _write(f: BinaryIO, content: Content) -> None:
  if callable(content):
    content(f)
  elif isinstance(content, str):
    f.write(content.encode("utf-8"))
  elif isinstance(content, (bytes, bytearray, memoryview)):
    f.write(content)
  else:
    raise TypeError(f"content must be bytes, str or a callable, not "
                    f"{type(content).__name__}")


def _as_bytes(content: Content) -> bytes:
  buf = io.BytesIO()
  _write(buf, content)
  return buf.getvalue()


def append_text(path: PathLike, text: str) -> None:
  """Appends ``text`` (UTF-8). Object stores cannot append: TensorFlow's ``gs://``
  re-uploads the whole object each time (fine for ``metrics.jsonl``'s one line per
  log step; a kill mid-upload keeps the previous object)."""
  with open(path, "a", encoding="utf-8") as f:
    f.write(text)


def read_json(path: PathLike, error: type[Exception] = ValueError):
  """The JSON value of ``path``; malformed JSON raises ``error`` naming the file, the
  line and the column (a missing file stays a FileNotFoundError)."""
  import json
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise error(f"{path}: malformed JSON ({e.msg} at line {e.lineno} "
                f"column {e.colno})") from e


def local_copy_dir() -> str:
  """A fresh local temporary directory, for the steps that need local files (a
  native library writing them, worker processes) before ``copy_tree`` sends them
  to a URL."""
  return tempfile.mkdtemp(prefix="vlkg-")
