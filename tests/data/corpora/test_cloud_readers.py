"""The real-data readers on a non-local file system (TensorFlow's in-memory
``ram://``, as a ``gs://`` bucket would be read): corpora and their images, a
prepare from them, knowledge graphs, the triplet table and CLIP checkpoints."""

from __future__ import annotations

import gzip
import os
import uuid

import numpy as np
import pytest
import safetensors.numpy

import corpus_fixtures as fx
from configs import clip
from vlkg import files
from vlkg.convert import readers
from vlkg.data import corpora, kg_table, prepare, records
from vlkg.data.corpora import build, captions, coco
from vlkg.graphs import kg


@pytest.fixture
def ram():
  root = f"ram://vlkg-readers-{uuid.uuid4().hex[:8]}"
  yield root
  files.rmtree(root, ignore_errors=True)


def _upload(local_root: str, url: str) -> None:
  files.copy_tree(local_root, url)
  assert files.exists(url)


def test_coco_and_its_images_read_from_a_url(tmp_path, ram):
  local = str(tmp_path / "coco")
  fx.coco(local, n_train=4, n_val=2)
  _upload(local, ram)
  ann = f"{ram}/annotations/captions_train2017.json"
  read = coco.read(corpora.Options(path=ann)).splits
  local_read = coco.read(corpora.Options(
      path=os.path.join(local, "annotations", "captions_train2017.json"))).splits
  assert [i.captions for i in read["train"]] == [i.captions for i in local_read["train"]]
  first = read["train"][0]
  assert first.image.startswith(ram)
  pixels = build.load_image(first, 32)
  assert pixels.shape == (32, 32, 3)
  np.testing.assert_array_equal(pixels, build.load_image(local_read["train"][0], 32))


def test_captions_file_on_a_url_prepares_the_same_records(tmp_path, ram):
  local = fx.captions_jsonl(str(tmp_path / "j"), n=6)
  _upload(os.path.dirname(local), ram)
  url = f"{ram}/{os.path.basename(local)}"
  assert captions.read(corpora.Options(path=url, val_size=2)).splits["val"][0].captions \
      == captions.read(corpora.Options(path=local, val_size=2)).splits["val"][0].captions
  smoke = ("smoke,input.data='captions',input.path='{}',data_dir='{}',"
           "input.val_size=2,world.workers=1")
  manifests = [records.read_manifest(prepare.ensure_prepared(
      clip.get_config(smoke.format(p, tmp_path / d)))) for p, d in ((url, "u"), (local, "l"))]
  assert manifests[0]["splits"] == manifests[1]["splits"]


def test_knowledge_graphs_read_from_a_url(ram):
  files.makedirs(ram)
  with files.open(f"{ram}/kg.tsv", "w") as f:
    f.write("red\tis a\tcolor\nsquare\thas\tfour corners\t0.5\n")
  assert kg.triples(kg.read(f"{ram}/kg.tsv", "tsv")) == [
      ("red", "is a", "color"), ("square", "has", "four corners")]
  line = ("/a/[/r/IsA/,/c/en/ice_cream/n/,/c/en/dessert/]\t/r/IsA\t/c/en/ice_cream/n"
          "\t/c/en/dessert\t{\"weight\": 2.0}\n")
  with files.open(f"{ram}/assertions.csv.gz", "wb") as f:
    f.write(gzip.compress(line.encode()))
  graph = kg.read(f"{ram}/assertions.csv.gz", "conceptnet")
  assert kg.triples(graph) == [("ice cream", "IsA", "dessert")]
  assert graph["ice cream"]["dessert"]["IsA"]["weight"] == 2.0


def test_triplet_table_reads_from_a_url(tmp_path, ram):
  # The world's table, prepared locally and copied up as a dataset on a bucket is.
  table = kg_table.Builder(image_size=8)
  table.fact(table.text("red"), "is a", table.text("color"))
  table.fact(table.image(np.zeros((8, 8, 3), np.uint8), "img"), "is", table.text("red"))
  built = table.finish(seed=0, heldout_fraction=0.0, max_neighbours=2)
  kg_table.write(str(tmp_path), built)
  files.makedirs(ram)
  files.copyfile(str(tmp_path / kg_table.TABLE), f"{ram}/{kg_table.TABLE}")
  back = kg_table.read(ram)
  np.testing.assert_array_equal(back.images, built.images)
  assert back.entity_text.tolist() == built.entity_text.tolist()


def test_a_checkpoint_reads_from_a_url(tmp_path, ram):
  weights = {"visual.proj": np.arange(6, dtype=np.float32).reshape(2, 3)}
  path = str(tmp_path / "model.safetensors")
  safetensors.numpy.save_file(weights, path)
  files.makedirs(ram)
  files.copyfile(path, f"{ram}/model.safetensors")
  got = readers.read_checkpoint(f"{ram}/model.safetensors")
  np.testing.assert_array_equal(got["visual.proj"], weights["visual.proj"])
  with pytest.raises(FileNotFoundError, match="checkpoint not found"):
    readers.read_checkpoint(f"{ram}/missing.safetensors")
