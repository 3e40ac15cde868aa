"""Tests for the real-benchmark evaluators and `vlkg.tools.evaluate` on them.

Every benchmark is written in its official on-disk format with a few small images
(tests/evaluators/real_benchmark_files.py), and scored with `ColorStub`, a model
whose embeddings are designed by hand: an image embeds as the colors that cover at
least a quarter of it, a caption as the color words it holds (split on spaces). So
each score is 1, 1/sqrt(2) or 0 and every expected metric below is worked out by
hand in the comments. One module-scoped tiny
training run checks the same files end to end through ``evaluate(workdir, ...)`` and
the command line.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vlkg.data.benchmarks.errors import BenchmarkFormatError
from vlkg.evaluators import benchmark_images, binary_choice, real_benchmarks
from tests.evaluators.real_benchmark_files import (
    ColorStub, evaluate_with_stub, write_aro_attribution, write_aro_relation,
    write_coco_order, write_flickr_order, write_json, write_retrieval, write_sugarcrepe,
    write_winoground)

ROOT = pathlib.Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- ARO


def test_aro_relation_macro_accuracy_hand_worked(tmp_path, monkeypatch):
  data = write_aro_relation(tmp_path / "aro")
  loads = []
  real_load = binary_choice.load_image
  monkeypatch.setattr(binary_choice, "load_image",
                      lambda path, **kw: loads.append(path) or real_load(path, **kw))
  metrics, stub = evaluate_with_stub("aro_relation", data, batch_size=2)
  # on: wrong (tie), correct, correct = 2/3; under: 0/1; behind: 1/1; "with" is on
  # the official drop list; the last item's image is missing.
  assert metrics == pytest.approx({
      "aro_relation/macro_accuracy": (2 / 3 + 0 + 1) / 3,
      "aro_relation/n_items": 7, "aro_relation/missing_images": 1,
      "aro_relation/n_groups": 3, "aro_relation/n_items_in_macro": 5})
  # Three distinct crops of one file, streamed two at a time from one decode.
  assert [b[0] for b in stub.image_batches] == [2, 1]
  assert loads == [str(tmp_path / "aro" / "images" / "scene.png")]
  # The drop list can be replaced: () keeps "with" (1/2), a file names its own.
  metrics, _ = evaluate_with_stub("aro_relation", data, dropped_relations=())
  assert metrics["aro_relation/macro_accuracy"] == pytest.approx(
      (2 / 3 + 0 + 1 + 1 / 2) / 4)
  assert metrics["aro_relation/n_groups"] == 4
  dropped = write_json(tmp_path / "dropped.json", {"source": "test", "relations": ["under"]})
  metrics, _ = evaluate_with_stub("aro_relation", data, dropped_relations=str(dropped))
  assert metrics["aro_relation/macro_accuracy"] == pytest.approx(
      (2 / 3 + 1 + 1 / 2) / 3)


def test_aro_relation_image_folder_given_directly(tmp_path):
  data = write_aro_relation(tmp_path / "aro")
  via_root, _ = evaluate_with_stub("aro_relation", data, tmp_path / "aro")
  via_images, _ = evaluate_with_stub("aro_relation", data, tmp_path / "aro" / "images")
  assert via_root == via_images


def test_aro_attribution_min_count_counts_scored_items(tmp_path):
  data = write_aro_attribution(tmp_path / "aro")
  metrics, _ = evaluate_with_stub("aro_attribution", data)
  # red_blue 20/25 = 0.8, red_gray 13/26 = 0.5; blue_red has 25 items but one image
  # is missing, and 24 scored items fall under the 25-item floor.
  assert metrics == pytest.approx({
      "aro_attribution/macro_accuracy": 0.65,
      "aro_attribution/n_items": 75, "aro_attribution/missing_images": 1,
      "aro_attribution/n_groups": 2, "aro_attribution/n_items_in_macro": 51})


# --------------------------------------------------------------------------- Order


def test_coco_order_hand_worked(tmp_path):
  data = write_coco_order(tmp_path / "coco")
  metrics, _ = evaluate_with_stub("coco_order", data)
  # Red image: "a red bus" and its shuffles all score 1 (tie: correct); "a blue bus"
  # all 0 (tie: correct); "a flag in blue,red": the cleaned original keeps
  # "blue,red" as one word (score 0) while every perturbation splits off the comma
  # (1/sqrt(2)): wrong. Blue image: two ties, correct. The third image is missing.
  assert metrics == pytest.approx({"coco_order/precision@1": 4 / 5,
                                   "coco_order/n_items": 5,
                                   "coco_order/missing_images": 1})
  # The seed only moves words; these captions' scores do not depend on it.
  again, _ = evaluate_with_stub("coco_order", data, seed=7)
  assert again == metrics


def test_flickr_order_original_layout(tmp_path):
  data = write_flickr_order(tmp_path / "flickr")
  metrics, _ = evaluate_with_stub("flickr_order", data, tmp_path / "flickr" / "flickr30k-images")
  # Only the test split: "Red!" (tie, correct) and "a blue,red flag" (wrong).
  assert metrics == pytest.approx({"flickr_order/precision@1": 0.5,
                                   "flickr_order/n_items": 2,
                                   "flickr_order/missing_images": 0})


def test_lexicon_tagger():
  tag = real_benchmarks.lexicon_tagger()
  assert [tag(w) for w in ("man", "Men", "horses", "light", "brown", "White")] == [
      "noun", "noun", "noun", "noun", "adj", "adj"]
  # Count words are numbers, not adjectives; a word that is both is a noun.
  assert tag("two") is False and tag("riding") is False and tag("the") is False
  assert tag("orange") == "noun"


# ----------------------------------------------------------------------- SugarCrepe


def test_sugarcrepe_hand_worked(tmp_path):
  data, images = write_sugarcrepe(tmp_path / "sc")
  metrics, _ = evaluate_with_stub("sugarcrepe", data, images)
  # add_att: correct, wrong, tie (wrong), correct = 2/4; swap_obj: 1/1 with one
  # image missing; replace_rel: 0/1. Only the categories found are reported.
  assert metrics == pytest.approx({
      "sugarcrepe/add_att": 0.5, "sugarcrepe/swap_obj": 1.0,
      "sugarcrepe/replace_rel": 0.0,
      "sugarcrepe/n_items": 6, "sugarcrepe/missing_images": 1})
  one, _ = evaluate_with_stub("sugarcrepe", data / "add_att.json", images)
  assert one == pytest.approx({"sugarcrepe/add_att": 0.5, "sugarcrepe/n_items": 4,
                               "sugarcrepe/missing_images": 0})


def test_corrupt_image_is_an_error_naming_the_file(tmp_path):
  data, images = write_sugarcrepe(tmp_path / "sc")
  (images / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  write_json(data / "add_obj.json", {"0": {"filename": "bad.jpg", "caption": "a",
                                      "negative_caption": "b"}})
  with pytest.raises(binary_choice.ImageLoadError, match=r"val2017/bad\.jpg"):
    evaluate_with_stub("sugarcrepe", data, images)


def test_no_image_found_is_an_error(tmp_path):
  data, _ = write_sugarcrepe(tmp_path / "sc")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match=r"none of the images .* --images"):
    evaluate_with_stub("sugarcrepe", data, tmp_path / "empty")


# ----------------------------------------------------------------------- Winoground


def test_winoground_hand_worked(tmp_path):
  data = write_winoground(tmp_path / "wg")
  metrics, _ = evaluate_with_stub("winoground", data)
  # s[c, i]: item 0 [[1, 0], [0, 1]]: all hold. Item 1 (c1 "red blue"):
  # (R2 = 1/sqrt(2)) [[1, 0], [R2, R2]]: text holds, image fails on the tie s(c1, i0) = s(c1, i1).
  # Item 2 (i0 half red, half green): [[R2, 0], [R2, 1]]: text fails on the tie
  # s(c0, i0) = s(c1, i0), image holds. Item 3 swaps the captions: all fail. Item 4
  # has no image_1 and is left out.
  assert metrics == pytest.approx({
      "winoground/text": 2 / 4, "winoground/image": 2 / 4, "winoground/group": 1 / 4,
      "winoground/n_items": 4, "winoground/missing_images": 1})
  # The image folder itself may be passed instead of its parent.
  direct, _ = evaluate_with_stub("winoground", data, tmp_path / "wg" / "images")
  assert direct == metrics


def test_winoground_truncated_file_names_file_and_line(tmp_path):
  data = write_winoground(tmp_path / "wg")
  data.write_text(data.read_text()[:-20], encoding="utf-8")
  with pytest.raises(BenchmarkFormatError, match=r"examples\.jsonl: item 4: line 5"):
    evaluate_with_stub("winoground", data)


# ------------------------------------------------------------------------ Retrieval


def test_retrieval_hand_worked(tmp_path):
  data = write_retrieval(tmp_path / "coco")
  metrics, _ = evaluate_with_stub("retrieval", data)
  # Images red, blue, green (test split; the fourth is missing). Texts "a red ball"
  # [1, 0, 0], "a ball" [0, 0, 0], "a blue sky" [0, 1, 0], "a kite" [0, 0, 0].
  # image -> text positions (best own caption; ties count against): red 0, blue 0,
  # green 3 (its "a kite" ties with three other captions at 0).
  # text -> image positions: 0, 2, 0, 2.
  p = "retrieval/dataset_coco/"
  assert metrics == pytest.approx({
      p + "image_to_text_R@1": 2 / 3, p + "image_to_text_R@5": 1.0,
      p + "image_to_text_R@10": 1.0, p + "image_to_text_mean_rank": 2.0,
      p + "image_to_text_median_rank": 1.0,
      p + "text_to_image_R@1": 0.5, p + "text_to_image_R@5": 1.0,
      p + "text_to_image_R@10": 1.0, p + "text_to_image_mean_rank": 2.0,
      p + "text_to_image_median_rank": 2.0,
      p + "n_items": 3, p + "n_texts": 4, p + "missing_images": 1})


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["images"][1].pop("sentences"), r"item 1: missing field 'sentences'"),
    (lambda d: d["images"][0].update(split=None),
     r"item 0: field 'split' must be a string, got null"),
])
def test_retrieval_bad_file_names_file_item_field(tmp_path, mutate, expected):
  data = write_retrieval(tmp_path / "coco")
  content = json.loads(data.read_text())
  mutate(content)
  write_json(data, content)
  with pytest.raises(BenchmarkFormatError, match=r"dataset_coco\.json: " + expected):
    evaluate_with_stub("retrieval", data)
  data.write_text(data.read_text()[:-2], encoding="utf-8")
  with pytest.raises(BenchmarkFormatError, match=r"dataset_coco\.json: invalid JSON"):
    evaluate_with_stub("retrieval", data)


def test_trainer_call_convention(tmp_path):
  # The trainer calls evaluate(encoder, dataset_dir, **spec) with spec from
  # config.evals; the world's dataset_dir plays no part.
  data = write_winoground(tmp_path / "wg")
  spec = {"benchmark": "winoground", "data": str(data)}
  metrics = real_benchmarks.evaluate(ColorStub(), str(tmp_path / "world"), **spec)
  assert metrics["winoground/group"] == pytest.approx(1 / 4)


def test_unknown_benchmark_and_missing_data(tmp_path):
  with pytest.raises(ValueError, match="unknown benchmark"):
    real_benchmarks.evaluate(ColorStub(), benchmark="world", data=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="data not found"):
    real_benchmarks.evaluate(ColorStub(), benchmark="winoground",
                             data=str(tmp_path / "nope.jsonl"))


# ------------------------------------------------------ end to end, a trained model

TINY = ("smoke,world.num_train=32,world.num_val=8,world.num_test=8,"
        "world.num_test_comp=8,world.workers=1,input.batch_size=8,total_steps=1,"
        "log_every_steps=1,checkpoint_every_steps=1,eval_every_steps=1,evals={}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  from configs import clip
  from vlkg import train
  root = tmp_path_factory.mktemp("run")
  config = clip.get_config(TINY + f",data_dir='{root / 'data'}'")
  train.train_and_evaluate(config, str(root / "workdir"))
  return str(root / "workdir")


def _in_unit(metrics: dict, keys) -> None:
  for key in keys:
    assert 0.0 <= metrics[key] <= 1.0, key


def test_one_benchmark_list_is_the_contract():
  from vlkg.tools import evaluate
  assert evaluate.BENCHMARKS == ("aro_relation", "aro_attribution", "coco_order",
                                 "flickr_order", "sugarcrepe", "winoground",
                                 "retrieval", "okvqa", "aokvqa", "wikidiverse",
                                 "world")
  assert evaluate.BENCHMARKS[:-1] == real_benchmarks.BENCHMARKS


def test_evaluate_tool_on_a_trained_run(workdir, tmp_path):
  from vlkg.tools import evaluate
  metrics = evaluate.evaluate(workdir, "winoground",
                              str(write_winoground(tmp_path / "wg")))
  _in_unit(metrics, ["winoground/text", "winoground/image", "winoground/group"])
  assert metrics["winoground/n_items"] == 4
  assert metrics["winoground/missing_images"] == 1
  metrics = evaluate.evaluate(workdir, "aro_relation",
                              str(write_aro_relation(tmp_path / "aro")))
  _in_unit(metrics, ["aro_relation/macro_accuracy"])
  assert metrics["aro_relation/n_items"] == 7
  data = write_coco_order(tmp_path / "coco")
  metrics = evaluate.evaluate(workdir, "retrieval", str(data), str(tmp_path / "coco"))
  p = "retrieval/coco_karpathy_test/"
  _in_unit(metrics, [p + "image_to_text_R@1", p + "text_to_image_R@10"])
  assert 1.0 <= metrics[p + "text_to_image_mean_rank"] <= 2.0  # two images
  assert metrics[p + "n_items"] == 2 and metrics[p + "n_texts"] == 5
  with pytest.raises(FileNotFoundError, match="does not exist"):
    evaluate.evaluate(workdir, "sugarcrepe", str(tmp_path / "nowhere"))
  # The knowledge benchmarks through the zero-shot rules of a real model.
  from test_knowledge_benchmarks import write_okvqa, write_wikidiverse
  metrics = evaluate.evaluate(workdir, "okvqa", str(write_okvqa(tmp_path / "okvqa")))
  _in_unit(metrics, ["okvqa/accuracy"])
  assert metrics["okvqa/n_items"] == 3 and metrics["okvqa/missing_images"] == 1
  data = write_wikidiverse(tmp_path / "wd")
  metrics = evaluate.evaluate(workdir, "wikidiverse", str(data), str(data / "wikinews"))
  _in_unit(metrics, ["wikidiverse/accuracy"])
  assert metrics["wikidiverse/n_items"] == 4


def test_presize_matches_the_models_own_preprocessing(workdir):
  from vlkg import api
  model = api.load(workdir)
  image = np.random.default_rng(0).integers(0, 256, (37, 90, 3), dtype=np.uint8)
  presized = benchmark_images._presizer(model)(image)
  assert presized.shape == (model.image_size, model.image_size, 3)
  np.testing.assert_array_equal(model.encode_images(presized[None]),
                                model.encode_images(image[None]))


def test_evaluate_command_line(workdir, tmp_path):
  data, images = write_sugarcrepe(tmp_path / "sc")
  out = tmp_path / "metrics.json"
  result = subprocess.run(
      [sys.executable, "-m", "vlkg.tools.evaluate", "--workdir", workdir,
       "--benchmark", "sugarcrepe", "--data", str(data), "--images", str(images),
       "--out", str(out)], cwd=ROOT, check=True, capture_output=True, text=True,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  printed = json.loads(result.stdout.strip().splitlines()[-1])
  assert printed == json.loads(out.read_text())
  assert set(printed) == {"sugarcrepe/add_att", "sugarcrepe/swap_obj",
                          "sugarcrepe/replace_rel", "sugarcrepe/n_items",
                          "sugarcrepe/missing_images"}
  assert printed["sugarcrepe/n_items"] == 6
