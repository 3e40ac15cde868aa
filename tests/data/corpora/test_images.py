"""A real corpus's record images (vlkg.data.corpora.images): CLIP's transform with its
shortcuts (DCT-domain draft, one resampling of the crop), JPEG bytes, kept bytes,
image modes, missing and corrupt files; and a JPEG corpus read back through the
input pipeline."""

from __future__ import annotations

import io
import os
import pathlib

import corpus_fixtures as fx
import numpy as np
import pytest
from PIL import Image

from configs import clip
from vlkg import preprocess
from vlkg.data import corpora, input_pipeline, prepare, records
from vlkg.data.corpora import build, images


def _encode(pixels: np.ndarray, fmt: str, **kw) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format=fmt, **kw)
  return buf.getvalue()


def _item(image, key="k") -> corpora.Item:
  return corpora.Item(key=key, image=image, captions=("a cat",), source="test.json")


def _photo(height, width, seed=0):
  """Smooth colour regions and mild noise: a photo's statistics, so that JPEG's
  loss is a photo's (bench_prepare.photo's stronger noise is made to cost decode
  time, and loses more)."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), np.uint8)
  smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), int)
  return np.clip(smooth + rng.integers(-4, 5, smooth.shape), 0, 255).astype(np.uint8)


def test_crop_box_is_clip_transform_arithmetic():
  # 640x480 -> shorter side 224, longer int(224 * 640 / 480) = 298, offset round(37).
  assert images.crop_box(640, 480, 224) == (298, 224, 37, 0, 261, 224)
  assert images.crop_box(480, 640, 224) == (224, 298, 0, 37, 224, 261)
  # round half to even: (229 - 224) / 2 = 2.5 -> 2, as preprocess.resize does.
  assert images.crop_box(229, 224, 224) == (229, 224, 2, 0, 226, 224)
  assert images.crop_box(50, 40, 64) == (80, 64, 8, 0, 72, 64)


@pytest.mark.parametrize("width,height", [(97, 70), (70, 97), (40, 30), (32, 32), (33, 32),
                                          (200, 51)])
def test_transform_of_a_png_is_resize_then_crop(width, height):
  pixels = _photo(height, width)
  ref = preprocess.resize(pixels[None], 32)[0]
  with Image.open(io.BytesIO(_encode(pixels, "PNG"))) as im:
    got = np.asarray(images.transform(im, 32))
  assert got.shape == (32, 32, 3) and got.dtype == np.uint8
  # The same filter taps; fixed-point rounding may differ by one level.
  assert np.abs(got.astype(int) - ref).max() <= 1


def test_a_large_jpeg_is_drafted_and_close_to_the_full_transform():
  pixels = _photo(120, 160)
  data = _encode(pixels, "JPEG", quality=95)
  with Image.open(io.BytesIO(data)) as im:
    out = images.transform(im, 32)
    assert im.size == (80, 60)  # decoded at 1/2: both sides stay >= 32
  full = preprocess.resize(images.decode(data)[None], 32)[0]
  assert out.size == (32, 32) and out.mode == "RGB"
  diff = np.abs(np.asarray(out).astype(int) - full)
  assert diff.mean() < 3 and diff.max() < 40
  # The stored JPEG adds its own loss, within JPEG tolerance at quality 95.
  stored = images.decode(images.record_image(_item(data), 32))
  assert np.abs(stored.astype(int) - full).mean() < 4


def test_record_image_keeps_a_jpeg_of_the_output_size_byte_for_byte(tmp_path):
  data = _encode(_photo(32, 32), "JPEG", quality=80)
  path = tmp_path / "a.jpg"
  path.write_bytes(data)
  assert images.record_image(_item(str(path)), 32) == data
  assert images.record_image(_item(data), 32) == data
  # Another size, or another format of the right size, is transformed and re-encoded.
  assert images.record_image(_item(data), 16) != data
  png = _encode(_photo(32, 32), "PNG")
  out = images.record_image(_item(png), 32)
  assert out[:2] == b"\xff\xd8"  # JPEG
  assert np.abs(images.decode(out).astype(int) - images.decode(png)).mean() < 3


def test_record_image_of_every_mode_is_rgb_like_convert():
  rgb = _photo(40, 50)
  grey = Image.fromarray(rgb).convert("L")
  palette = io.BytesIO()
  Image.fromarray(rgb).convert("P").save(palette, format="PNG")
  cases = {"L jpeg": _encode(np.asarray(grey), "JPEG", quality=95),
           "RGBA png": _encode(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]), "PNG"),
           "P png": palette.getvalue()}
  for name, data in cases.items():
    ref = preprocess.resize(images.decode(data)[None], 32)[0]
    with Image.open(io.BytesIO(data)) as im:
      transformed = np.asarray(images.transform(im, 32))
    assert np.abs(transformed.astype(int) - ref).max() <= 1, name
    got = images.decode(images.record_image(_item(data), 32))
    assert got.shape == (32, 32, 3), name
    assert np.abs(got.astype(int) - ref).mean() < 5, name  # JPEG of a dithered palette
  got = images.decode(images.record_image(_item(cases["L jpeg"]), 32))
  assert (got[..., 0] == got[..., 1]).all()  # grey stays grey
  pixels = images.decode(images.record_image(_item(np.asarray(grey)[..., None]), 32))
  assert pixels.shape == (32, 32, 3)  # in-memory pixels (a decoded TFDS image)


def test_missing_is_none_and_corrupt_names_the_file(tmp_path):
  assert images.record_image(_item(str(tmp_path / "nope.jpg")), 32) is None
  bad = tmp_path / "bad.jpg"
  good = _encode(_photo(64, 64), "JPEG")
  bad.write_bytes(good[:len(good) // 3])  # truncated
  with pytest.raises(corpora.CorpusError, match=r"bad.jpg: image of item 'k'.*corrupt"):
    images.record_image(_item(str(bad)), 32)
  bad.write_bytes(good[:len(good) // 3])
  with pytest.raises(corpora.CorpusError, match="corrupt"):
    images.record_image(_item(str(bad)), 64)  # the kept-bytes path checks them too
  with pytest.raises(corpora.CorpusError, match="test.json: image of item 'k'"):
    images.record_image(_item(np.zeros((4, 4), np.float32)), 32)


def test_jpeg_corpus_reads_back_through_the_input_pipeline(tmp_path):
  root = str(tmp_path / "c")
  path = fx.coco(root, n_train=3, n_val=2)
  # One training image already at the output size: its bytes are kept.
  kept = os.path.join(root, "train2017", "000000000002.jpg")
  Image.fromarray(_photo(64, 64, seed=5)).save(kept, format="JPEG", quality=90)
  config = clip.get_config(f"smoke,world.workers=1,input.batch_size=2,input.data='coco',"
                           f"input.path='{path}',data_dir='{tmp_path / 'd'}'")
  directory = prepare.ensure_prepared(config)
  manifest = records.read_manifest(directory)
  assert manifest["format_version"] == records.IMAGE_FORMAT_VERSION
  assert manifest["layout"]["image_format"] == "jpeg"
  assert records.layout_of(manifest).image_format == "jpeg"
  items = corpora.load("coco").read(corpora.Options.from_config(config)).splits
  for split in ("train", "val"):
    batch = next(input_pipeline.eval_iterator(directory, split, batch_size=4))
    n = int(batch["_mask"].sum())
    assert n == len(items[split])
    for i, item in enumerate(items[split]):
      stored = images.record_image(item, 64)
      # tf.data decodes the stored JPEG as PIL does.
      assert np.abs(batch["image"][i].astype(int) - images.decode(stored)).max() <= 1
      with Image.open(item.image) as im:
        source = np.asarray(im.convert("RGB"))
      full = preprocess.resize(source[None], 64)[0]
      assert np.abs(batch["image"][i].astype(int) - full).mean() < 4
      if item.image == kept:
        assert stored == pathlib.Path(kept).read_bytes()
        np.testing.assert_array_equal(batch["image"][i], source)
  train = next(input_pipeline.train_iterator(directory, batch_size=2, seed=0))
  assert train["image"].shape == (2, 64, 64, 3) and train["image"].dtype == np.uint8
  assert build.load_image(items["train"][0], 64).shape == (64, 64, 3)
