"""Prepare and the tf.data pipeline on a tiny world: determinism, resume, host slices,
eval padding, bad shards, interrupted prepares, and the real benchmark formats."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import clip
from vlkg.data import input_pipeline, prepare, records
from vlkg.data.benchmarks import aro, sugarcrepe
from vlkg.data.world import suites

TINY = ("smoke,world.num_train=90,world.num_val=24,world.num_test=24,"
        "world.num_test_comp=24,world.num_shards=3,world.workers=1")


def tiny_config(data_dir, extra=""):
  return clip.get_config(TINY + extra + f",data_dir='{data_dir}'")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  return prepare.ensure_prepared(tiny_config(root))


def batches(it, n):
  return [next(it) for _ in range(n)]


def test_same_seed_gives_the_same_bytes(dataset, tmp_path):
  again = prepare.ensure_prepared(tiny_config(tmp_path))
  assert os.path.basename(again) == os.path.basename(dataset)
  for name in sorted(os.listdir(dataset)):
    path = os.path.join(dataset, name)
    if os.path.isfile(path) and name != "world.json":  # world.json holds a timing
      with open(path, "rb") as f, open(os.path.join(again, name), "rb") as g:
        assert f.read() == g.read(), name


def test_train_batches_have_the_layout_and_are_seeded(dataset):
  it = input_pipeline.train_iterator(dataset, batch_size=16, seed=3, shuffle_buffer=64)
  b = next(it)
  assert b["image"].shape == (16, 64, 64, 3) and b["image"].dtype == np.uint8
  assert b["text"].shape == (16, 32) and b["text"].dtype == np.int32
  assert (b["text"][:, 0] != 0).all()  # every caption has a first token
  assert (b["text"] == 3).sum(1).min() == 1  # exactly one EOS per caption
  same = input_pipeline.train_iterator(dataset, batch_size=16, seed=3, shuffle_buffer=64)
  other = input_pipeline.train_iterator(dataset, batch_size=16, seed=4, shuffle_buffer=64)
  b2, b3 = next(same), next(other)
  np.testing.assert_array_equal(b["image"], b2["image"])
  assert not np.array_equal(b["index"], b3["index"])


def test_one_epoch_visits_every_example_once(dataset):
  it = input_pipeline.train_iterator(dataset, batch_size=10, seed=0, shuffle_buffer=64)
  seen = np.concatenate([b["index"] for b in batches(it, 9)])
  assert sorted(seen) == list(range(90))


def test_resume_at_a_step_continues_the_same_stream(dataset):
  kw = dict(batch_size=16, seed=1, shuffle_buffer=64)
  full = batches(input_pipeline.train_iterator(dataset, **kw), 12)  # crosses 2 epochs
  resumed = batches(input_pipeline.train_iterator(dataset, start_step=7, **kw), 5)
  for a, b in zip(full[7:], resumed):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["text"], b["text"])
    np.testing.assert_array_equal(a["image"], b["image"])


def test_a_train_fraction_reads_a_fixed_subset_every_epoch(dataset):
  """input.train_fraction: the first ceil(f * n) records of each of the 3 shards
  of 30 images (90 in all), in every epoch."""
  it = input_pipeline.train_iterator(dataset, batch_size=3, seed=0, shuffle_buffer=64,
                                     fraction=0.1)
  first, second = ([b["index"] for b in batches(it, 3)] for _ in range(2))
  assert sorted(np.concatenate(first)) == sorted(np.concatenate(second))
  assert len(set(np.concatenate(first))) == 9
  full = [b["index"] for b in batches(input_pipeline.train_iterator(
      dataset, batch_size=10, seed=0, shuffle_buffer=64), 9)]
  assert set(np.concatenate(first)) < set(np.concatenate(full))
  with pytest.raises(ValueError, match="train_fraction"):
    next(input_pipeline.train_iterator(dataset, batch_size=3, seed=0, fraction=0.0))


@pytest.fixture(scope="module")
def plain_dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("plain_data")
  return prepare.ensure_prepared(tiny_config(root, ",world.num_plain=40"))


def test_plain_split_is_read_like_train_and_has_one_object_per_scene(plain_dataset):
  # Its captions come from build.scene_and_captions (tested in test_world.py).
  manifest = records.read_manifest(plain_dataset)
  assert manifest["splits"]["plain"]["num_examples"] == 40
  assert manifest["splits"]["train"]["num_examples"] == 90
  it = input_pipeline.train_iterator(plain_dataset, batch_size=8, seed=0,
                                     shuffle_buffer=8, split="plain",
                                     fields=("image", "text", "objects"))
  seen = np.concatenate([next(it)["num_objects"] for _ in range(5)])
  assert len(seen) == 40 and (seen == 1).all()


def test_staged_iterator_reads_stages_in_turn_and_resumes_anywhere(plain_dataset):
  kw = dict(batch_size=8, seed=2, shuffle_buffer=64, fields=("image", "text", "objects"))
  stages = [("plain", 6), ("train", None)]  # 6 steps of 8 cross the 40 plain scenes
  full = batches(input_pipeline.staged_train_iterator(plain_dataset, stages=stages,
                                                      **kw), 10)
  assert all((b["num_objects"] == 1).all() for b in full[:6])
  plain_only = batches(input_pipeline.train_iterator(plain_dataset, split="plain", **kw), 6)
  train_only = batches(input_pipeline.train_iterator(plain_dataset, **kw), 4)
  for a, b in zip(full, plain_only + train_only):
    np.testing.assert_array_equal(a["index"], b["index"])
  for start in (3, 6, 8):
    resumed = batches(input_pipeline.staged_train_iterator(
        plain_dataset, stages=stages, start_step=start, **kw), 10 - start)
    for a, b in zip(full[start:], resumed):
      np.testing.assert_array_equal(a["index"], b["index"])
      np.testing.assert_array_equal(a["image"], b["image"])
  with pytest.raises(ValueError, match="last stage"):
    next(input_pipeline.staged_train_iterator(plain_dataset, stages=[("plain", 2)], **kw))


def test_review_reads_the_review_split_every_so_many_steps_and_resumes(plain_dataset):
  kw = dict(batch_size=8, seed=2, shuffle_buffer=64, fields=("image", "text", "objects"))
  stages, review = [("plain", 2), ("train", None)], ("plain", 3)
  full = batches(input_pipeline.staged_train_iterator(plain_dataset, stages=stages,
                                                      review=review, **kw), 11)
  # Steps 0-1 are the plain stage; of the last stage's steps (2, 3, ...), its
  # 3rd, 6th and 9th (global 4, 7, 10) read the plain batches 2, 3, 4 and the others
  # the train batches 0, 1, ...
  plain_only = batches(input_pipeline.train_iterator(plain_dataset, split="plain", **kw), 5)
  train_only = batches(input_pipeline.train_iterator(plain_dataset, **kw), 6)
  expected = plain_only[:2] + [train_only[0], train_only[1], plain_only[2],
                               train_only[2], train_only[3], plain_only[3],
                               train_only[4], train_only[5], plain_only[4]]
  for a, b in zip(full, expected, strict=True):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["num_objects"], b["num_objects"])
  for start in (1, 2, 4, 5, 9):
    resumed = batches(input_pipeline.staged_train_iterator(
        plain_dataset, stages=stages, review=review, start_step=start, **kw), 11 - start)
    for a, b in zip(full[start:], resumed, strict=True):
      np.testing.assert_array_equal(a["index"], b["index"])
      np.testing.assert_array_equal(a["image"], b["image"])


def test_hosts_read_disjoint_slices(dataset):
  seen = []
  for host in range(3):
    it = input_pipeline.train_iterator(dataset, batch_size=15, seed=0, shuffle_buffer=64,
                                       process_index=host, process_count=3)
    seen.append(set(np.concatenate([b["index"] for b in batches(it, 6)])))
  assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
  assert set.union(*seen) == set(range(90))


def test_eval_iterator_is_padded_masked_and_complete(dataset):
  out = list(input_pipeline.eval_iterator(dataset, "test", batch_size=10,
                                          fields=("image",)))
  assert len(out) == 3 and all(b["image"].shape[0] == 10 for b in out)
  mask = np.concatenate([b["_mask"] for b in out])
  assert mask.sum() == 24 and not mask[24:].any()
  index = np.concatenate([b["index"] for b in out])[mask]
  assert sorted(index) == list(range(24))
  assert out[0]["texts"].shape == (10, 3, 32)
  # Two hosts see the same number of batches and together every example once.
  parts = [list(input_pipeline.eval_iterator(dataset, "test", batch_size=10,
                                             process_index=h, process_count=2))
           for h in range(2)]
  assert len(parts[0]) == len(parts[1])
  got = [i for p in parts for b in p for i in b["index"][b["_mask"]]]
  assert sorted(got) == list(range(24))


@pytest.mark.devices(8)
def test_batches_become_global_arrays_on_8_devices(dataset):
  assert jax.device_count() == 8
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  mesh = Mesh(np.array(jax.devices()), ("data",))
  b = next(input_pipeline.train_iterator(dataset, batch_size=16, seed=0, shuffle_buffer=32))
  arr = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), b["text"])
  assert arr.shape == (16, 32) and len(arr.addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(arr), b["text"])
  one = Mesh(np.array(jax.devices()[:1]), ("data",))
  arr1 = jax.make_array_from_process_local_data(NamedSharding(one, P("data")), b["text"])
  np.testing.assert_array_equal(np.asarray(arr1), np.asarray(arr))


def _copy(dataset, tmp_path):
  dst = tmp_path / "copy"
  shutil.copytree(dataset, dst)
  return str(dst)


def test_truncated_shard_is_named_before_reading(dataset, tmp_path):
  d = _copy(dataset, tmp_path)
  path = os.path.join(d, records.shard_name("train", 1, 3))
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(records.DataError, match="train-00001-of-00003.*truncated"):
    input_pipeline.train_iterator(d, batch_size=8, seed=0)


def test_corrupt_bytes_are_reported_with_the_file(dataset, tmp_path):
  d = _copy(dataset, tmp_path)
  path = os.path.join(d, records.shard_name("train", 2, 3))
  with open(path, "r+b") as f:
    f.seek(5000)
    f.write(b"\xff" * 64)  # same size, broken CRC
  it = input_pipeline.train_iterator(d, batch_size=8, seed=0, shuffle_buffer=8)
  with pytest.raises(records.DataError, match="train-00002-of-00003"):
    batches(it, 20)


def test_record_with_a_missing_field_names_file_and_field(dataset, tmp_path):
  import tensorflow as tf
  d = _copy(dataset, tmp_path)
  path = os.path.join(d, records.shard_name("train", 0, 3))
  raw = [r.numpy() for r in tf.data.TFRecordDataset(path)]
  ex = tf.train.Example.FromString(raw[3])
  del ex.features.feature["text_ids"]
  raw[3] = ex.SerializeToString()
  with tf.io.TFRecordWriter(path) as w:
    for r in raw:
      w.write(r)
  manifest = json.load(open(os.path.join(d, records.MANIFEST)))
  manifest["splits"]["train"]["files"][0]["bytes"] = os.path.getsize(path)
  records.write_manifest(d, {k: v for k, v in manifest.items() if k != "format_version"})
  it = input_pipeline.train_iterator(d, batch_size=30, seed=0, shuffle_buffer=8)
  with pytest.raises(records.DataError, match=r"train-00000-of-00003.*record 3.*'text_ids'"):
    batches(it, 3)


def test_half_written_dataset_is_rebuilt_not_read(dataset, tmp_path):
  config = tiny_config(tmp_path)
  d = prepare.dataset_dir(config)
  shutil.copytree(dataset, d)
  os.remove(os.path.join(d, records.MANIFEST))
  with pytest.raises(records.DataError, match="no manifest.json"):
    input_pipeline.train_iterator(d, batch_size=8, seed=0)
  assert prepare.ensure_prepared(config) == d
  assert os.path.exists(os.path.join(d, records.MANIFEST))


def test_impossible_world_fails_before_any_work(tmp_path):
  from vlkg.data.world import scene
  config = tiny_config(tmp_path, ",model.image_size=32,world.max_objects=7")
  with pytest.raises(scene.WorldSpecError, match="world.max_objects"):
    prepare.ensure_prepared(config)
  assert not [p for p in os.listdir(tmp_path) if p.startswith("world-")]


def test_suites_are_written_in_the_real_formats(dataset):
  info = json.load(open(os.path.join(dataset, "world.json")))
  for split in ("val", "test", "test_comp"):
    root = os.path.join(dataset, "benchmarks", split)
    rel = aro.read_aro(os.path.join(root, "relation_swap.json"), "relation")
    att = aro.read_aro(os.path.join(root, "attribute_swap.json"), "attribution")
    assert len(rel) == info["suites"][split]["relation_swap"] > 0
    assert len(att) == info["suites"][split]["attribute_swap"] > 0
    assert all(it.relation_name in ("left of", "right of", "above", "below",
                                    "bigger than", "smaller than") for it in rel)
    assert all(len(it.attributes) == 2 for it in att)
    sc = sugarcrepe.read_sugarcrepe_dir(os.path.join(root, "sugarcrepe"))
    assert set(sc) == {"replace_att", "replace_obj", "replace_rel", "swap_att",
                       "swap_obj", "add_att"}
    kn = sugarcrepe.read_sugarcrepe_file(os.path.join(root, "sugarcrepe", "knowledge.json"))
    assert len(kn) == info["suites"][split]["knowledge"]
    for it in rel[:3] + att[:3]:
      assert os.path.exists(os.path.join(dataset, "benchmarks", it.image_path))
  assert set(info["suites"]["test"]) == set(suites.SUITES)
  assert os.path.getsize(os.path.join(dataset, "knowledge_triples.tsv")) > 0
