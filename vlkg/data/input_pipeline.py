"""The tf.data input pipeline over prebuilt shards.

Training: each host reads its own slice of the shards (``process_index`` /
``process_count``), then shuffle (seeded per epoch), repeat, parse, batch with
``drop_remainder`` and prefetch. The order of examples is a pure function of
(seed, epoch), so a run resumed at step ``s`` starts at the right epoch and skips
the rest of the way through it *before* parsing and decoding: the skipped records
are read as bytes but never decoded, and no earlier epoch is replayed.

Evaluation: a separate, non-repeating iterator, padded to a fixed number of
full batches on every host, with a boolean ``_mask`` that marks real examples.

Batch keys: ``image``, ``text`` (training: the picked caption) or ``texts``
(evaluation: all of them), and each per-caption feature of the dataset's layout (the
method's fields, ``vlkg.graphs.fields``) under its own name, of the picked caption in
training and of every caption ``[K, ...]`` in evaluation; bool features are bool.

Batches are dicts of host-local numpy arrays; the trainer turns them into global
``jax.Array``s (``vlkg.sharding``).
"""

from __future__ import annotations

import itertools
import os
from typing import Iterator, Sequence

import numpy as np

from vlkg.data import records

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TRAIN_FIELDS = ("image", "text")
_EPOCH_SEED_STRIDE = 1_000_003


def _tf():
  import tensorflow as tf
  # tf.data must not take the accelerator from JAX.
  tf.config.set_visible_devices([], "GPU")
  return tf


def host_shards(files: list[dict], process_index: int, process_count: int,
                dataset_dir: str, split: str) -> list[dict]:
  if len(files) < process_count:
    raise records.DataError(
        f"{dataset_dir}: split {split!r} has {len(files)} shards for {process_count} "
        "hosts; prepare with more shards (world.num_shards)")
  return files[process_index::process_count]


def decoder(image_format: str):
  """The decoder of a layout's ``image_format`` (``records.Layout``) to uint8
  ``[H, W, 3]``. JPEG uses the accurate integer IDCT, which is libjpeg's default
  and PIL's, so that records decode here as they do in PIL."""
  tf = _tf()
  if image_format == "jpeg":
    return lambda data: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
  if image_format == "png":
    return lambda data: tf.io.decode_png(data, channels=3)
  raise records.DataError(f"no decoder for image_format {image_format!r}")


def _parse_fn(layout: records.Layout, fields: Sequence[str], seed: int, caption: str):
  """Parses one serialized record; picks one caption per (epoch, index) if training.

  ``fields`` are the batch keys wanted: ``image``, ``objects`` (the world's per-image
  metadata) and feature names; ``text`` / ``texts`` and ``index`` always come.
  """
  tf = _tf()
  spec = layout.feature_spec()
  k, l = layout.captions_per_image, layout.text_len
  m = layout.max_objects
  features = [f for f in layout.features if f.name in fields]
  decode = decoder(layout.image_format)

  def per_caption(ex, f):
    value = tf.reshape(ex[f.name], [k, *f.shape])
    if f.dtype == "bool":
      return value > 0
    return tf.cast(value, tf.as_dtype(f.dtype))

  def parse(epoch, serialized):
    ex = tf.io.parse_single_example(serialized, spec)
    out = {}
    if "image" in fields:
      image = decode(ex["image"])
      out["image"] = tf.ensure_shape(image, [layout.image_size, layout.image_size, 3])
    ids = tf.cast(tf.reshape(ex["text_ids"], [k, l]), tf.int32)
    if caption == "random":
      pick = tf.random.stateless_uniform(
          [], seed=tf.stack([seed + epoch, ex["index"]]), maxval=k, dtype=tf.int64)
      out["text"] = ids[pick]
      # Every feature of a caption travels with the caption that was picked.
      for f in features:
        out[f.name] = per_caption(ex, f)[pick]
    elif caption == "all":
      out["texts"] = ids
      for f in features:
        out[f.name] = per_caption(ex, f)
    out["index"] = tf.cast(ex["index"], tf.int32)
    if "objects" in fields:
      out["object_attributes"] = tf.cast(tf.reshape(ex["object_attributes"], [m, 4]), tf.int32)
      out["boxes"] = tf.reshape(ex["boxes"], [m, 4])
      out["num_objects"] = tf.cast(ex["num_objects"], tf.int32)
    return out

  return parse


