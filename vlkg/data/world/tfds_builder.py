"""The world as a TFDS dataset, ``vlkg_world``, read from its prepared shards.

    import tensorflow_datasets as tfds
    from vlkg.data import prepare
    from vlkg.data.world import tfds_builder  # registers "vlkg_world"

    directory = prepare.ensure_prepared(config)  # the prepared world
    train = tfds.load("vlkg_world", data_dir=directory, split="train")

``data_dir`` is a prepared world (``python -m vlkg.tools.prepare``): the builder
reads its records and writes the TFDS version beside them, under
``<directory>/vlkg_world/<version>/``. Each TFDS example is the prepared record,
field by field, in the same order (shuffling is off): the image (PNG, the same
bytes), the captions, their token ids and every field the method's dataset carries
(scene-graph fields included), each with the flat shape of its record feature. So
the TFDS dataset is exactly the prepared records, and it stays so whatever fields
the records gain: the features are derived from the record layout, not listed here.

``config.input.data="tfds:vlkg_world"`` trains from it: ``prepare.ensure_prepared``
builds it (``ensure_built``) and the input pipeline reads its files
(``split_files``). Evaluations keep reading the prepared world's splits and suites,
which are the same examples.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from vlkg import files
from vlkg.data import records

NAME = "vlkg_world"
DATA = f"tfds:{NAME}"  # the value of config.input.data that trains from it


def _feature_spec(directory: str) -> dict:
  """The prepared records' features (name -> tf.io.FixedLenFeature)."""
  return records.layout_of(records.read_manifest(directory)).feature_spec()


def _features(spec: dict, image_size: int) -> tfds.features.FeaturesDict:
  import tensorflow as tf
  out = {}
  for name, feature in spec.items():
    if name == "image":
      out[name] = tfds.features.Image(shape=(image_size, image_size, 3),
                                      encoding_format="png")
    else:
      dtype = {tf.int64: np.int64, tf.float32: np.float32, tf.string: tf.string}[
          feature.dtype]
      out[name] = tfds.features.Tensor(shape=tuple(feature.shape), dtype=dtype)
  return tfds.features.FeaturesDict(out)


class VlkgWorld(tfds.core.GeneratorBasedBuilder):
  """vlkg's synthetic world (scenes, captions, scene-graph fields) for TFDS."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "The prepared world's records, field by field."}

  def _source(self) -> str:
    directory = os.fspath(self.data_dir_root)
    if not files.exists(os.path.join(directory, records.MANIFEST)):
      raise records.DataError(
          f"tfds {NAME}: data_dir={directory} is not a prepared world (no "
          f"{records.MANIFEST}); pass the directory that vlkg.data.prepare."
          "ensure_prepared(config) returns (python -m vlkg.tools.prepare --config ...)")
    return directory

  def _info(self) -> tfds.core.DatasetInfo:
    directory = self._source()
    layout = records.layout_of(records.read_manifest(directory))
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n\n")[0],
        features=_features(_feature_spec(directory), layout.image_size),
        disable_shuffling=True,  # the prepared order, record for record
        homepage="https://github.com/", citation="")

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the records are in data_dir
    directory = self._source()
    manifest = records.read_manifest(directory)
    return {split: self._generate_examples(directory, manifest, split)
            for split in manifest["splits"]}

  def _generate_examples(self, directory, manifest, split):
    import tensorflow as tf
    spec = _feature_spec(directory)
    paths = [f["path"] for f in records.split_files(directory, manifest, split)]
    ds = tf.data.TFRecordDataset(paths).map(
        lambda r: tf.io.parse_single_example(r, spec))
    for i, example in enumerate(ds.as_numpy_iterator()):
      yield i, example


def builder(directory: str) -> VlkgWorld:
  """The TFDS builder over the prepared world in ``directory``."""
  return VlkgWorld(data_dir=directory)


def ensure_built(directory: str) -> str:
  """Builds the TFDS version of the prepared world in ``directory`` if it is not
  there yet (as TFRecord files, which the input pipeline reads); returns its path.

  TFDS writes into a temporary folder that it renames when done, so an interrupted
  build is redone, never read.
  """
  b = builder(directory)
  if not b.is_prepared():
    # As many shards as the prepared training split, so that every host of a
    # multi-host run still reads its own (input_pipeline.host_shards).
    train = records.read_manifest(directory)["splits"]["train"]["files"]
    b.download_and_prepare(
        file_format="tfrecord",
        download_dir=os.path.join(directory, NAME, "downloads"),
        download_config=tfds.download.DownloadConfig(num_shards=len(train)))
  return os.fspath(b.data_dir)


def split_files(directory: str, split: str) -> list[dict]:
  """The TFDS files of ``split`` as ``records.split_files`` gives the prepared
  shards: ``{"path", "num_records"}`` each, in order."""
  b = builder(directory)
  if not b.is_prepared():
    raise records.DataError(f"{directory}: no TFDS {NAME} dataset; prepare it with "
                            "vlkg.data.prepare.ensure_prepared (input.data='tfds:...')")
  if split not in b.info.splits:
    raise records.DataError(f"{b.data_dir}: no split {split!r}; have "
                            f"{sorted(b.info.splits)}")
  info = b.info.splits[split]
  return [{"path": os.fspath(path), "num_records": n}
          for path, n in zip(info.filepaths, info.shard_lengths)]
