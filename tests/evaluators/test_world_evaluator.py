"""The world evaluator end to end on a tiny prepared world, with encoders whose right
answers are known: an oracle (every suite 1.0), a constant encoder (every score
ties: ARO/SugarCrepe 0.0, order 1.0, worst retrieval ranks), and a missing image."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import clip
from vlkg.data import prepare
from vlkg.data.world.suites import SUITES
from vlkg.evaluators import vqa, world

TINY = ("smoke,world.num_train=64,world.num_val=16,world.num_test=16,"
        "world.num_test_comp=16,world.num_shards=2,world.workers=1")
SPLITS = {"test": "world", "test_comp": "world_comp"}
N_IMAGES, CAPTIONS_PER_IMAGE = 16, 3
SUGARCREPE_FORMAT = ("replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj",
                     "add_att", "knowledge")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  return prepare.ensure_prepared(clip.get_config(TINY + f",data_dir='{root}'"))


def _pixels_key(image: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def suite_items(dataset: str, split: str) -> dict[str, list[tuple[str, str, list[str]]]]:
  """(image path, true caption, false captions) per suite, read straight from JSON."""
  root = os.path.join(dataset, "benchmarks", split)
  out = {}
  for suite in SUITES:
    if suite in ("attribute_swap", "relation_swap"):
      with open(os.path.join(root, f"{suite}.json")) as f:
        out[suite] = [(r["image_path"], r["true_caption"], [r["false_caption"]])
                      for r in json.load(f)]
    elif suite == "order":
      with open(os.path.join(root, "order.json")) as f:
        out[suite] = [(r["image_path"], r["caption_options"][0], r["caption_options"][1:])
                      for r in json.load(f)]
    else:
      with open(os.path.join(root, "sugarcrepe", f"{suite}.json")) as f:
        data = json.load(f)
      out[suite] = [(r["filename"], r["caption"], [r["negative_caption"]])
                    for r in (data[k] for k in sorted(data, key=int))]
  return out


class OracleEncoder:
  """Knows each scene from its pixels and which captions are true of it.

  An image is the one-hot vector of its scene; a caption is the normalised sum of
  the one-hots of the scenes it is a true caption of (per the suite files), so it
  scores > 0 exactly on those scenes and 0 elsewhere. Captions it has never seen as
  true get a dimension of their own that no image uses.
  """

  def __init__(self, dataset: str, splits=tuple(SPLITS)):
    self.scene_of_pixels: dict[str, int] = {}
    truth: dict[str, set[int]] = collections.defaultdict(set)
    scene = {}
    for split in splits:
      folder = os.path.join(dataset, "benchmarks", "images", split)
      for name in sorted(os.listdir(folder)):
        scene[f"images/{split}/{name}"] = len(scene)
        with Image.open(os.path.join(folder, name)) as im:
          self.scene_of_pixels[_pixels_key(np.asarray(im.convert("RGB")))] = scene[
              f"images/{split}/{name}"]
      for items in suite_items(dataset, split).values():
        for path, true_caption, _ in items:
          truth[true_caption].add(scene[path])
    self.truth = truth
    self.dim = len(scene) + 1
    self.calls = collections.Counter()

  def encode_images(self, images):
    self.calls["images"] += 1
    out = np.zeros((len(images), self.dim), np.float32)
    for row, image in enumerate(images):
      out[row, self.scene_of_pixels[_pixels_key(image)]] = 1.0
    return out

  def encode_texts(self, texts):
    self.calls["texts"] += 1
    out = np.zeros((len(texts), self.dim), np.float32)
    for row, text in enumerate(texts):
      scenes = sorted(self.truth.get(text, ())) or [self.dim - 1]
      out[row, scenes] = 1.0 / np.sqrt(len(scenes))
    return out


class ConstantEncoder:
  """Every image and caption is the same vector: every score is a tie."""

  def __init__(self, with_token_ids: bool = False):
    self.token_id_batches: list[np.ndarray] = []
    self.text_calls = 0
    if with_token_ids:
      self.encode_token_ids = self._encode_token_ids

  @staticmethod
  def _same(n):
    return np.full((n, 4), 0.5, np.float32)

  def encode_images(self, images):
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3
    return self._same(len(images))

  def encode_texts(self, texts):
    self.text_calls += 1
    return self._same(len(texts))

  def _encode_token_ids(self, ids):
    self.token_id_batches.append(ids)
    return self._same(len(ids))


KNOWLEDGE = ("kvqa", "kvqa_n_items", "entity_linking", "entity_linking_n_items")


def _expected_names() -> set[str]:
  names = {f"{p}/{s}" for p in SPLITS.values() for s in SUITES}
  names |= {f"world/{k}" for k in KNOWLEDGE}  # test only: test_comp has none
  names |= {f"{p}/{c}" for p in SPLITS.values() for c in ("n_items", "missing_images")}
  names |= {f"retrieval/test/{d}_{m}" for d in ("image_to_text", "text_to_image")
            for m in ("R@1", "R@5", "R@10", "mean_rank", "median_rank")}
  return names | {"retrieval/test/n_items", "retrieval/test/missing_images"}


def test_oracle_gets_every_suite_right(dataset):
  encoder = OracleEncoder(dataset)
  metrics = world.evaluate(encoder, dataset, batch_size=32)
  assert set(metrics) == _expected_names()
  for split, prefix in SPLITS.items():
    items = suite_items(dataset, split)
    for suite in SUITES:
      assert metrics[f"{prefix}/{suite}"] == 1.0, (prefix, suite)
    assert metrics[f"{prefix}/n_items"] == sum(len(v) for v in items.values())
    assert metrics[f"{prefix}/missing_images"] == 0
  assert metrics["retrieval/test/n_items"] == N_IMAGES
  for key in ("image_to_text_R@1", "text_to_image_R@10"):
    assert 0.0 <= metrics[f"retrieval/test/{key}"] <= 1.0
  # 16 test + 16 test_comp images, each encoded once although retrieval and up to
  # ten suites use each test image: two batches of 16 (retrieval, test_comp).
  assert encoder.calls["images"] == 2


def _knowledge_files(dataset: str, split: str = "test"):
  """(questions with answers, mentions) of the knowledge suites, straight from JSON."""
  root = os.path.join(dataset, "benchmarks", split)
  with open(os.path.join(root, "okvqa", f"world_{split}_annotations.json")) as f:
    answers = {a["question_id"]: a["answers"][0]["answer"]
               for a in json.load(f)["annotations"]}
  with open(os.path.join(root, "okvqa", f"OpenEnded_world_{split}_questions.json")) as f:
    questions = [(q["question"], answers[q["question_id"]], q["image_id"])
                 for q in json.load(f)["questions"]]
  with open(os.path.join(root, "wikidiverse", f"{split}_w_10cands.json")) as f:
    mentions = json.load(f)
  return questions, mentions


def test_constant_encoder_ties_everywhere(dataset):
  metrics = world.evaluate(ConstantEncoder(), dataset, batch_size=32)
  assert set(metrics) == _expected_names()
  # Ties pick the first: the vocabulary's most frequent answer (ties by name), and
  # each mention's first candidate.
  questions, mentions = _knowledge_files(dataset)
  counts = collections.Counter(vqa.normalize_answer(a) for _, a, _ in questions)
  top = min(counts, key=lambda a: (-counts[a], a))
  assert metrics["world/kvqa"] == pytest.approx(counts[top] / len(questions))
  assert metrics["world/entity_linking"] == pytest.approx(
      np.mean([m[7][0] == m[6] for m in mentions]))
  assert metrics["world/kvqa_n_items"] == len(questions) == N_IMAGES
  assert metrics["world/entity_linking_n_items"] == len(mentions)
  assert len(mentions) >= 2 * (N_IMAGES - 1)  # two per caption, nearly every scene
  for prefix in SPLITS.values():
    for suite in SUITES:
      want = 1.0 if suite == "order" else 0.0  # ties: order's original wins, ARO and
      assert metrics[f"{prefix}/{suite}"] == want, (prefix, suite)  # SugarCrepe lose
  # Every competitor ties the truth and counts as ranked above it.
  n, k = N_IMAGES, CAPTIONS_PER_IMAGE
  r = {key.split("/")[-1]: v for key, v in metrics.items()
       if key.startswith("retrieval/")}
  assert r["image_to_text_mean_rank"] == r["image_to_text_median_rank"] == n * k - k + 1
  assert r["text_to_image_mean_rank"] == r["text_to_image_median_rank"] == n
  assert r["image_to_text_R@10"] == r["text_to_image_R@10"] == 0.0


def test_token_ids_are_used_when_the_encoder_has_them(dataset):
  encoder = ConstantEncoder(with_token_ids=True)
  with_ids = world.evaluate(encoder, dataset, splits=(), batch_size=32)
  assert encoder.token_id_batches and encoder.text_calls == 0
  ids = np.concatenate(encoder.token_id_batches)
  assert ids.dtype == np.int32 and ids.shape[1] == 32
  assert len(ids) <= N_IMAGES * CAPTIONS_PER_IMAGE  # distinct captions only
  decoded = world.evaluate(ConstantEncoder(), dataset, splits=(), batch_size=32)
  assert with_ids == decoded


class KnowledgeOracle(ConstantEncoder):
  """Answers and links from the suites' own files: both knowledge metrics are 1."""

  def __init__(self, dataset: str):
    super().__init__()
    self.answer, self.gold = {}, {}
    for split in ("val", "test"):
      pixels = lambda name: _pixels_key(np.asarray(Image.open(os.path.join(
          dataset, "benchmarks", name)).convert("RGB")))
      questions, mentions = _knowledge_files(dataset, split)
      for q, a, image_id in questions:
        self.answer[pixels(f"images/{split}/{image_id:06d}.png"), q] = a
      for m in mentions:
        self.gold[pixels(m[1]), m[0], m[2]] = m[6]
    self.kb_calls = collections.Counter()

  def answer_scores(self, images, questions, answers):
    self.kb_calls["answers"] += 1
    assert images.shape[1:] == (64, 64, 3) and len(images) == len(questions)
    truth = [self.answer[_pixels_key(i), q] for i, q in zip(images, questions)]
    return np.array([[float(a == t) for a in answers] for t in truth])

  def link_scores(self, images, contexts, mentions, candidates):
    self.kb_calls["links"] += 1
    gold = [self.gold[_pixels_key(i), c, m]
            for i, c, m in zip(images, contexts, mentions)]
    return [np.array([float(e.split(":")[0] == g) for e in es])
            for g, es in zip(gold, candidates)]


