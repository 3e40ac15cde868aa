"""Prebuilt TFRecord shards: the example layout, the manifest, integrity checks, and
the caption-graph fields every dataset (the world, real corpora) writes the same way.

A prepared dataset is a directory with ``manifest.json`` (written last, so its
presence means the directory is complete), one set of shards per split, and the
tokenizer they were tokenised with. Each record is one image with all its captions
already tokenised, so nothing Python-side runs in the input pipeline.

A dataset differs from another only in where its images, captions and caption graphs
come from and how a graph is said in words (``GraphText``); the scene-graph fields
built from them (``graph_fields``, ``mosaic_fields``) are shared, so every method
reads a real corpus exactly as it reads the world.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Any, Callable

import numpy as np

from vlkg.files import atomic_write

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class DataError(RuntimeError):
  """A prepared dataset is missing, incomplete, corrupt or of the wrong layout."""


@dataclasses.dataclass(frozen=True)
class Layout:
  """Fixed shapes of the per-image fields; stored in the manifest.

  Scene-graph fields exist only in datasets prepared for a method that reads them
  (its ``FIELDS``): ``negatives`` adds one hard-negative caption per caption,
  ``max_triples > 0`` adds each caption's triples as token ids [T, 3, S];
  ``mosaic_slots > 0`` adds MosaiCLIP's texts of each caption (sub-captions,
  sub-graph negatives, the whole-caption negative) as token ids [mosaic_slots, L]
  with a validity flag per slot (``vlkg.methods.mosaiclip_loss.slot_layout``);
  ``max_phrases > 0`` adds the token spans of each caption's object phrases
  [P, 2] (LOUPE's phrase players, ``vlkg.data.world.phrases``).
  """
  image_size: int
  captions_per_image: int
  text_len: int
  max_objects: int
  negatives: bool = False
  max_triples: int = 0
  triple_tokens: int = 0
  mosaic_slots: int = 0
  max_phrases: int = 0

  def feature_spec(self):
    import tensorflow as tf
    k, l, m = self.captions_per_image, self.text_len, self.max_objects
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "text_ids": tf.io.FixedLenFeature([k * l], tf.int64),
        "captions": tf.io.FixedLenFeature([k], tf.string),
        "index": tf.io.FixedLenFeature([], tf.int64),
        "num_objects": tf.io.FixedLenFeature([], tf.int64),
        "object_attributes": tf.io.FixedLenFeature([m * 4], tf.int64),
        "boxes": tf.io.FixedLenFeature([m * 4], tf.float32),
        "scene_graph": tf.io.FixedLenFeature([], tf.string),
        **self.graph_feature_spec(),
    }

  def graph_feature_spec(self):
    import tensorflow as tf
    k, l = self.captions_per_image, self.text_len
    spec = {}
    if self.negatives:
      spec["neg_text_ids"] = tf.io.FixedLenFeature([k * l], tf.int64)
      spec["neg_valid"] = tf.io.FixedLenFeature([k], tf.int64)
    if self.max_triples:
      t, s = self.max_triples, self.triple_tokens
      spec["triple_ids"] = tf.io.FixedLenFeature([k * t * 3 * s], tf.int64)
      spec["triple_valid"] = tf.io.FixedLenFeature([k * t], tf.int64)
    if self.mosaic_slots:
      spec["mosaic_ids"] = tf.io.FixedLenFeature([k * self.mosaic_slots * l], tf.int64)
      spec["mosaic_valid"] = tf.io.FixedLenFeature([k * self.mosaic_slots], tf.int64)
    if self.max_phrases:
      spec["phrase_spans"] = tf.io.FixedLenFeature([k * self.max_phrases * 2], tf.int64)
    return spec


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
      else:
        feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=arr.tolist()))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def shard_name(split: str, shard: int, num_shards: int) -> str:
  return f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"


def write_manifest(directory: str, manifest: dict) -> None:
  atomic_write(os.path.join(directory, MANIFEST), json.dumps(
      {"format_version": FORMAT_VERSION, **manifest}, indent=1, sort_keys=True))


def read_manifest(dataset_dir: str) -> dict:
  path = os.path.join(dataset_dir, MANIFEST)
  if not os.path.exists(path):
    raise DataError(f"{dataset_dir}: no {MANIFEST}; the dataset is missing or was only "
                    "half written. Run `python -m vlkg.tools.prepare --config ...`.")
  try:
    with open(path) as f:
      manifest = json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: malformed JSON ({e})") from e
  for key in ("format_version", "splits", "layout", "tokenizer"):
    if key not in manifest:
      raise DataError(f"{path}: missing field {key!r}")
  if manifest["format_version"] != FORMAT_VERSION:
    raise DataError(f"{path}: format_version {manifest['format_version']} != "
                    f"{FORMAT_VERSION}; prepare the dataset again")
  return manifest


def layout_of(manifest: dict) -> Layout:
  return Layout(**manifest["layout"])


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
    if not os.path.exists(path):
      raise DataError(f"{path}: shard listed in the manifest is missing")
    size = os.path.getsize(path)
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


def mosaic_slots(graph_cfg: dict) -> int:
  """MosaiCLIP's text slots per caption besides the caption: max_pos + max_neg + 1
  (the whole-caption negative); 0 for a method that reads none."""
  if "max_pos" not in graph_cfg:
    return 0
  return graph_cfg["max_pos"] + graph_cfg["max_neg"] + 1


def layout_for(image_size: int, captions_per_image: int, text_len: int,
               max_objects: int, graph_cfg: dict | None) -> Layout:
  """The layout of a dataset whose method reads the graph fields of ``graph_cfg``
  (``vlkg.data.prepare.graph_config``; None or {} for none)."""
  graph_cfg = graph_cfg or {}
  return Layout(image_size, captions_per_image, text_len, max_objects,
                negatives=bool(graph_cfg.get("negatives")),
                max_triples=graph_cfg.get("max_triples", 0),
                triple_tokens=graph_cfg.get("triple_tokens", 0),
                mosaic_slots=mosaic_slots(graph_cfg),
                max_phrases=graph_cfg.get("max_phrases", 0))


def negative_kinds(graph_cfg: dict | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(the paper's negative kinds, the fallbacks tried when none of those exists)."""
  graph_cfg = graph_cfg or {}
  return (tuple(graph_cfg.get("negatives") or ()),
          tuple(graph_cfg.get("fallback_negatives") or ()))


def mosaic_config(graph_cfg: dict | None) -> tuple:
  """MosaiCLIP's (max_pos, max_neg, p1); Nones for a method that reads no mosaic."""
  graph_cfg = graph_cfg or {}
  return (graph_cfg.get("max_pos"), graph_cfg.get("max_neg"), graph_cfg.get("p1"))


@dataclasses.dataclass(frozen=True)
class GraphText:
  """How a dataset says a scene graph in words, for its negatives and sub-captions.

  Attributes:
    vocab: ``vlkg.graphs.negatives.Vocabulary``: synonyms, converses and the words
      that replacements draw from.
    realise: (graph, rng) -> text; the world's own realiser on the world, the
      template realiser of ``vocab`` on real captions.
    reject: graphs a training text must never show (the world's held-out pairs on
      its training split), or None.
  """
  vocab: Any
  realise: Callable[[Any, np.random.Generator], str]
  reject: Callable[[Any], bool] | None = None


def graph_fields(graphs, layout: Layout, tokenizer, stats, *, kinds, text: GraphText,
                 rng: np.random.Generator) -> dict:
  """Each caption's scene graph as triples, and one hard negative per caption.

  Negatives are made in graph space (PAPERS.md §1: attribute swaps, relation swaps)
  by ``vlkg.graphs.negatives`` and said by ``text.realise``; ``kinds`` is
  (the paper's kinds, fallbacks), the fallbacks tried only when no kind of the first
  group exists. A caption without any negative gets a blank one with validity 0,
  counted in ``stats["captions_without_negative"]``.
  """
  from vlkg.graphs import negatives as neg_lib
  from vlkg.graphs import tensorize
  out = {}
  if layout.max_triples:
    ids, mask = tensorize.triple_arrays(
        graphs, tokenizer, tensorize.GraphShape(layout.max_triples, layout.triple_tokens),
        stats)
    out.update(triple_ids=ids, triple_valid=mask.astype(np.int64))
  if layout.negatives:
    neg_texts, valid = [], []
    for graph in graphs:
      negative = None
      for group in kinds:  # the paper's kinds first, then the fallbacks
        negative = negative or (group and neg_lib.make_negative(
            graph, group, rng, text.vocab, reject=text.reject))
      if negative is None:
        stats["captions_without_negative"] += 1
        neg_texts.append("")
        valid.append(0)
      else:
        stats[f"negatives_{negative.kind}"] += 1
        neg_texts.append(text.realise(negative.graph, rng))
        valid.append(1)
    out.update(neg_text_ids=tokenizer.encode(neg_texts), neg_valid=np.array(valid))
  return out


def mosaic_fields(graphs, layout: Layout, mosaic_cfg, tokenizer, stats, *,
                  text: GraphText, rng: np.random.Generator) -> dict:
  """MosaiCLIP's texts for each caption (PAPERS.md §3), in the slot layout of
  ``vlkg.methods.mosaiclip_loss.slot_layout`` without the caption itself:
  sub-captions, sub-graph negatives, the whole-caption negative; empty slots are
  blank with validity 0.
  """
  from vlkg.graphs import decompose
  max_pos, max_neg, p1 = mosaic_cfg
  ids, valid = [], []
  for graph in graphs:
    ex = decompose.build_example(
        graph, rng, vocab=text.vocab, realise_fn=text.realise, max_pos=max_pos,
        max_neg=max_neg, p1=p1, reject=text.reject)
    slots = ([*ex.positives, *[""] * (max_pos - len(ex.positives))] +
             [*ex.negatives, *[""] * (max_neg - len(ex.negatives))] +
             [ex.whole_negative or ""])
    flags = ([1] * len(ex.positives) + [0] * (max_pos - len(ex.positives)) +
             [1] * len(ex.negatives) + [0] * (max_neg - len(ex.negatives)) +
             [int(ex.whole_negative is not None)])
    stats["mosaic_positives"] += len(ex.positives)
    stats["mosaic_negatives"] += len(ex.negatives)
    stats["mosaic_whole_negatives"] += int(ex.whole_negative is not None)
    for category in ex.categories:
      stats[f"mosaic_negatives_{category}"] += 1
    ids.append(tokenizer.encode(slots))
    valid.append(flags)
  return {"mosaic_ids": np.stack(ids), "mosaic_valid": np.array(valid, np.int64)}


def build_atomically(final_dir: str, build: Callable[[str], dict]) -> dict:
  """Runs ``build(tmp)`` into ``final_dir + '.partial-<pid>'``, then renames it into
  place: a directory under its final name is always complete."""
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


def map_shards(write_shard, tasks: list, workers: int) -> list:
  """``[write_shard(t) for t in tasks]``, over up to ``workers`` spawned processes
  (spawn, not fork: TensorFlow's threads do not survive a fork)."""
  workers = max(1, min(workers, len(tasks)))
  if workers == 1:
    return [write_shard(t) for t in tasks]
  import multiprocessing
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    return pool.map(write_shard, tasks, chunksize=1)
