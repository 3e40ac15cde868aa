"""Prebuilt TFRecord shards: the example layout, the manifest, integrity checks, and
the generic loops that write them for every dataset (the world, real corpora).

A prepared dataset is a directory with ``manifest.json`` (written last, so its
presence means the directory is complete), one set of shards per split, and the
tokenizer they were tokenised with. Each record is one image with all its captions
already tokenised, so nothing Python-side runs in the input pipeline.

Each record holds the image, its captions and their token ids, and the per-image
metadata the evaluators read (objects, boxes, the scene graph); then, per caption,
the features of the fields the run's method declares (``vlkg.graphs.fields``),
which ``caption_features`` builds for every dataset alike. A dataset differs from
another only in where its images, captions and caption graphs come from and how a
graph is said in words (``fields.GraphText``), so every method reads a real corpus
exactly as it reads the world.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import shutil
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vlkg import files
from vlkg.files import atomic_write, read_json
from vlkg.graphs import fields as fields_lib

MANIFEST = "manifest.json"
# 2: features named by the method's fields (was: fixed scene-graph keys), bools as
# int64 0/1, PNG at zlib level 1, and the evaluation table. The world writes 2 (and
# its fingerprint holds it), so that worlds prepared before 3 stay valid.
FORMAT_VERSION = 2
# 3: as 2, and the layout names its image format (``Layout.image_format``); written
# by datasets whose images are not PNG, which readers of 2 must refuse.
IMAGE_FORMAT_VERSION = 3
READ_VERSIONS = (FORMAT_VERSION, IMAGE_FORMAT_VERSION)
IMAGE_FORMATS = ("png", "jpeg")
EVAL_TABLE = "eval_fields.npz"


class DataError(RuntimeError):
  """A prepared dataset is missing, incomplete, corrupt or of the wrong layout."""


@dataclasses.dataclass(frozen=True)
class Layout:
  """Fixed shapes of the per-image fields; stored in the manifest.

  ``features`` are the per-caption features of the method's fields
  (``vlkg.graphs.fields.Feature``), each stored as ``[captions_per_image, *shape]``
  flat; a dataset prepared for CLIP has none. ``image_format`` is how the ``image``
  bytes are encoded: ``png`` (the world, and real corpora prepared before JPEG) or
  ``jpeg`` (real corpora, ``vlkg.data.corpora.images``); a layout without the key
  is PNG.
  """
  image_size: int
  captions_per_image: int
  text_len: int
  max_objects: int
  features: tuple[fields_lib.Feature, ...] = ()
  image_format: str = "png"

  def __post_init__(self):
    if self.image_format not in IMAGE_FORMATS:
      raise DataError(f"layout image_format {self.image_format!r} is not one of "
                      f"{IMAGE_FORMATS}")

  def feature_spec(self):
    import tensorflow as tf
    k, l, m = self.captions_per_image, self.text_len, self.max_objects
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "text_ids": tf.io.FixedLenFeature([k * l], tf.int64),
        "captions": tf.io.FixedLenFeature([k], tf.string),
        "index": tf.io.FixedLenFeature([], tf.int64),
        "num_objects": tf.io.FixedLenFeature([], tf.int64),
        "object_attributes": tf.io.FixedLenFeature([m * 4], tf.int64),
        "boxes": tf.io.FixedLenFeature([m * 4], tf.float32),
        "scene_graph": tf.io.FixedLenFeature([], tf.string),
    }
    for f in self.features:
      dtype = tf.float32 if f.dtype == "float32" else tf.int64
      spec[f.name] = tf.io.FixedLenFeature([k * f.size], dtype)
    return spec

  def to_json(self) -> dict:
    """PNG is left unsaid: a PNG dataset's manifest is the one written before
    ``image_format`` existed, which every reader of version 2 reads."""
    data = {**dataclasses.asdict(self), "features": [f.to_json() for f in self.features]}
    if self.image_format == "png":
      del data["image_format"]
    return data

  @property
  def format_version(self) -> int:
    return FORMAT_VERSION if self.image_format == "png" else IMAGE_FORMAT_VERSION

  @classmethod
  def from_json(cls, data: dict) -> Layout:
    return cls(**{**data, "features": tuple(fields_lib.Feature.from_json(f)
                                            for f in data.get("features", ()))})


def layout_for(image_size: int, captions_per_image: int, text_len: int, max_objects: int,
               fields: Sequence[fields_lib.Field], image_format: str = "png") -> Layout:
  """The layout of a dataset whose method declares ``fields``."""
  return Layout(image_size, captions_per_image, text_len, max_objects,
                tuple(f for field in fields for f in field.features), image_format)


def encode_example(fields: dict[str, Any]) -> bytes:
  """One tf.train.Example from numpy/bytes fields, matching ``Layout.feature_spec``."""
  import tensorflow as tf
  feature = {}
  for key, value in fields.items():
    if isinstance(value, bytes):
      feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    elif isinstance(value, (list, tuple)) and value and isinstance(value[0], bytes):
      feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=list(value)))
    else:
      arr = np.asarray(value).reshape(-1)
      if arr.dtype.kind == "f":
        feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=arr.tolist()))
      else:  # ints and bools
        feature[key] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=arr.astype(np.int64).tolist()))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def shard_name(split: str, shard: int, num_shards: int) -> str:
  return f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"


def write_manifest(directory: str, manifest: dict) -> None:
  """``manifest.json``, at the format version its layout needs (PNG: 2, as before)."""
  version = Layout.from_json(manifest["layout"]).format_version
  atomic_write(os.path.join(directory, MANIFEST), json.dumps(
      {"format_version": version, **manifest}, indent=1, sort_keys=True))


def read_manifest(dataset_dir: str) -> dict:
  path = os.path.join(dataset_dir, MANIFEST)
  if not files.exists(path):
    raise DataError(f"{dataset_dir}: no {MANIFEST}; the dataset is missing or was only "
                    "half written. Run `python -m vlkg.tools.prepare --config ...`.")
  manifest = read_json(path, DataError)
  for key in ("format_version", "splits", "layout", "tokenizer"):
    if key not in manifest:
      raise DataError(f"{path}: missing field {key!r}")
  if manifest["format_version"] not in READ_VERSIONS:
    raise DataError(f"{path}: format_version {manifest['format_version']} is not one "
                    f"of {READ_VERSIONS}; prepare the dataset again")
  image_format = manifest["layout"].get("image_format", "png")
  if image_format not in IMAGE_FORMATS or (manifest["format_version"] == FORMAT_VERSION
                                           and image_format != "png"):
    raise DataError(f"{path}: image_format {image_format!r} in a dataset of format "
                    f"version {manifest['format_version']}")
  return manifest


def layout_of(manifest: dict) -> Layout:
  return Layout.from_json(manifest["layout"])


def split_files(dataset_dir: str, manifest: dict, split: str) -> list[dict]:
  """The split's shards as manifest entries with absolute paths, checked on disk.

  A shard whose size differs from the manifest's was truncated or replaced after
  prepare; that is reported with the file's name before any record is read.
  """
  if split not in manifest["splits"]:
    raise DataError(f"{dataset_dir}: no split {split!r}; have {sorted(manifest['splits'])}")
  out = []
  for entry in manifest["splits"][split]["files"]:
    path = os.path.join(dataset_dir, entry["name"])
    if not files.exists(path):
      raise DataError(f"{path}: shard listed in the manifest is missing")
    size = files.getsize(path)
    if size != entry["bytes"]:
      raise DataError(f"{path}: {size} bytes on disk but {entry['bytes']} in the "
                      "manifest; the shard is truncated or corrupt")
    out.append({**entry, "path": path})
  return out


def find_bad_record(path: str, spec: dict) -> str:
  """Scans one shard record by record and says what is wrong with it, if anything.

  Only called after the pipeline failed, to turn TensorFlow's anonymous error into
  one that names the file, the record and the field.
  """
  import tensorflow as tf
  i = -1
  try:
    for i, record in enumerate(tf.data.TFRecordDataset(path)):
      example = tf.train.Example.FromString(record.numpy())
      present = example.features.feature
      for key, feature_spec in spec.items():
        if key not in present:
          return f"{path}: record {i}: missing field {key!r}"
        kind = present[key].WhichOneof("kind")
        values = getattr(present[key], kind).value
        want = int(np.prod(feature_spec.shape)) if feature_spec.shape else 1
        if len(values) != want:
          return f"{path}: record {i}: field {key!r} has {len(values)} values, expected {want}"
  except tf.errors.OpError as e:
    return f"{path}: unreadable after record {i} ({e.message.splitlines()[0]})"
  return ""


# ------------------------------------------------------------ writing records


def caption_features(fields: Sequence[fields_lib.Field],
                     captions: Sequence[fields_lib.Caption], rng_key: Sequence[int],
                     captions_per_image: int) -> dict[str, np.ndarray]:
  """The features of ``fields`` for one image's captions, ``[K, *shape]`` each.

  Each field draws from its own generator, seeded by ``rng_key`` (the dataset's
  (seed, split, image index)) and the field's ``stream``, and shared by the captions
  in order; so a field's values do not depend on which other fields are declared.
  Rows past ``len(captions)`` (a held-out image with fewer captions than K) are
  zeros, as its padding caption rows are.
  """
  out = {}
  for field in fields:
    rng = np.random.default_rng([*rng_key, field.stream])
    rows = [field.make(caption, rng) for caption in captions]
    for f in field.features:
      array = np.zeros((captions_per_image, *f.shape), f.numpy_dtype)
      for j, row in enumerate(rows):
        array[j] = row[f.name]
      out[f.name] = array
  return out


# The rng of a field for one evaluation text: (seed, _EVAL_STREAM, crc32(text), stream).
_EVAL_STREAM = 99


def eval_features(fields: Sequence[fields_lib.Field], texts: Iterable[str],
                  caption_of: Callable[[str], fields_lib.Caption], seed: int,
                  into: dict[str, dict] | None = None) -> dict[str, dict]:
  """text -> the features of the ``eval_texts`` fields, for each distinct text not
  already in ``into`` (which is extended and returned). A text's values depend on
  the text alone, not on where it occurs."""
  import zlib
  into = {} if into is None else into
  wanted = [f for f in fields if f.eval_texts]
  if not wanted:
    return into
  for text in texts:
    if text in into:
      continue
    caption, row = caption_of(text), {}
    for field in wanted:
      rng = np.random.default_rng([seed, _EVAL_STREAM, zlib.crc32(text.encode()),
                                   field.stream])
      row.update(field.make(caption, rng))
    into[text] = row
  return into


def write_eval_table(directory: str, rows: dict[str, dict], tokenizer) -> None:
  """``EVAL_TABLE``: the evaluation texts (``texts``, sorted), their token ids
  (``text_ids``) and one array per feature, row i for text i."""
  texts = sorted(rows)
  arrays = {"texts": np.array(texts, dtype=str),
            "text_ids": tokenizer.encode(texts).astype(np.int32)}
  names = list(rows[texts[0]]) if texts else []
  for name in names:
    arrays[name] = np.stack([rows[t][name] for t in texts])
  atomic_write(os.path.join(directory, EVAL_TABLE),
               lambda f: np.savez_compressed(f, **arrays))


def read_eval_table(directory: str) -> dict[str, np.ndarray] | None:
  """The dataset's ``EVAL_TABLE`` as arrays, or None if it has none (its method
  declares no ``eval_texts`` field)."""
  path = os.path.join(directory, EVAL_TABLE)
  if not files.exists(path):
    return None
  return files.load_npz(path)


def encode_png(image: np.ndarray) -> bytes:
  """uint8 [H, W, 3] as PNG. zlib level 1: 5 ms instead of 26 ms for a 224 x 224
  photo, 15% larger; at level 6 PNG encoding, not decoding or resizing, would bound
  the prepare rate of a real corpus."""
  import io

  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def write_shard(directory: str, split: str, shard: int, num_shards: int,
                examples: Iterable[dict[str, Any]]) -> dict:
  """Writes ``examples`` (each ``encode_example``'s fields) into one shard; returns
  its manifest entry (name, number of records, bytes)."""
  import tensorflow as tf  # imported in the worker: TF must not be forked mid-use
  name = shard_name(split, shard, num_shards)
  path = os.path.join(directory, name)
  count = 0
  with tf.io.TFRecordWriter(path) as writer:
    for example in examples:
      writer.write(encode_example(example))
      count += 1
  return {"name": name, "num_records": count, "bytes": files.getsize(path)}


def merge_shards(results: Iterable[dict], splits: Iterable[str]
                 ) -> tuple[dict[str, dict], dict[str, collections.Counter]]:
  """The manifest's ``splits`` and the statistics per split, from the shard workers'
  results (each with ``split``, ``file`` from ``write_shard`` and ``stats``)."""
  manifest = {s: {"files": [], "num_examples": 0} for s in splits}
  stats = {s: collections.Counter() for s in manifest}
  for r in results:
    manifest[r["split"]]["files"].append(r["file"])
    manifest[r["split"]]["num_examples"] += r["file"]["num_records"]
    stats[r["split"]].update(r["stats"])
  return manifest, stats


def build_atomically(final_dir: str, build: Callable[[str], dict]) -> dict:
  """Runs ``build(tmp)`` into ``final_dir + '.partial-<pid>'``, then renames it into
  place: a directory under its final name is always complete.

  A ``final_dir`` on a URL (``gs://``...) is built in a local directory (worker
  processes and sentencepiece write local files) and copied up with the manifest
  last: there a directory is complete when its manifest exists, which is what
  ``read_manifest`` and ``prepare.ensure_prepared`` check.
  """
  if not files.is_local(final_dir):
    local = files.local_copy_dir()
    try:
      info = build(os.path.join(local, os.path.basename(final_dir)))
      files.copy_tree(os.path.join(local, os.path.basename(final_dir)), final_dir,
                      last=MANIFEST)
    finally:
      shutil.rmtree(local, ignore_errors=True)
    return info
  tmp = f"{final_dir}.partial-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    info = build(tmp)
    try:
      os.rename(tmp, final_dir)
    except OSError:
      if not os.path.exists(os.path.join(final_dir, MANIFEST)):
        raise
      shutil.rmtree(tmp)  # another process finished the same dataset first
      logging.info("%s was prepared by another process first", final_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return info


def worker_count(workers: int, tasks: int) -> int:
  """The processes that write ``tasks`` shards: ``workers`` (``config.world.workers``;
  0 is one per core), never more than the shards."""
  return max(1, min(workers or os.cpu_count() or 1, tasks))


def map_shards(write_shard, tasks: list, workers: int) -> list:
  """``[write_shard(t) for t in tasks]``, over up to ``workers`` spawned processes
  (spawn, not fork: TensorFlow's threads do not survive a fork); 0 is one per core."""
  workers = worker_count(workers, len(tasks))
  if workers == 1:
    return [write_shard(t) for t in tasks]
  import multiprocessing
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    return pool.map(write_shard, tasks, chunksize=1)