def test_knowledge_oracle(dataset):
  encoder = KnowledgeOracle(dataset)
  metrics = world.evaluate(encoder, dataset, splits=("val", "test"),
                           retrieval_split=None, grounding=False, batch_size=8)
  for prefix in ("world", "world_val"):
    assert metrics[f"{prefix}/kvqa"] == 1.0
    assert metrics[f"{prefix}/entity_linking"] == 1.0
  assert encoder.kb_calls["answers"] == 4  # 16 questions per split, 8 a call
  assert encoder.kb_calls["links"] >= 6
  none = world.evaluate(encoder, dataset, splits=("test",), retrieval_split=None,
                        grounding=False, knowledge=False)
  assert not [k for k in none if k.startswith("world/kvqa")]


def test_max_items_caps_each_suite(dataset):
  metrics = world.evaluate(ConstantEncoder(), dataset, splits=("test",),
                           retrieval_split=None, max_items=3)
  assert metrics["world/n_items"] == 3 * len(SUITES)
  assert metrics["world/kvqa_n_items"] == 3
  assert metrics["world/entity_linking_n_items"] == 6
  metrics = world.evaluate(ConstantEncoder(), dataset, splits=("test",),
                           retrieval_split=None, max_items=3, knowledge_max_items=5)
  assert metrics["world/kvqa_n_items"] == 5
  assert not any(k.startswith(("retrieval/", "world_comp/")) for k in metrics)


def test_missing_image_is_counted_not_fatal(dataset, tmp_path):
  encoder = OracleEncoder(dataset)  # knows the pixels before the file goes
  copy = str(tmp_path / "world")
  shutil.copytree(dataset, copy)
  gone = "images/test/000003.png"
  os.remove(os.path.join(copy, "benchmarks", gone))
  items = suite_items(copy, "test")
  uses = sum(path == gone for suite in items.values() for path, _, _ in suite)
  assert uses > 0
  metrics = world.evaluate(encoder, copy, splits=("test",), retrieval_split=None)
  assert metrics["world/missing_images"] == 1  # also the knowledge suites' image
  assert metrics["world/n_items"] == sum(len(v) for v in items.values()) - uses
  assert all(metrics[f"world/{s}"] == 1.0 for s in SUITES)
  questions, mentions = _knowledge_files(copy)
  assert metrics["world/kvqa_n_items"] == sum(i != 3 for _, _, i in questions)
  assert metrics["world/entity_linking_n_items"] == sum(m[1] != gone for m in mentions)


def test_unknown_split_is_an_error(dataset):
  with pytest.raises(ValueError, match="train"):
    world.evaluate(ConstantEncoder(), dataset, splits=("train",))
