"""Reading (and writing) torch-world checkpoint files as numpy, without torch.

Three on-disk formats carry CLIP weights:

* ``.safetensors`` (Hugging Face's format): read and written with the
  ``safetensors`` package's numpy API, which needs no torch.
* ``torch.save`` zip archives (torch >= 1.6, ``torch/serialization.py``):
  ``<root>/data.pkl`` is a pickle whose tensors are
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` calls and
  whose storages are persistent ids ``("storage", <torch.XStorage>, key, device,
  numel)`` naming the raw bytes in ``<root>/data/<key>``. A restricted unpickler maps
  exactly those globals to numpy and refuses everything else, so a state dict (or a
  dict holding one, as open_clip's training checkpoints) loads with no torch and no
  arbitrary code.
* TorchScript archives (OpenAI's released ``ViT-B-32.pt`` etc.): the same zip with
  ``code/`` and ``constants.pkl``, whose tensors can only be rebuilt by torch. torch
  is used when importable; otherwise the error says what to do.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any, Mapping

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from vlkg import files
from vlkg.files import atomic_write

# The safetensors dtypes that numpy holds (BF16 through ml_dtypes), by the numpy
# dtype name that ``safetensors.numpy`` writes them from.
_ST_NUMPY = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64",
    "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}

# torch storage class names (and dtype names, for _rebuild_tensor_v3) -> numpy.
_TORCH_STORAGES = {
    "DoubleStorage": np.dtype("<f8"), "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"), "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}
_TORCH_DTYPES = {
    "float64": np.dtype("<f8"), "float32": np.dtype("<f4"), "float16": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16), "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"), "int16": np.dtype("<i2"), "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"), "bool": np.dtype("?"),
}


class CheckpointFormatError(ValueError):
  """A checkpoint file that cannot be read; the message names the file."""


# --- safetensors ----------------------------------------------------------------


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of a ``.safetensors`` file, as numpy arrays in their own dtypes.

  Read with the ``safetensors`` package's numpy framework (no torch). Its
  ``safe_open`` maps BF16 to ``ml_dtypes.bfloat16`` (its bytes-based
  ``safetensors.numpy.load`` does not know BF16, so it is not used here), but it
  fails without naming the tensor on the float8 types, for which numpy has no
  dtype; those are refused here first, by name.
  """
  try:
    with safetensors.safe_open(path, framework="np") as f:
      names = list(f.keys())
      for name in names:
        kind = f.get_slice(name).get_dtype()
        if kind not in _ST_NUMPY:
          raise CheckpointFormatError(
              f"{path}: tensor {name!r} has unsupported dtype {kind!r}; "
              f"supported: {sorted(_ST_NUMPY)}")
      return {name: f.get_tensor(name) for name in names}
  except safetensors.SafetensorError as e:
    raise CheckpointFormatError(f"{path}: not a readable safetensors file: {e}") from e


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> str:
  """Writes ``tensors`` (name -> numpy array) as a ``.safetensors`` file, atomically.

  Raises:
    ValueError: a tensor's dtype has no safetensors name (the tensor is named).
  """
  arrays = {}
  for name in sorted(tensors):
    # safetensors.numpy writes an array's buffer as it lies in memory, so it must
    # be C-contiguous; np.array(order="C"), not ascontiguousarray, which would make
    # a 0-d scalar 1-d.
    array = np.array(tensors[name], copy=None, order="C")
    if array.dtype.name not in _ST_NUMPY.values():
      raise ValueError(f"tensor {name!r}: dtype {array.dtype} has no safetensors name")
    arrays[name] = array
  meta = {str(k): str(v) for k, v in metadata.items()} if metadata else None
  return atomic_write(path, safetensors.numpy.save(arrays, metadata=meta))


# --- torch.save zip archives ------------------------------------------------------


class _Storage:
  """A storage's bytes, read lazily from the archive, and its element dtype."""

  def __init__(self, archive: zipfile.ZipFile, name: str, dtype: np.dtype | None):
    self.archive, self.name, self.dtype = archive, name, dtype
    self._data: bytes | None = None

  def array(self, dtype: np.dtype | None = None) -> np.ndarray:
    if self._data is None:
      self._data = self.archive.read(self.name)
    dtype = dtype or self.dtype
    if dtype is None:
      raise CheckpointFormatError(f"storage {self.name} has no dtype")
    return np.frombuffer(self._data, dtype=dtype)


