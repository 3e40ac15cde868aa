"""Tests for the Winoground and Karpathy-split readers and the Winoground scores."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from vlkg.data.benchmarks import karpathy, winoground
from vlkg.data.benchmarks.errors import BenchmarkFormatError


def _winoground_record(i: int, **overrides) -> dict:
  record = {"id": i, "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1",
            "caption_0": "an old person kisses a young person",
            "caption_1": "a young person kisses an old person",
            "tag": "Adjective-Age", "secondary_tag": "", "num_main_preds": 1,
            "collapsed_tag": "Object"}
  record.update(overrides)
  return record


def _write_jsonl(path: pathlib.Path, records) -> pathlib.Path:
  path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
  return path


# --------------------------------------------------------------------- Winoground


def test_read_winoground_jsonl_and_json_list(tmp_path):
  path = _write_jsonl(tmp_path / "examples.jsonl",
                      [_winoground_record(0),
                       _winoground_record(1, secondary_tag="Symbolic")])
  # A blank line (e.g. a trailing one) is not an item.
  path.write_text(path.read_text() + "\n", encoding="utf-8")
  items = winoground.read_winoground(path)
  assert items[0] == winoground.WinogroundItem(
      0, "ex_0_img_0", "ex_0_img_1", "an old person kisses a young person",
      "a young person kisses an old person", "Adjective-Age", "", 1, "Object")
  assert items[1].secondary_tag == "Symbolic"
  as_list = tmp_path / "examples.json"
  as_list.write_text(json.dumps([_winoground_record(0)]), encoding="utf-8")
  assert winoground.read_winoground(as_list) == items[:1]
  # The tags are optional (they play no part in the scores).
  bare = {k: v for k, v in _winoground_record(3).items()
          if k in ("id", "image_0", "image_1", "caption_0", "caption_1")}
  [item] = winoground.read_winoground(_write_jsonl(tmp_path / "bare.jsonl", [bare]))
  assert item.tag is None and item.num_main_preds is None


@pytest.mark.parametrize("record, expected", [
    ({k: v for k, v in _winoground_record(0).items() if k != "caption_1"},
     r"item 0: missing field 'caption_1'"),
    (_winoground_record(0, id="0"), r"item 0: field 'id' must be an integer, got str"),
    (_winoground_record(0, id=True),
     r"item 0: field 'id' must be an integer, got bool"),
    (_winoground_record(0, image_1=1),
     r"item 0: field 'image_1' must be a string, got int"),
    (_winoground_record(0, num_main_preds="1"),
     r"item 0: field 'num_main_preds' must be an integer"),
    (_winoground_record(0, tag=3), r"item 0: field 'tag' must be a string"),
    ([1, 2], r"item 0: item must be a JSON object, got list"),
])
def test_read_winoground_bad_item_names_file_item_field(tmp_path, record, expected):
  path = _write_jsonl(tmp_path / "examples.jsonl", [record])
  with pytest.raises(BenchmarkFormatError, match=r"examples\.jsonl: " + expected):
    winoground.read_winoground(path)


def test_read_winoground_truncated(tmp_path):
  path = tmp_path / "examples.jsonl"
  text = json.dumps(_winoground_record(0)) + "\n" + json.dumps(_winoground_record(1))
  path.write_text(text[:-10], encoding="utf-8")
  with pytest.raises(BenchmarkFormatError,
                     match=r"examples\.jsonl: item 1: line 2: invalid JSON") as e:
    winoground.read_winoground(path)
  assert e.value.item == 1
  as_list = tmp_path / "examples.json"
  as_list.write_text(json.dumps([_winoground_record(0)])[:-5], encoding="utf-8")
  with pytest.raises(BenchmarkFormatError, match=r"examples\.json: invalid JSON"):
    winoground.read_winoground(as_list)
  as_list.write_text(json.dumps(_winoground_record(0)), encoding="utf-8")
  with pytest.raises(BenchmarkFormatError, match="top level must be a JSON list"):
    winoground.read_winoground(as_list)


def test_winoground_image_path(tmp_path):
  # Official layout: images/ beside examples.jsonl; the image folder itself works too.
  assert (winoground.image_path(tmp_path, "ex_3_img_1")
          == str(tmp_path / "ex_3_img_1.png"))
  (tmp_path / "images").mkdir()
  assert (winoground.image_path(tmp_path, "ex_3_img_1")
          == str(tmp_path / "images" / "ex_3_img_1.png"))


def test_winoground_scores_hand_worked():
  # scores[c, i] = s(caption_c, image_i).
  cases = np.array([
      [[0.9, 0.1], [0.2, 0.8]],  # all three hold
      [[0.9, 0.1], [0.9, 0.95]],  # text fails: image 0 scores both captions 0.9, a
                                  # tie (strict >); image: 0.9 > 0.1, 0.95 > 0.9
      [[0.9, 0.5], [0.1, 0.3]],  # text: 0.9 > 0.1, 0.3 > 0.5 fails; image: 0.9 > 0.5,
                                 # 0.3 > 0.1 holds
      [[0.5, 0.5], [0.5, 0.5]],  # a collapsed model: every comparison is a tie
      [[0.1, 0.9], [0.8, 0.2]],  # everything backwards
  ])
  np.testing.assert_array_equal(winoground.text_correct(cases),
                                [True, False, False, False, False])
  np.testing.assert_array_equal(winoground.image_correct(cases),
                                [True, True, True, False, False])
  np.testing.assert_array_equal(winoground.group_correct(cases),
                                [True, False, False, False, False])
  assert winoground.winoground_scores(cases) == pytest.approx(
      {"text": 0.2, "image": 0.6, "group": 0.2})
  # Text holds while image fails: caption 1 matches both images equally.
  only_text = np.array([[[0.9, 0.2], [0.3, 0.3]]])
  assert winoground.winoground_scores(only_text) == {"text": 1.0, "image": 0.0,
                                                    "group": 0.0}


def test_winoground_scores_errors():
  with pytest.raises(ValueError, match=r"\[N, 2, 2\]"):
    winoground.winoground_scores(np.zeros((0, 2, 2)))
  with pytest.raises(ValueError, match=r"\[\.\.\., 2, 2\]"):
    winoground.winoground_scores(np.zeros((3, 2, 3)))
  with pytest.raises(ValueError, match="NaN"):
    winoground.winoground_scores(np.full((1, 2, 2), np.nan))


# ---------------------------------------------------------------------- Karpathy


def _original_layout():
  return {"images": [
      {"filepath": "val2014", "filename": "COCO_val2014_1.jpg", "split": "test",
       "imgid": 0, "sentences": [{"raw": "A man on a horse.", "tokens": ["a"]},
                                 {"raw": "A horse and its rider."}]},
      {"filepath": "train2014", "filename": "COCO_train2014_2.jpg", "split": "train",
       "sentences": [{"raw": "A cat."}]},
      {"filepath": "val2014", "filename": "COCO_val2014_3.jpg", "split": "restval",
       "sentences": [{"raw": "A dog."}]},
      {"filepath": "val2014", "filename": "COCO_val2014_4.jpg", "split": "test",
       "sentences": [{"raw": "Two birds."}]},
  ], "dataset": "coco"}


def test_read_karpathy_original_layout_keeps_the_split(tmp_path):
  path = tmp_path / "dataset_coco.json"
  path.write_text(json.dumps(_original_layout()), encoding="utf-8")
  assert karpathy.read_karpathy(path) == [
      karpathy.KarpathyImage("val2014/COCO_val2014_1.jpg",
                             ("A man on a horse.", "A horse and its rider.")),
      karpathy.KarpathyImage("val2014/COCO_val2014_4.jpg", ("Two birds.",)),
  ]
  assert [im.image for im in karpathy.read_karpathy(path, "restval")] == [
      "val2014/COCO_val2014_3.jpg"]
  # Flickr30k's file has no filepath: the name is relative to the image folder.
  flickr = tmp_path / "dataset_flickr30k.json"
  flickr.write_text(json.dumps({"images": [
      {"filename": "1000092795.jpg", "split": "test",
       "sentences": [{"raw": "Two young guys with shaggy hair."}]}]}), encoding="utf-8")
  assert karpathy.read_karpathy(flickr) == [
      karpathy.KarpathyImage("1000092795.jpg", ("Two young guys with shaggy hair.",))]
  with pytest.raises(BenchmarkFormatError, match="no image is in split 'val'"):
    karpathy.read_karpathy(flickr, "val")
  with pytest.raises(ValueError, match="split must be one of"):
    karpathy.read_karpathy(flickr, "testing")


def test_read_karpathy_list_layout(tmp_path):
  path = tmp_path / "coco_karpathy_test.json"
  path.write_text(json.dumps([
      {"image": "val2014/COCO_val2014_1.jpg", "caption": ["a b", "c d"], "image_id": 1},
      {"image": "val2014/COCO_val2014_2.jpg", "caption": "one caption"},
  ]), encoding="utf-8")
  assert karpathy.read_karpathy(path) == [
      karpathy.KarpathyImage("val2014/COCO_val2014_1.jpg", ("a b", "c d")),
      karpathy.KarpathyImage("val2014/COCO_val2014_2.jpg", ("one caption",)),
  ]


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["images"][1].pop("split"), r"item 1: missing field 'split'"),
    (lambda d: d["images"][0].update(filename=3),
     r"item 0: field 'filename' must be a string, got int"),
    (lambda d: d["images"][3].update(sentences=[]),
     r"item 3: field 'sentences' must be a non-empty list, got an empty list"),
    (lambda d: d["images"][0]["sentences"][1].update(raw=None),
     r"item 0: field 'sentences\[1\]\.raw' must be a string, got null"),
    (lambda d: d["images"][3].update(filepath=["val2014"]),
     r"item 3: field 'filepath' must be a string, got list"),
    (lambda d: d.update(images={}), r"field 'images' must be a list, got dict"),
    (lambda d: d.pop("images"), r"missing field 'images'"),
])
def test_read_karpathy_original_layout_errors(tmp_path, mutate, expected):
  data = _original_layout()
  mutate(data)
  path = tmp_path / "dataset_coco.json"
  path.write_text(json.dumps(data), encoding="utf-8")
  with pytest.raises(BenchmarkFormatError, match=r"dataset_coco\.json: " + expected):
    karpathy.read_karpathy(path)


@pytest.mark.parametrize("records, expected, field", [
    ([{"caption": ["x"]}], r"item 0: missing field 'image'", "image"),
    ([{"image": "a.jpg", "caption": ["x"]}, {"image": "b.jpg", "caption": []}],
     r"item 1: field 'caption' must be a string or a non-empty list of strings, got "
     r"an empty list", "caption"),
    ([{"image": "a.jpg", "caption": ["x", 2]}],
     r"item 0: .* got a list holding a non-string",
     "caption"),
    ([{"image": "a.jpg", "caption": 7}], r"item 0: field 'caption' .* got int",
     "caption"),
    ([{"image": 5, "caption": ["x"]}], r"item 0: field 'image' must be a string",
     "image"),
])
def test_read_karpathy_list_layout_errors(tmp_path, records, expected, field):
  path = tmp_path / "coco_karpathy_test.json"
  path.write_text(json.dumps(records), encoding="utf-8")
  with pytest.raises(BenchmarkFormatError,
                     match=r"coco_karpathy_test\.json: " + expected) as e:
    karpathy.read_karpathy(path)
  assert e.value.field == field


def test_read_karpathy_truncated_and_wrong_top_level(tmp_path):
  path = tmp_path / "coco_karpathy_test.json"
  path.write_text(json.dumps([{"image": "a.jpg", "caption": ["x"]}])[:-3],
                  encoding="utf-8")
  with pytest.raises(BenchmarkFormatError,
                     match=r"coco_karpathy_test\.json: invalid JSON"):
    karpathy.read_karpathy(path)
  path.write_text('"just a string"', encoding="utf-8")
  with pytest.raises(BenchmarkFormatError, match="top level must be a JSON list"):
    karpathy.read_karpathy(path)
