"""Record image formats: PNG (the world, and corpora prepared before JPEG) and JPEG
(real corpora) in the layout and manifest, the input pipeline's decoder of each,
eagerly and inside tf.data, and old PNG datasets that still read."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from vlkg.data import input_pipeline, records


def _pixels(n, size, seed=0):
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (n, 4, 4, 3), np.uint8)
  return np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC))
                   for c in coarse])


def _jpeg(pixels) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="JPEG", quality=95, subsampling=0)
  return buf.getvalue()


def _write_dataset(directory, pixels, image_format):
  """A prepared dataset of one shard per split, as prepare writes it."""
  os.makedirs(directory)
  layout = records.layout_for(pixels.shape[1], 2, 4, 0, (), image_format)
  encode = records.encode_png if image_format == "png" else _jpeg
  splits = {}
  for split in ("train", "val"):
    examples = [{"image": encode(p), "text_ids": np.full((2, 4), i + 4),
                 "captions": [b"a", b"b"], "index": i, "num_objects": 0,
                 "object_attributes": np.zeros((0,), np.int64),
                 "boxes": np.zeros((0,), np.float32), "scene_graph": b"{}"}
                for i, p in enumerate(pixels)]
    entry = records.write_shard(directory, split, 0, 1, examples)
    splits[split] = {"files": [entry], "num_examples": entry["num_records"]}
  records.write_manifest(directory, {"name": "t", "splits": splits,
                                     "layout": layout.to_json(), "tokenizer": {}})
  return json.load(open(os.path.join(directory, records.MANIFEST)))


def test_png_layouts_are_written_as_before_and_jpeg_says_so():
  png = records.layout_for(64, 5, 32, 0, ())
  assert png.image_format == "png" and png.format_version == records.FORMAT_VERSION == 2
  assert "image_format" not in png.to_json()  # a version-2 reader reads it unchanged
  old = {"image_size": 64, "captions_per_image": 5, "text_len": 32, "max_objects": 0,
         "features": []}
  assert records.Layout.from_json(old) == png
  jpeg = records.layout_for(64, 5, 32, 0, (), "jpeg")
  assert jpeg.format_version == records.IMAGE_FORMAT_VERSION == 3
  assert jpeg.to_json()["image_format"] == "jpeg"
  assert records.Layout.from_json(jpeg.to_json()) == jpeg
  with pytest.raises(records.DataError, match="image_format 'webp'"):
    records.layout_for(64, 5, 32, 0, (), "webp")


def test_decoders_eagerly():
  pixels = _pixels(1, 16)[0]
  png = input_pipeline.decoder("png")(records.encode_png(pixels)).numpy()
  np.testing.assert_array_equal(png, pixels)
  data = _jpeg(pixels)
  jpeg = input_pipeline.decoder("jpeg")(data).numpy()
  with Image.open(io.BytesIO(data)) as im:
    np.testing.assert_array_equal(jpeg, np.asarray(im.convert("RGB")))  # as PIL decodes
  assert np.abs(jpeg.astype(int) - pixels).mean() < 2
  with pytest.raises(records.DataError, match="no decoder for image_format 'gif'"):
    input_pipeline.decoder("gif")


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_datasets_of_either_format_read_through_the_pipeline(tmp_path, image_format):
  pixels = _pixels(4, 16)
  manifest = _write_dataset(str(tmp_path / "d"), pixels, image_format)
  if image_format == "png":  # exactly the manifest of a dataset prepared before JPEG
    assert manifest["format_version"] == 2 and "image_format" not in manifest["layout"]
  else:
    assert manifest["format_version"] == 3 and manifest["layout"]["image_format"] == "jpeg"
  stored = pixels  # PNG is lossless; JPEG decodes as PIL decodes it
  if image_format == "jpeg":
    stored = np.stack([np.asarray(Image.open(io.BytesIO(_jpeg(p)))) for p in pixels])
    assert 0 < np.abs(stored.astype(int) - pixels).mean() < 2
  batch = next(input_pipeline.eval_iterator(str(tmp_path / "d"), "val", batch_size=4))
  assert batch["image"].dtype == np.uint8 and batch["image"].shape == (4, 16, 16, 3)
  np.testing.assert_array_equal(batch["image"], stored)
  train = next(input_pipeline.train_iterator(str(tmp_path / "d"), batch_size=2, seed=0,
                                             process_index=0, process_count=1))
  np.testing.assert_array_equal(train["image"], stored[train["index"]])


def test_manifest_versions_and_formats_that_do_not_fit_are_refused(tmp_path):
  manifest = _write_dataset(str(tmp_path / "d"), _pixels(2, 8), "jpeg")
  path = tmp_path / "d" / records.MANIFEST
  for version, layout, problem in (
      (2, manifest["layout"], "image_format 'jpeg' in a dataset of format version 2"),
      (4, manifest["layout"], "format_version 4 is not one of"),
      (3, {**manifest["layout"], "image_format": "webp"}, "image_format 'webp'")):
    path.write_text(json.dumps({**manifest, "format_version": version, "layout": layout}))
    with pytest.raises(records.DataError, match=problem):
      records.read_manifest(str(tmp_path / "d"))