class _Diagnosing:
  """Wraps a numpy iterator: a TF read/parse error becomes a DataError that names the
  shard, the record and the field."""

  def __init__(self, dataset, files: list[str], spec):
    self._it = dataset.as_numpy_iterator()
    self._files, self._spec = files, spec

  def __iter__(self):
    return self

  def __next__(self):
    import tensorflow as tf
    try:
      return next(self._it)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      for path in self._files:
        problem = records.find_bad_record(path, self._spec)
        if problem:
          raise records.DataError(problem) from e
      raise records.DataError(f"input pipeline failed reading {self._files}: {e}") from e


def source_files(dataset_dir: str, manifest: dict, split: str, data: str) -> list[dict]:
  """The files a split is read from: the prepared shards, or for
  ``data="tfds:vlkg_world"`` the files of the TFDS dataset built from them
  (``vlkg.data.world.tfds_builder``), whose examples are the same records with the
  same features, so everything after this reads them alike."""
  if data.startswith("tfds:"):
    from vlkg.data.world import tfds_builder
    if data != tfds_builder.DATA:
      raise ValueError(f"config.input.data={data!r}: the TFDS source is "
                       f"{tfds_builder.DATA!r}")
    return tfds_builder.split_files(dataset_dir, split)
  return records.split_files(dataset_dir, manifest, split)


def staged_train_iterator(dataset_dir: str, *, stages: Sequence[tuple[str, int | None]],
                          start_step: int = 0, review: tuple[str, int] | None = None,
                          **kwargs) -> Iterator[dict[str, np.ndarray]]:
  """Training batches that read the splits of ``stages`` in turn.

  ``stages`` is ``[(split, steps), ..., (split, None)]``: stage k reads ``split`` for
  ``steps`` steps, the last one forever. Each stage has its own position
  (``train_iterator(start_step=...)``), so a run resumed at any step reads exactly
  the batches it would have read, and only the current stage's pipeline exists.
  ``review=(split, every)`` makes every ``every``-th step of the last stage read
  ``split`` instead, continuing where its earlier stages left it (`_reviewing`).
  ``kwargs`` go to ``train_iterator``.
  """
  if not stages or stages[-1][1] is not None:
    raise ValueError(f"stages={stages!r}: the last stage must run forever (steps None)")
  done = 0
  for split, steps in stages:
    if steps is not None and start_step >= done + steps:
      done += steps
      continue
    local_start = max(0, start_step - done)
    if steps is None:
      if review is None:
        yield from train_iterator(dataset_dir, split=split, start_step=local_start,
                                  **kwargs)
        return
      read_before = sum(n for name, n in stages[:-1] if name == review[0])
      yield from _reviewing(dataset_dir, split, review, local_start, read_before, kwargs)
      return
    batches = train_iterator(dataset_dir, split=split, start_step=local_start, **kwargs)
    for _ in range(steps - local_start):
      yield next(batches)
    del batches  # the next stage's pipeline replaces this one
    done += steps


def _reviewing(dataset_dir: str, split: str, review: tuple[str, int], start: int,
               read_before: int, kwargs: dict) -> Iterator[dict[str, np.ndarray]]:
  """The last stage from its step ``start``: step s reads ``review``'s split when
  s % every == every - 1, else ``split``; the review split resumes after the
  ``read_before`` batches its own stages read."""
  review_split, every = review
  if every < 1:
    raise ValueError(f"review={review!r}: every must be >= 1")
  reviewed = start // every  # review steps among the stage's steps before ``start``
  main = train_iterator(dataset_dir, split=split, start_step=start - reviewed, **kwargs)
  extra = train_iterator(dataset_dir, split=review_split,
                         start_step=read_before + reviewed, **kwargs)
  for step in itertools.count(start):
    yield next(extra) if step % every == every - 1 else next(main)


