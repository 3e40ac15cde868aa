"""Tests for the ARO / SugarCrepe readers, writers and metrics (the order
perturbations: tests/data/benchmarks/test_order.py)."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

from vlkg.data.benchmarks import aro, sugarcrepe
from vlkg.data.benchmarks.errors import BenchmarkFormatError

_SHARED_DROPPED = (pathlib.Path(__file__).resolve().parents[3].parent
                   / "shared" / "benchmarks" / "aro_vg_relation_dropped.json")


def _write_json(path: pathlib.Path, data) -> pathlib.Path:
  path.write_text(json.dumps(data), encoding="utf-8")
  return path


def _rel(caption_true: str = "the cat is on the mat", relation: str = "on",
         **overrides) -> dict:
  record = {
      "image_path": "2345.jpg",
      "bbox_x": 10, "bbox_y": 20, "bbox_w": 30, "bbox_h": 40,
      "true_caption": caption_true,
      "false_caption": "the mat is on the cat",
      "relation_name": relation,
  }
  record.update(overrides)
  return record


# --------------------------------------------------------------------------- ARO I/O


def test_read_aro_hand_written_official_layout(tmp_path):
  relation_file = _write_json(tmp_path / "visual_genome_relation.json", [
      {"image_id": "2345", "relation_name": "on", "bbox_x": 10, "bbox_y": 20,
       "bbox_w": 30, "bbox_h": 40, "true_caption": "the cat is on the mat",
       "false_caption": "the mat is on the cat", "image_path": "2345.jpg"},
      {"image_id": "77", "relation_name": "sitting on", "bbox_x": 0.5,
       "bbox_y": 1, "bbox_w": 2.25, "bbox_h": 3, "true_caption":
       "the man is sitting on the bench", "false_caption":
       "the bench is sitting on the man", "image_path": "77.jpg"},
  ])
  items = aro.read_aro(relation_file, "relation")
  assert items == [
      aro.AroItem("2345.jpg", (10.0, 20.0, 30.0, 40.0), "the cat is on the mat",
                  "the mat is on the cat", relation_name="on"),
      aro.AroItem("77.jpg", (0.5, 1.0, 2.25, 3.0), "the man is sitting on the bench",
                  "the bench is sitting on the man", relation_name="sitting on"),
  ]
  attribution_file = _write_json(tmp_path / "visual_genome_attribution.json", [
      {"image_id": "5", "attributes": ["white", "black"], "bbox_x": 1,
       "bbox_y": 2, "bbox_w": 3, "bbox_h": 4,
       "true_caption": "the white cat and the black dog",
       "false_caption": "the black cat and the white dog", "image_path": "5.jpg"},
  ])
  [item] = aro.read_aro(attribution_file, "attribution")
  assert item.attributes == ("white", "black")
  assert item.relation_name is None
  assert item.bbox == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize("kind", ["relation", "attribution"])
def test_aro_round_trip(tmp_path, kind):
  items = [
      aro.AroItem("a/1.jpg", (0.0, 1.0, 20.0, 30.0), "the dog is left of the cat",
                  "the cat is left of the dog", relation_name="to the left of",
                  attributes=("brown", "white") if kind == "attribution" else None),
      aro.AroItem("2.jpg", (3.5, 4.25, 5.0, 6.75), "the red cup and the blue plate",
                  "the blue cup and the red plate",
                  relation_name="near" if kind == "relation" else None,
                  attributes=("red", "blue") if kind == "attribution" else None),
  ]
  path = tmp_path / f"{kind}.json"
  aro.write_aro(path, items, kind)
  assert aro.read_aro(path, kind) == items
  # Exactly the official field names, whole numbers as JSON integers.
  raw = json.loads(path.read_text(encoding="utf-8"))
  official = {"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption",
              "false_caption"}
  if kind == "relation":
    assert set(raw[1]) == official | {"relation_name"}
  else:
    assert set(raw[1]) == official | {"attributes"}
    assert raw[0]["attributes"] == ["brown", "white"]
  assert raw[0]["bbox_w"] == 20 and isinstance(raw[0]["bbox_w"], int)
  assert raw[1]["bbox_x"] == 3.5


def test_write_aro_rejects_item_missing_kind_field(tmp_path):
  item = aro.AroItem("1.jpg", (0, 0, 1, 1), "t", "f")
  with pytest.raises(BenchmarkFormatError,
                     match=r"item 0: missing field 'relation_name'"):
    aro.write_aro(tmp_path / "x.json", [item], "relation")
  with pytest.raises(BenchmarkFormatError, match=r"item 0: missing field 'attributes'"):
    aro.write_aro(tmp_path / "x.json", [item], "attribution")
  assert not (tmp_path / "x.json").exists()
  with pytest.raises(ValueError, match="kind"):
    aro.read_aro(tmp_path / "x.json", "relations")  # type: ignore[arg-type]


# ----------------------------------------------------------------- ARO bad inputs


def test_read_aro_missing_field_names_file_item_field(tmp_path):
  records = [_rel() for _ in range(13)]
  del records[12]["true_caption"]
  path = _write_json(tmp_path / "vg_relation.json", records)
  with pytest.raises(BenchmarkFormatError) as info:
    aro.read_aro(path, "relation")
  assert str(info.value) == f"{path}: item 12: missing field 'true_caption'"
  assert info.value.item == 12 and info.value.field == "true_caption"
  assert isinstance(info.value, ValueError)


def test_read_aro_relation_name_required_only_for_relation(tmp_path):
  record = _rel(attributes=["a", "b"])
  del record["relation_name"]
  path = _write_json(tmp_path / "vg.json", [record])
  with pytest.raises(BenchmarkFormatError,
                     match=r"item 0: missing field 'relation_name'"):
    aro.read_aro(path, "relation")
  assert aro.read_aro(path, "attribution")[0].attributes == ("a", "b")
  path = _write_json(tmp_path / "vga.json", [_rel()])
  with pytest.raises(BenchmarkFormatError, match=r"item 0: missing field 'attributes'"):
    aro.read_aro(path, "attribution")


@pytest.mark.parametrize("field,value,kind,expected", [
    ("bbox_x", "10", "relation", "field 'bbox_x' must be a number, got str"),
    ("bbox_h", True, "relation", "field 'bbox_h' must be a number, got bool"),
    ("bbox_w", None, "relation", "field 'bbox_w' must be a number, got null"),
    ("true_caption", 5, "relation", "field 'true_caption' must be a string, got int"),
    ("image_path", ["a.jpg"], "relation", "field 'image_path' must be a string"),
    ("relation_name", 3, "relation", "field 'relation_name' must be a string"),
    ("attributes", ["red"], "attribution", "must be a list of two"),
    ("attributes", ["red", 1], "attribution", "must be a list of two"),
    ("attributes", "red_blue", "attribution", "must be a list of two"),
])
def test_read_aro_wrong_type(tmp_path, field, value, kind, expected):
  records = [_rel(attributes=["red", "blue"]), _rel(attributes=["red", "blue"])]
  records[1][field] = value
  path = _write_json(tmp_path / "vg.json", records)
  with pytest.raises(BenchmarkFormatError) as info:
    aro.read_aro(path, kind)
  message = str(info.value)
  assert message.startswith(f"{path}: item 1: field {field!r} ")
  assert expected in message
  assert info.value.field == field


def test_read_aro_truncated_and_non_list(tmp_path):
  text = json.dumps([_rel(), _rel()])
  path = tmp_path / "visual_genome_relation.json"
  path.write_text(text[:len(text) // 2], encoding="utf-8")
  with pytest.raises(BenchmarkFormatError) as info:
    aro.read_aro(path, "relation")
  assert str(info.value).startswith(f"{path}: invalid JSON")
  _write_json(path, {"0": _rel()})
  with pytest.raises(BenchmarkFormatError,
                     match="top level must be a JSON list, got dict"):
    aro.read_aro(path, "relation")
  _write_json(path, [_rel(), "not an object"])
  with pytest.raises(BenchmarkFormatError,
                     match="item 1: item must be a JSON object, got str"):
    aro.read_aro(path, "relation")


# ----------------------------------------------------------------- ARO metrics


def test_aro_choice_tie_is_wrong():
  assert aro.aro_choice_correct(0.2, 0.3) is True
  assert aro.aro_choice_correct(0.3, 0.2) is False
  assert aro.aro_choice_correct(0.25, 0.25) is False  # argmax([f, t]) == 0 on a tie
  assert aro.aro_choice_correct(np.float32(1.0), np.float32(1.0)) is False


def _items_with_relations(names):
  return [aro.AroItem(f"{i}.jpg", (0, 0, 1, 1), "t", "f", relation_name=n)
          for i, n in enumerate(names)]


def test_vg_relation_macro_accuracy_hand_worked():
  # (relation, score_false, score_true)
  cases = [
      ("on", 0.1, 0.9),      # correct
      ("on", 0.5, 0.5),      # tie -> wrong
      ("on", 0.2, 0.8),      # correct        -> on: 2/3
      ("under", 0.9, 0.1),   # wrong          -> under: 0/1
      ("behind", 0.0, 1.0),  # correct
      ("behind", 0.3, 0.4),  # correct        -> behind: 2/2
      ("with", 0.9, 0.1),    # "with" is on the official drop list
      ("with", 0.9, 0.1),
      ("with", 0.9, 0.1),
      ("with", 0.9, 0.1),
  ]
  items = _items_with_relations([c[0] for c in cases])
  correct = [aro.aro_choice_correct(f, t) for _, f, t in cases]
  macro, per_relation, n_items = aro.vg_relation_macro_accuracy(items, correct)
  assert per_relation == pytest.approx({"behind": 1.0, "on": 2 / 3, "under": 0.0})
  assert list(per_relation) == ["behind", "on", "under"]
  assert macro == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)  # 5/9, not the micro 4/6
  assert n_items == 6
  # An explicit list replaces the packaged one; () keeps every relation.
  macro, per_relation, n_items = aro.vg_relation_macro_accuracy(
      items, correct, dropped=["under"])
  assert per_relation == pytest.approx({"behind": 1.0, "on": 2 / 3, "with": 0.0})
  assert macro == pytest.approx(5 / 9) and n_items == 9
  macro, _, n_items = aro.vg_relation_macro_accuracy(items, correct, dropped=())
  assert macro == pytest.approx((1.0 + 2 / 3 + 0.0 + 0.0) / 4) and n_items == 10


def test_vg_relation_macro_accuracy_errors():
  items = _items_with_relations(["with", "on"])
  with pytest.raises(ValueError, match="2 items but 1"):
    aro.vg_relation_macro_accuracy(items, [True])
  with pytest.raises(ValueError, match="no relation left"):
    aro.vg_relation_macro_accuracy(items, [True, False], dropped=["with", "on"])


def test_packaged_dropped_relations():
  dropped = aro.load_dropped_relations()
  assert {"with", "of", "near", "next to", "on the side of", "around"} <= dropped
  assert "on" not in dropped and "behind" not in dropped
  assert len(dropped) == 157
  if _SHARED_DROPPED.exists():
    packaged = pathlib.Path(aro.__file__).with_name(aro.DROPPED_RELATIONS_FILE)
    assert packaged.read_bytes() == _SHARED_DROPPED.read_bytes()


def test_load_dropped_relations_bad_file(tmp_path):
  path = _write_json(tmp_path / "dropped.json", {"source": "x"})
  with pytest.raises(BenchmarkFormatError, match="missing field 'relations'"):
    aro.load_dropped_relations(path)
  _write_json(path, {"source": "x", "relations": ["a", "b"]})
  assert aro.load_dropped_relations(path) == frozenset({"a", "b"})


def test_vg_attribution_macro_accuracy_min_count():
  spec = [(("red", "blue"), 25, 20), (("big", "small"), 24, 24),
          (("wooden", "metal"), 30, 15), (("blue", "red"), 3, 0)]
  items, correct = [], []
  for pair, count, n_correct in spec:
    for k in range(count):
      items.append(aro.AroItem("x.jpg", (0, 0, 1, 1), "t", "f", attributes=pair))
      correct.append(k < n_correct)
  macro, per_pair, n_items = aro.vg_attribution_macro_accuracy(items, correct)
  # big_small (24 items) and blue_red (3) fall under the official 25-item floor.
  assert per_pair == pytest.approx({"red_blue": 0.8, "wooden_metal": 0.5})
  assert macro == pytest.approx(0.65)
  assert n_items == 55
  macro, per_pair, n_items = aro.vg_attribution_macro_accuracy(
      items, correct, min_count=3)
  assert set(per_pair) == {"big_small", "blue_red", "red_blue", "wooden_metal"}
  assert macro == pytest.approx((1.0 + 0.0 + 0.8 + 0.5) / 4) and n_items == 82
  with pytest.raises(ValueError, match=">= 100 items"):
    aro.vg_attribution_macro_accuracy(items, correct, min_count=100)


# ----------------------------------------------------------------- crop


def test_crop_to_bbox_integer_box():
  image = np.arange(30, dtype=np.uint8).reshape(5, 6)
  crop = aro.crop_to_bbox(image, (1, 2, 3, 2))  # x=1, y=2, w=3, h=2
  np.testing.assert_array_equal(crop, [[13, 14, 15], [19, 20, 21]])
  rgb = np.stack([image, image + 100, image + 200], axis=-1).astype(np.uint8)
  crop = aro.crop_to_bbox(rgb, (1, 2, 3, 2))
  assert crop.shape == (2, 3, 3) and crop.dtype == np.uint8
  np.testing.assert_array_equal(crop[..., 1], [[113, 114, 115], [119, 120, 121]])


def test_crop_to_bbox_rounds_half_to_even_and_pads_with_zeros():
  image = np.arange(30, dtype=np.uint8).reshape(5, 6)
  # box (0.5, 0.5, 2.5, 3.5) -> round -> (0, 0, 2, 4)
  np.testing.assert_array_equal(
      aro.crop_to_bbox(image, (0.5, 0.5, 2.0, 3.0)),
      [[0, 1], [6, 7], [12, 13], [18, 19]])
  # box (1.5, 1.5, 3.5, 2.5) -> (2, 2, 4, 2): zero rows.
  assert aro.crop_to_bbox(image, (1.5, 1.5, 2.0, 1.0)).shape == (0, 2)
  # Outside the image is zero, as with PIL.
  np.testing.assert_array_equal(
      aro.crop_to_bbox(image, (4, 3, 4, 4)),
      [[22, 23, 0, 0], [28, 29, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(
      aro.crop_to_bbox(image, (-1, -1, 3, 3)), [[0, 0, 0], [0, 0, 1], [0, 6, 7]])
  with pytest.raises(ValueError, match="width is negative"):
    aro.crop_to_bbox(image, (2, 0, -1, 1))


def test_crop_to_bbox_matches_pil():
  pil_image = pytest.importorskip("PIL.Image")
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
  pil = pil_image.fromarray(image)
  for _ in range(300):
    x, y = rng.uniform(-3, 12, size=2).round(rng.integers(0, 3))
    w, h = rng.uniform(0, 8, size=2).round(rng.integers(0, 3))
    x, y, w, h = float(x), float(y), float(w), float(h)
    expected = np.asarray(pil.crop((x, y, x + w, y + h)))
    np.testing.assert_array_equal(aro.crop_to_bbox(image, (x, y, w, h)), expected)


# ----------------------------------------------------------------- SugarCrepe


def test_read_sugarcrepe_hand_written_official_layout(tmp_path):
  path = _write_json(tmp_path / "swap_att.json", {
      "0": {"filename": "000000252219.jpg",
            "caption": "A white cat on a black sofa.",
            "negative_caption": "A black cat on a white sofa."},
      "1": {"filename": "000000085329.jpg",
            "caption": "A red car next to a blue bike.",
            "negative_caption": "A blue car next to a red bike."},
  })
  assert sugarcrepe.read_sugarcrepe_file(path) == [
      sugarcrepe.SugarCrepeItem("000000252219.jpg", "A white cat on a black sofa.",
                                "A black cat on a white sofa."),
      sugarcrepe.SugarCrepeItem("000000085329.jpg", "A red car next to a blue bike.",
                                "A blue car next to a red bike."),
  ]


def test_read_sugarcrepe_sorts_keys_numerically(tmp_path):
  data = {k: {"filename": f"{k}.jpg", "caption": "c", "negative_caption": "n"}
          for k in ["10", "2", "0", "1"]}
  path = _write_json(tmp_path / "add_obj.json", data)
  names = [item.filename for item in sugarcrepe.read_sugarcrepe_file(path)]
  assert names == ["0.jpg", "1.jpg", "2.jpg", "10.jpg"]


def test_sugarcrepe_round_trip(tmp_path):
  items = [sugarcrepe.SugarCrepeItem(f"{i:012d}.jpg", f"caption {i} é",
                                     f"negative {i}") for i in range(12)]
  path = tmp_path / "replace_rel.json"
  sugarcrepe.write_sugarcrepe_file(path, items)
  assert sugarcrepe.read_sugarcrepe_file(path) == items
  raw = json.loads(path.read_text(encoding="utf-8"))
  assert list(raw) == [str(i) for i in range(12)]
  assert set(raw["11"]) == {"filename", "caption", "negative_caption"}


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d["3"].pop("negative_caption"),
     "key '3': missing field 'negative_caption'"),
    (lambda d: d["3"].update(caption=7),
     "key '3': field 'caption' must be a string, got int"),
    (lambda d: d.update({"3": ["x.jpg", "c", "n"]}),
     "key '3': item must be a JSON object, got list"),
    (lambda d: d.update({"a": d.pop("3")}),
     "key 'a': key must be a non-negative integer"),
    (lambda d: d.update({"03": d.pop("3")}),
     "key '03': key must be a non-negative integer"),
])
def test_read_sugarcrepe_bad_item(tmp_path, mutate, expected):
  data = {str(i): {"filename": "f.jpg", "caption": "c", "negative_caption": "n"}
          for i in range(5)}
  mutate(data)
  path = _write_json(tmp_path / "add_att.json", data)
  with pytest.raises(BenchmarkFormatError) as info:
    sugarcrepe.read_sugarcrepe_file(path)
  assert str(info.value).startswith(f"{path}: {expected}")


def test_read_sugarcrepe_truncated_and_list(tmp_path):
  path = tmp_path / "swap_obj.json"
  path.write_text('{"0": {"filename": "a.jpg", "caption": "c", "neg', encoding="utf-8")
  with pytest.raises(BenchmarkFormatError, match=r"swap_obj\.json: invalid JSON"):
    sugarcrepe.read_sugarcrepe_file(path)
  _write_json(path, [{"filename": "a.jpg", "caption": "c", "negative_caption": "n"}])
  with pytest.raises(BenchmarkFormatError, match="top level must be a JSON object"):
    sugarcrepe.read_sugarcrepe_file(path)


def test_read_sugarcrepe_dir(tmp_path):
  one = [sugarcrepe.SugarCrepeItem("a.jpg", "c", "n")]
  sugarcrepe.write_sugarcrepe_file(tmp_path / "swap_att.json", one)
  sugarcrepe.write_sugarcrepe_file(tmp_path / "add_obj.json", one * 2)
  (tmp_path / "notes.json").write_text("{}", encoding="utf-8")
  found = sugarcrepe.read_sugarcrepe_dir(tmp_path)
  assert list(found) == ["add_obj", "swap_att"]
  assert len(found["add_obj"]) == 2 and found["swap_att"] == one
  assert set(sugarcrepe.SUGARCREPE_CATEGORIES) == {
      "add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att",
      "swap_obj"}


def test_read_sugarcrepe_dir_with_none_of_the_seven(tmp_path):
  (tmp_path / "notes.json").write_text("{}", encoding="utf-8")
  with pytest.raises(BenchmarkFormatError) as info:
    sugarcrepe.read_sugarcrepe_dir(tmp_path)
  assert str(info.value).startswith(f"{tmp_path}: no SugarCrepe file found")
  assert "swap_att.json" in str(info.value)
  (tmp_path / "swap_ent.json").write_text("{}", encoding="utf-8")
  with pytest.raises(BenchmarkFormatError, match="early-release names"):
    sugarcrepe.read_sugarcrepe_dir(tmp_path)
  with pytest.raises(BenchmarkFormatError, match="no SugarCrepe file found"):
    sugarcrepe.read_sugarcrepe_dir(os.path.join(tmp_path, "missing"))


def test_sugarcrepe_correct_is_strict():
  assert sugarcrepe.sugarcrepe_correct(0.31, 0.30) is True
  assert sugarcrepe.sugarcrepe_correct(0.30, 0.30) is False
  assert sugarcrepe.sugarcrepe_correct(0.29, 0.30) is False