def _rebuild(storage: _Storage, offset: int, size, stride,
             dtype: np.dtype | None = None) -> np.ndarray:
  flat = storage.array(dtype)
  size, stride = tuple(size), tuple(stride)
  if not size:
    return np.array(flat[offset])
  if any(s == 0 for s in size):
    return np.zeros(size, flat.dtype)
  # torch strides count elements; numpy's count bytes. Views of one storage share
  # it, so each tensor is copied out of its window.
  view = np.lib.stride_tricks.as_strided(
      flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride])
  return view.copy()


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  return _rebuild(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
  del requires_grad, backward_hooks, metadata
  return _rebuild(storage, offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
  del requires_grad, backward_hooks, state
  return data


class _StateDictUnpickler(pickle.Unpickler):
  """Unpickles a torch.save archive's data.pkl into numpy, allowing only tensors."""

  def __init__(self, file, archive: zipfile.ZipFile, root: str, path: str):
    super().__init__(file)
    self.archive, self.root, self.path = archive, root, path
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str):
    if module == "collections" and name == "OrderedDict":
      return OrderedDict
    if module == "torch._utils":
      known = {"_rebuild_tensor_v2": _rebuild_tensor_v2,
               "_rebuild_tensor_v3": _rebuild_tensor_v3,
               "_rebuild_parameter": _rebuild_parameter,
               "_rebuild_parameter_with_state": _rebuild_parameter_with_state}
      if name in known:
        return known[name]
    if module == "torch":
      if name in _TORCH_STORAGES:
        return _TORCH_STORAGES[name]
      if name in _TORCH_DTYPES:
        return _TORCH_DTYPES[name]
    if module == "torch.storage" and name in ("UntypedStorage", "_LegacyStorage"):
      return np.dtype("u1")
    if module == "torch.serialization" and name == "_get_layout":
      return lambda layout: layout
    if module == "torch" and name == "strided":
      return "strided"
    raise CheckpointFormatError(
        f"{self.path}: the pickle needs {module}.{name}, which a plain state dict "
        "does not; save the model's state_dict() instead of the model object")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise CheckpointFormatError(f"{self.path}: unknown persistent id {pid!r}")
    _, dtype, key, _location, _numel = pid
    key = str(key)
    if key not in self.storages:
      self.storages[key] = _Storage(self.archive, f"{self.root}data/{key}",
                                    dtype if isinstance(dtype, np.dtype) else None)
    return self.storages[key]


def _archive_root(archive: zipfile.ZipFile, path: str) -> str:
  """The folder prefix of a torch zip archive (``archive/`` or the file's stem)."""
  for name in archive.namelist():
    if name.endswith("data.pkl") and name.count("/") == 1:
      return name[:-len("data.pkl")]
  raise CheckpointFormatError(f"{path}: zip file without <root>/data.pkl; not a "
                              "torch.save archive")


def is_torchscript(path: str) -> bool:
  """Whether ``path`` is a TorchScript (torch.jit) archive, like OpenAI's CLIP files."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
  return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in names)


def read_torch_zip(path: str) -> Any:
  """The object in a ``torch.save`` zip archive, tensors as numpy arrays."""
  with zipfile.ZipFile(path) as archive:
    root = _archive_root(archive, path)
    order = f"{root}byteorder"
    if order in archive.namelist() and archive.read(order).strip() != b"little":
      raise CheckpointFormatError(f"{path}: big-endian torch archives are not supported")
    with archive.open(f"{root}data.pkl") as f:
      return _StateDictUnpickler(f, archive, root, path).load()


def _torch_load(path: str) -> Any:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  if is_torchscript(path):
    module = torch.jit.load(path, map_location="cpu")
    return {k: v for k, v in module.state_dict().items()}
  return torch.load(path, map_location="cpu", weights_only=True)


def _to_numpy_tree(obj: Any) -> Any:
  if hasattr(obj, "detach") and hasattr(obj, "numpy"):  # a torch tensor
    tensor = obj.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
      return tensor.float().numpy().astype(ml_dtypes.bfloat16)
    return tensor.numpy().copy()
  if isinstance(obj, Mapping):
    return {k: _to_numpy_tree(v) for k, v in obj.items()}
  return obj


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
  """A flat ``{torch key: numpy array}`` state dict from any of the formats above.

  A checkpoint that wraps its state dict (``{"state_dict": {...}, "epoch": ...}``
  as open_clip's training writes) is unwrapped.

  Raises:
    FileNotFoundError: no file at ``path``.
    CheckpointFormatError: the format is not recognised, or needs torch and torch
      is not installed (the message says how to convert the file instead).
  """
  if not files.is_local(path):
    # safetensors and zip read a local file by path: a bucket's copy comes down
    # once into a temporary directory, removed after reading.
    if not files.isfile(path):
      raise FileNotFoundError(f"checkpoint not found: {path}")
    local_dir = files.local_copy_dir()
    try:
      local = os.path.join(local_dir, os.path.basename(path))
      files.copyfile(path, local)
      return read_checkpoint(local)
    finally:
      files.rmtree(local_dir, ignore_errors=True)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  with open(path, "rb") as f:
    head = f.read(16)
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  if zipfile.is_zipfile(path):
    if is_torchscript(path):
      obj = _torch_load(path)
      if obj is None:
        raise CheckpointFormatError(
            f"{path} is a TorchScript (torch.jit) archive, as OpenAI's released CLIP "
            "files are; reading one needs torch. Install torch (pip install torch), "
            "or convert it once elsewhere to a state dict: "
            "torch.save(torch.jit.load(path).state_dict(), 'state_dict.pt'), or to "
            ".safetensors")
    else:
      obj = read_torch_zip(path)
  elif head[:1] == b"\x80":  # a bare pickle: torch.save's pre-1.6 legacy format
    obj = _torch_load(path)
    if obj is None:
      raise CheckpointFormatError(
          f"{path} is a legacy (pre-zip) torch pickle, which needs torch to read; "
          "install torch, or re-save it with a current torch or as .safetensors")
  else:
    raise CheckpointFormatError(
        f"{path}: not a .safetensors file, a torch.save zip archive or a torch pickle")
  obj = _to_numpy_tree(obj)
  if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping):
    raise CheckpointFormatError(f"{path} holds a {type(obj).__name__}, not a state dict")
  out = {}
  for key, value in obj.items():
    if isinstance(value, np.ndarray):
      out[str(key)] = value
    elif isinstance(value, (int, float)):  # e.g. OpenAI's input_resolution
      out[str(key)] = np.asarray(value)
  return out