def train_iterator(dataset_dir: str, *, batch_size: int, seed: int,
                   fields: Sequence[str] = TRAIN_FIELDS, start_step: int = 0,
                   shuffle_buffer: int = 10_000, prefetch: int = 2,
                   split: str = "train", threads: int = 0,
                   process_index: int | None = None,
                   process_count: int | None = None,
                   data: str = "", fraction: float = 1.0) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of host-local training batches, starting at ``start_step``.

  ``fraction`` < 1 reads only the first ``ceil(fraction * n)`` records of each
  shard of n (``input.train_fraction``): a fixed subset of the data, the same in
  every epoch and on resume.

  ``batch_size`` is the global batch; each host yields ``batch_size / process_count``.
  ``threads`` bounds tf.data's thread pool (0: one per core). On a small CPU host the
  training step needs the cores more than the pipeline does. ``data`` is
  ``config.input.data``; it matters only for a TFDS source (``source_files``).
  """
  tf = _tf()
  import jax
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if batch_size % process_count:
    raise ValueError(f"input.batch_size={batch_size} is not divisible by the "
                     f"{process_count} hosts")
  local_batch = batch_size // process_count
  manifest = records.read_manifest(dataset_dir)
  layout = records.layout_of(manifest)
  shards = host_shards(source_files(dataset_dir, manifest, split, data),
                       process_index, process_count, dataset_dir, split)
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"input.train_fraction={fraction} must be in (0, 1]")
  paths = [s["path"] for s in shards]
  counts = [max(1, int(np.ceil(fraction * s["num_records"]))) for s in shards]
  n_local = sum(counts)
  if n_local < local_batch:
    raise records.DataError(f"{dataset_dir}: split {split!r} has {n_local} examples on "
                            f"this host, fewer than one batch of {local_batch}")
  position = start_step * local_batch
  start_epoch, offset = divmod(position, n_local)
  host_seed = seed * 7919 + process_index
  threads = threads or os.cpu_count() or 1

  def epoch_records(epoch):
    epoch_seed = host_seed * _EPOCH_SEED_STRIDE + epoch
    files = tf.data.Dataset.from_tensor_slices(
        (paths, np.asarray(counts, np.int64))).shuffle(
            len(paths), seed=epoch_seed, reshuffle_each_iteration=False)
    read = lambda path, count: tf.data.TFRecordDataset(path).take(count)
    ds = files.interleave(read, cycle_length=min(8, len(paths)),
                          block_length=1, num_parallel_calls=min(threads, len(paths)),
                          deterministic=True)
    ds = ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
    return ds.map(lambda r: (epoch, r))

  ds = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_records)
  ds = ds.skip(offset)
  ds = ds.map(_parse_fn(layout, fields, host_seed, "random"),
              num_parallel_calls=threads, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(prefetch)
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = threads
  ds = ds.with_options(options)
  return _Diagnosing(ds, paths, layout.feature_spec())


def eval_iterator(dataset_dir: str, split: str, *, batch_size: int,
                  fields: Sequence[str] = ("image",), process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over ``split`` in file order, every caption of every image.

  Every host yields the same number of full batches (of the global ``batch_size``
  split over hosts); padding examples are zeros with ``_mask`` False.
  """
  tf = _tf()
  import jax
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  local_batch = batch_size // process_count
  manifest = records.read_manifest(dataset_dir)
  layout = records.layout_of(manifest)
  all_shards = records.split_files(dataset_dir, manifest, split)
  per_host = [all_shards[h::process_count] for h in range(process_count)]
  most = max(sum(s["num_records"] for s in shards) for shards in per_host)
  num_batches = -(-most // local_batch)
  paths = [s["path"] for s in per_host[process_index]]
  ds = tf.data.TFRecordDataset(paths).map(lambda r: (tf.constant(0, tf.int64), r))
  ds = ds.map(_parse_fn(layout, fields, 0, "all"), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(local_batch).prefetch(2)
  batches = _Diagnosing(ds, paths, layout.feature_spec())
  template = None
  for _ in range(num_batches):
    batch = next(batches, None)
    if batch is None:
      batch = {k: v[:0] for k, v in template.items()}
    template = batch
    n = len(batch["index"])
    padded = {k: np.concatenate([v, np.zeros((local_batch - n,) + v.shape[1:], v.dtype)])
              for k, v in batch.items()}
    padded["_mask"] = np.arange(local_batch) < n
    yield padded
