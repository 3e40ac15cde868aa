"""Real corpora end to end: tiny files in each real format -> prepare -> records ->
the input pipeline, for CLIP's and Structure-CLIP's fields; Visual Genome's ground
truth graphs; errors that name file, item and field; fingerprints; tokenizers."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

import corpus_fixtures as fx
from configs import clip, structure_clip
from vlkg import evaluators, methods
from vlkg.data import corpora, input_pipeline, prepare, records
from vlkg.data import tokenizer as tok_lib
from vlkg.data.corpora import captions, coco, karpathy, tfds_coco, visual_genome
from vlkg.graphs.scene_graph import SceneGraph

SMOKE = "smoke,world.workers=1,input.batch_size=4,input.val_size=2"


def make_config(module, data, path, data_dir, extra=""):
  return module.get_config(f"{SMOKE},input.data='{data}',input.path='{path}',"
                           f"data_dir='{data_dir}'{extra}")


def options(path, **kw):
  return corpora.Options(path=path, **kw)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("coco"))
  return fx.coco(root, n_train=6, n_val=3, missing=1)


# ------------------------------------------------------------------ end to end


@pytest.mark.parametrize("module", [clip, structure_clip])
def test_coco_prepares_records_every_method_reads(module, coco_dir, tmp_path):
  config = make_config(module, "coco", coco_dir, tmp_path)
  directory = prepare.ensure_prepared(config)
  assert os.path.basename(directory).startswith("coco-")
  manifest = records.read_manifest(directory)
  # The missing image is counted and named, not silently dropped.
  assert manifest["corpus"]["train"]["missing_images"] == 1
  assert manifest["corpus"]["train"]["missing_first"] == ["6"]
  assert manifest["splits"]["train"]["num_examples"] == 5
  assert manifest["splits"]["val"]["num_examples"] == 3
  fields = methods.batch_keys(config)
  batch = next(input_pipeline.train_iterator(directory, batch_size=4, seed=0,
                                             fields=fields))
  assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.uint8
  assert batch["text"].shape == (4, 32)
  if module is structure_clip:
    assert batch["neg_text"].shape == (4, 32) and batch["neg_valid"].shape == (4,)
    assert batch["triples"].shape == (4, 6, 3, 5) and batch["triples_valid"].any()
  tokenizer = tok_lib.from_description(manifest["tokenizer"], base_dir=directory)
  assert set(tokenizer.decode(batch["text"])) <= {c.strip() for c in fx.CAPTIONS}
  # Held-out split: all captions of each image, missing slots are all-pad rows.
  val = next(input_pipeline.eval_iterator(directory, "val", batch_size=4))
  assert val["texts"].shape == (4, 5, 32) and val["_mask"].tolist() == [1, 1, 1, 0]
  real = (val["texts"][:3] != 0).any(-1)
  assert real.sum(1).tolist() == [2, 3, 2]
  # Prepare leaves the config as it was; the evals for the corpus follow from it.
  assert sorted(config.evals) == ["kg", "world"]
  evals, select = evaluators.for_data(config)
  assert evals == {"kg": {"type": "kg"}, "retrieval": {"type": "retrieval", "split": "val"}}
  assert select == ("retrieval/val/image_to_text_R@1" if module is structure_clip else "")


def test_karpathy_splits_and_records(tmp_path, caplog):
  path = fx.karpathy(str(tmp_path / "k"))
  corpus = karpathy.read(options(path))
  assert [i.key for i in corpus.splits["train"]] == ["0", "1", "2", "3"]
  assert [i.key for i in corpus.splits["val"]] == ["4", "5"]
  assert corpus.splits["train"][0].image.endswith("train2014/COCO_train2014_000000000000.jpg")
  test = karpathy.read(options(path, train_split="train", eval_split="test")).splits
  assert len(test["train"]) == 2 and [i.key for i in test["val"]] == ["6"]
  with pytest.raises(ValueError, match="unknown Karpathy split"):
    karpathy.read(options(path, train_split="training"))
  with caplog.at_level(logging.INFO):
    directory = prepare.ensure_prepared(make_config(clip, "karpathy", path, tmp_path / "d"))
  assert records.read_manifest(directory)["splits"]["val"]["num_examples"] == 2
  # One progress line per shard, the last at 100% (4 train + 2 val images).
  progress = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith("prepare karpathy: ")]
  assert progress[-1].startswith("prepare karpathy: 6/6 images (100%), ")
  assert progress[-1].endswith("ETA 0:00:00") and len(progress) >= 2


def test_progress_line_has_rate_and_eta():
  from vlkg.data.corpora import build
  assert build.progress_line("coco", 4000, 118287, 80.0) == (
      "prepare coco: 4000/118287 images (3%), 50.0 images/s, ETA 0:38:06")
  assert build.progress_line("cc", 0, 10, 0.0).endswith("0.0 images/s, ETA ?")


def test_captions_tsv_and_jsonl(tmp_path):
  tsv = fx.captions_tsv(str(tmp_path / "t"), n=8)
  corpus = captions.read(options(tsv, val_size=3)).splits
  assert len(corpus["train"]) == 5 and len(corpus["val"]) == 3  # header skipped
  assert corpus["train"][0].image == str(tmp_path / "t" / "imgs" / "0.png")
  assert corpus["train"][0].captions == (fx.CAPTIONS[0],)
  moved = captions.read(options(tsv, images="/elsewhere", val_size=3)).splits
  assert moved["train"][0].image == "/elsewhere/imgs/0.png"
  # Lines naming the same image are one item with several captions.
  with open(tsv, "a") as f:
    f.write("imgs/0.png\tanother caption\n")
  assert captions.read(options(tsv, val_size=3)).splits["train"][0].captions == (
      fx.CAPTIONS[0], "another caption")
  jsonl = fx.captions_jsonl(str(tmp_path / "j"), n=6)
  directory = prepare.ensure_prepared(make_config(clip, "captions", jsonl, tmp_path / "d"))
  manifest = records.read_manifest(directory)
  assert manifest["splits"]["train"]["num_examples"] == 4
  assert manifest["splits"]["val"]["num_examples"] == 2


def test_visual_genome_graphs_come_from_the_ground_truth(tmp_path):
  root = fx.visual_genome(str(tmp_path / "vg"))
  corpus = visual_genome.read(options(root, val_size=2))
  item = corpus.splits["train"][0]
  assert item.captions[0] == "a man riding a brown horse"
  assert item.graphs[0] == SceneGraph(("man", "horse"), ((1, "brown"),),
                                      ((0, "riding", 1),))
  assert item.graphs[1] == SceneGraph(("dog",), ((0, "small"), (0, "white")), ())
  assert item.graphs[2] is None  # names no annotated object: parsed at build time
  assert item.image_graph.objects == ("man", "horse", "dog")
  assert item.image.endswith(os.path.join("VG_100K_2", "1.jpg"))
  assert {"man", "horse", "dog"} <= set(corpus.vocabulary["objects"])

  config = make_config(structure_clip, "visual_genome", root, tmp_path / "d",
                       ",input.captions_per_image=3")
  directory = prepare.ensure_prepared(config)
  assert json.load(open(os.path.join(directory, "vocabulary.json")))["relations"] == [
      "riding"]
  stats = json.load(open(os.path.join(directory, "corpus.json")))["statistics"]["train"]
  assert stats["graphs_ground_truth"] == 8 and stats["graphs_parsed"] == 4
  manifest = records.read_manifest(directory)
  tokenizer = tok_lib.from_description(manifest["tokenizer"], base_dir=directory)
  import tensorflow as tf
  shard = records.split_files(directory, manifest, "train")[0]["path"]
  example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(shard))).numpy())
  feature = example.features.feature
  graph = SceneGraph.from_json(feature["scene_graph"].bytes_list.value[0].decode())
  assert graph.relations == ((0, "riding", 1),)
  triples = np.array(feature["triples"].int64_list.value).reshape(3, 6, 3, 5)
  valid = np.array(feature["triples_valid"].int64_list.value).reshape(3, 6)
  first = [tuple(tokenizer.decode(triples[0, t])) for t in range(valid[0].sum())]
  assert first == [("horse", "is", "brown"), ("man", "riding", "horse")]


def test_mosaiclip_and_loupe_fields_on_captions(tmp_path):
  from configs import loupe, mosaiclip
  path = fx.captions_jsonl(str(tmp_path / "j"), n=6)
  for module in (mosaiclip, loupe):
    config = make_config(module, "captions", path, tmp_path / "d")
    directory = prepare.ensure_prepared(config)
    batch = next(input_pipeline.train_iterator(directory, batch_size=4, seed=0,
                                               fields=methods.batch_keys(config)))
    if module is mosaiclip:
      slots = config.mosaiclip.max_pos + config.mosaiclip.max_neg + 1
      assert batch["mosaic_texts"].shape == (4, slots, 32) and batch["mosaic_valid"].any()
    else:
      spans = batch["phrase_spans"]
      assert spans.shape == (4, config.loupe.max_phrases, 2)
      assert (spans[:, 0, 1] > spans[:, 0, 0]).all()  # every caption names an object
      tokenizer = tok_lib.from_description(records.read_manifest(directory)["tokenizer"],
                                           base_dir=directory)
      a, b = spans[0, 0]
      first = tokenizer.decode(batch["text"][:1, a:b])[0]
      assert first.split()[0].lower() in ("a", "two") and len(first.split()) >= 2


def test_tfds_example_adapter():
  import io

  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(buf, format="JPEG")
  example = {"image": buf.getvalue(), "image/id": np.int64(42),
             "image/filename": b"COCO_val2014_000000000042.jpg",
             "captions": {"text": np.array([b"a cat. ", b"a dog"], object),
                          "id": np.array([1, 2])}}
  item = tfds_coco.example_item(example)
  assert item.key == "42" and item.captions == ("a cat. ", "a dog")
  assert isinstance(item.image, bytes)
  from vlkg.data.corpora import build
  assert build.load_image(item, 16).shape == (16, 16, 3)
  pixels = tfds_coco.example_item({**example, "image": np.ones((5, 7, 3), np.uint8)})
  assert build.load_image(pixels, 4).shape == (4, 4, 3)
  with pytest.raises(corpora.CorpusError, match="captions/text"):
    tfds_coco.example_item({"image": b"", "captions": {}})


# ---------------------------------------------------------------- bad input


def test_malformed_files_name_file_item_and_field(tmp_path):
  root = str(tmp_path / "c")
  path = fx.coco(root, n_train=2, n_val=1)
  data = json.load(open(path))
  del data["annotations"][1]["caption"]
  json.dump(data, open(path, "w"))
  with pytest.raises(corpora.CorpusError,
                     match=r"captions_train2017.json: annotations\[1\]: missing field 'caption'"):
    coco.read(options(path))
  open(path, "w").write('{"images": [')  # truncated
  with pytest.raises(corpora.CorpusError, match="captions_train2017.json: invalid JSON"):
    coco.read(options(path))

  tsv = os.path.join(root, "bad.tsv")
  open(tsv, "w").write("a.png\tfine\nno tab here\n")
  with pytest.raises(corpora.CorpusError, match=r"bad.tsv: line 2: expected"):
    captions.read(options(tsv, val_size=1))
  jsonl = os.path.join(root, "bad.jsonl")
  open(jsonl, "w").write('{"image": "a.png", "caption": "x"}\n{"image": "b.png"}\n')
  with pytest.raises(corpora.CorpusError, match=r"bad.jsonl: line 2: missing field 'caption'"):
    captions.read(options(jsonl, val_size=1))

  vg = fx.visual_genome(str(tmp_path / "vg"), n=3)
  rels = json.load(open(os.path.join(vg, "relationships.json")))
  del rels[1]["relationships"][0]["predicate"]
  json.dump(rels, open(os.path.join(vg, "relationships.json"), "w"))
  with pytest.raises(corpora.CorpusError, match=r"relationships.json: image 2: "
                     r"relationships\[0\]: missing field 'predicate'"):
    visual_genome.read(options(vg, val_size=1))
  os.remove(os.path.join(vg, "objects.json"))
  with pytest.raises(corpora.CorpusError, match="objects.json: file not found"):
    visual_genome.read(options(vg, val_size=1))


def test_corrupt_image_is_an_error_and_empty_captions_are_counted(tmp_path):
  root = str(tmp_path / "c")
  path = fx.coco(root, n_train=3, n_val=2)
  data = json.load(open(path))
  data["annotations"][0]["caption"] = "   "
  json.dump(data, open(path, "w"))
  directory = prepare.ensure_prepared(make_config(clip, "coco", path, tmp_path / "d"))
  report = records.read_manifest(directory)["corpus"]["train"]
  assert report["empty_captions"] == 1 and report["images"] == 3

  bad = os.path.join(root, "train2017", "000000000002.jpg")
  open(bad, "wb").write(b"not a jpeg")
  with pytest.raises(corpora.CorpusError, match=r"000000000002.jpg: image of item '2'.*"
                     r"corrupt or unreadable"):
    prepare.ensure_prepared(make_config(clip, "coco", path, tmp_path / "d2"))
  assert not [d for d in os.listdir(tmp_path / "d2") if not d.startswith(".")]


# ------------------------------------------------------- fingerprint, tokenizer


def test_fingerprint_follows_files_and_options_and_rebuilds_partial(coco_dir, tmp_path):
  config = make_config(clip, "coco", coco_dir, tmp_path)
  first = prepare.dataset_dir(config)
  assert prepare.dataset_dir(make_config(clip, "coco", coco_dir, tmp_path)) == first
  assert prepare.dataset_dir(make_config(clip, "coco", coco_dir, tmp_path,
                                         ",input.max_items=2")) != first
  assert prepare.dataset_dir(make_config(structure_clip, "coco", coco_dir, tmp_path)) != first
  val = os.path.join(os.path.dirname(coco_dir), "captions_val2017.json")
  os.utime(val, ns=(1, 1))
  changed = prepare.dataset_dir(config)
  assert changed != first
  os.makedirs(changed)  # an interrupted prepare: no manifest
  directory = prepare.ensure_prepared(config)
  assert directory == changed and records.read_manifest(directory)
  with pytest.raises(ValueError, match="needs config.input.path"):
    prepare.dataset_dir(clip.get_config(f"{SMOKE},input.data='coco'"))
  with pytest.raises(ValueError, match="expected 'world' or one of"):
    prepare.dataset_dir(clip.get_config(f"{SMOKE},input.data='cocoa',input.path='x'"))
  with pytest.raises(ValueError, match="applies to real corpora only"):
    prepare.dataset_dir(clip.get_config(f"{SMOKE},input.path='{coco_dir}'"))
  # One input size, the model's: the key that was input.image_size points there.
  with pytest.raises(KeyError, match="it is now 'model.image_size'"):
    make_config(clip, "coco", coco_dir, tmp_path, ",input.image_size=32")
  assert prepare.dataset_dir(make_config(clip, "coco", coco_dir, tmp_path,
                                         ",model.image_size=32")) != changed


def test_given_tokenizer_and_model_inits(coco_dir, tmp_path, caplog):
  trained = prepare.ensure_prepared(make_config(clip, "coco", coco_dir, tmp_path / "a"))
  desc = records.read_manifest(trained)["tokenizer"]
  run = tmp_path / "run"
  run.mkdir()
  os.link(os.path.join(trained, desc["model_path"]), run / "tokenizer.model")
  json.dump({"tokenizer": {**desc, "model_path": "tokenizer.model"}},
            open(run / "config.json", "w"))
  caplog.set_level(logging.INFO)
  config = make_config(clip, "coco", coco_dir, tmp_path / "b", f",model_init='{run}'")
  directory = prepare.ensure_prepared(config)
  assert "model_init's, since config.input.tokenizer is empty" in caplog.text
  got = records.read_manifest(directory)["tokenizer"]
  assert got["model_sha256"] == desc["model_sha256"]
  assert os.path.isfile(os.path.join(directory, got["model_path"]))
  # The same tokenizer given as a JSON description is the same dataset.
  spec = tmp_path / "tok.json"
  json.dump({**desc, "model_path": str(run / "tokenizer.model")}, open(spec, "w"))
  same = prepare.dataset_dir(make_config(clip, "coco", coco_dir, tmp_path / "b",
                                         f",input.tokenizer='{spec}'"))
  assert same == directory
  with pytest.raises(FileNotFoundError, match="no tokenizer description"):
    prepare.dataset_dir(make_config(clip, "coco", coco_dir, tmp_path,
                                    f",model_init='{tmp_path / 'nothing'}'"))


def test_clip_bpe_tokenizer_is_copied_into_the_dataset(coco_dir, tmp_path):
  import gzip
  vocab = tmp_path / "tok" / "tiny_vocab.txt.gz"
  vocab.parent.mkdir()
  with gzip.open(vocab, "wt", encoding="utf-8") as f:
    f.write("#version: 0.2\nl l\nh e\n")
  spec = tmp_path / "tok" / "tokenizer.json"
  json.dump({"type": "clip_bpe", "vocab_path": "tiny_vocab.txt.gz", "context_length": 77},
            open(spec, "w"))
  config = make_config(structure_clip, "coco", coco_dir, tmp_path / "d",
                       f",input.tokenizer='{spec}',input.text_len=77,"
                       "model.text.context_length=77")
  directory = prepare.ensure_prepared(config)
  desc = records.read_manifest(directory)["tokenizer"]
  assert desc["type"] == "clip_bpe" and desc["vocab_path"] == "tiny_vocab.txt.gz"
  assert os.path.isfile(os.path.join(directory, "tiny_vocab.txt.gz"))
  tokenizer = tok_lib.from_description(desc, base_dir=directory)
  batch = next(input_pipeline.train_iterator(
      directory, batch_size=4, seed=0, fields=methods.batch_keys(config)))
  assert (batch["text"][:, 0] == tokenizer.bos_id).all()  # CLIP's SOT
  squeeze = lambda t: "".join(t.lower().split())
  assert {squeeze(t) for t in tokenizer.decode(batch["text"])} <= set(map(squeeze, fx.CAPTIONS))
  with pytest.raises(ValueError, match="encodes 77 tokens, but config.input.text_len=16"):
    prepare.ensure_prepared(make_config(clip, "coco", coco_dir, tmp_path / "e",
                                        f",input.tokenizer='{spec}',input.text_len=16,"
                                        "model.text.context_length=16"))


def test_config_keys_and_world_defaults():
  world = structure_clip.get_config("smoke")
  assert world.input.data == "world" and "world" in world.evals
  assert world.select_metric == "world_val/attribute_swap"
  with pytest.raises(KeyError, match="input.no_such_key"):
    clip.get_config("smoke,input.no_such_key=1")
  # --config.input.data=... is set after get_config: the evals follow the data
  # (evaluators.for_data), and the config itself is not rewritten.
  config = structure_clip.get_config("smoke")
  config.input.data = "coco"
  evals, select = evaluators.for_data(config)
  assert evals == {"kg": {"type": "kg"}, "retrieval": {"type": "retrieval", "split": "val"}}
  assert select == "retrieval/val/image_to_text_R@1"
  assert sorted(config.evals) == ["kg", "world"]
  assert config.select_metric == "world_val/attribute_swap"


# ------------------------------------------------------------------ training


def test_short_training_run_on_coco_with_retrieval_eval(tmp_path):
  from vlkg import train
  path = fx.coco(str(tmp_path / "coco"), n_train=8, n_val=3)
  # A batch of 8 splits over the 8 test devices (conftest).
  config = make_config(clip, "coco", path, tmp_path / "d",
                       ",input.batch_size=8,total_steps=3,log_every_steps=1,eval_every_steps=3,"
                       "checkpoint_every_steps=3")
  workdir = str(tmp_path / "run")
  last = train.train_and_evaluate(config, workdir)
  assert 0.0 <= last["retrieval/val/image_to_text_R@1"] <= 1.0
  assert last["retrieval/val/n_items"] == 3.0
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["step"] for l in lines if "loss" in l] == [1, 2, 3]
  assert np.isfinite([l["loss"] for l in lines if "loss" in l]).all()
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["input"]["data"] == "coco" and saved["tokenizer"]["type"] == "sentencepiece"
  # The run's config.json says what it evaluated: retrieval on the held-out split.
  assert saved["evals"] == {"kg": {"type": "kg"},
                            "retrieval": {"type": "retrieval", "split": "val"}}
  assert saved["total_steps"] == 3 and saved["total_epochs"] is None
  assert os.path.exists(os.path.join(workdir, "params.npz"))
