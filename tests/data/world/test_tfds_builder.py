"""The world as a TFDS dataset: ``tfds.load("vlkg_world")`` gives the prepared records,
and ``input.data="tfds:vlkg_world"`` trains from it."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from configs import clip
from vlkg import train
from vlkg.data import input_pipeline, prepare, records
from vlkg.data.world import tfds_builder

TINY = ("smoke,world.num_train=48,world.num_val=8,world.num_test=8,world.num_test_comp=8,"
        "world.num_shards=2,world.workers=1,input.data='tfds:vlkg_world'")


def tiny_config(root, extra=""):
  return clip.get_config(TINY + f",data_dir='{root}'" + extra)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  return root, prepare.ensure_prepared(tiny_config(root))


def _records(directory, split):
  """The prepared records of ``split``, parsed, in file order."""
  manifest = records.read_manifest(directory)
  spec = records.layout_of(manifest).feature_spec()
  paths = [f["path"] for f in records.split_files(directory, manifest, split)]
  return list(tf.data.TFRecordDataset(paths).map(
      lambda r: tf.io.parse_single_example(r, spec)).as_numpy_iterator())


def test_tfds_load_gives_the_prepared_records(world):
  _, directory = world
  # The same directory as input.data="world": the TFDS dataset sits inside it.
  assert os.path.basename(directory).startswith("world-")
  assert os.path.isdir(os.path.join(directory, "vlkg_world", "1.0.0"))
  for split in ("train", "val", "test", "test_comp"):
    want = _records(directory, split)
    got = list(tfds.load("vlkg_world", data_dir=directory, split=split).as_numpy_iterator())
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):  # the same order, field for field
      assert sorted(a) == sorted(b)
      np.testing.assert_array_equal(a["image"], np.asarray(Image.open(io.BytesIO(b["image"]))))
      assert a["image"].shape == (64, 64, 3) and a["image"].dtype == np.uint8
      for key in sorted(set(b) - {"image"}):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # CLIP's fields: a caption's text and its token ids.
    assert [t.decode() for t in got[0]["captions"]] == [t.decode() for t in want[0]["captions"]]
    assert got[0]["text_ids"].shape == (3 * 32,) and got[0]["text_ids"].any()
    assert json.loads(got[0]["scene_graph"])["objects"]


def test_not_a_prepared_world_is_named(tmp_path):
  with pytest.raises(records.DataError, match=f"data_dir={tmp_path} is not a prepared world"):
    tfds.load("vlkg_world", data_dir=str(tmp_path), split="train")


def test_the_input_pipeline_reads_the_same_stream_from_tfds(world):
  _, directory = world
  files = tfds_builder.split_files(directory, "train")
  manifest = records.read_manifest(directory)
  prepared = records.split_files(directory, manifest, "train")
  # As many shards as prepared, with the same examples each: the same training stream.
  assert [f["num_records"] for f in files] == [f["num_records"] for f in prepared]
  assert input_pipeline.source_files(directory, manifest, "train", "world") == prepared
  with pytest.raises(ValueError, match="tfds:vlkg_world"):
    input_pipeline.source_files(directory, manifest, "train", "tfds:coco")
  kw = dict(batch_size=8, seed=3, start_step=2, shuffle_buffer=16, threads=1)
  a = input_pipeline.train_iterator(directory, data="tfds:vlkg_world", **kw)
  b = input_pipeline.train_iterator(directory, data="world", **kw)
  for _ in range(7):  # across an epoch boundary (48 / 8 = 6 steps an epoch)
    x, y = next(a), next(b)
    assert sorted(x) == sorted(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.slow  # ~50 s on 2 cores; the stream it trains on is the test above's
def test_training_from_tfds(world, tmp_path):
  root, _ = world
  workdir = str(tmp_path / "run")
  last = train.train_and_evaluate(
      tiny_config(root, ",total_steps=2,log_every=1,evals={},input.batch_size=8"), workdir)
  assert np.isfinite(last["loss"])
  assert json.load(open(os.path.join(workdir, "config.json")))["input"]["data"] == \
      "tfds:vlkg_world"
  assert os.path.exists(os.path.join(workdir, "params.npz"))
