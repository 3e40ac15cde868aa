"""``bench prepare``'s plumbing (never its timings): the generated corpus, and the
figures computed from timed builds."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from configs import clip
from vlkg.data import corpora
from vlkg.tools import bench_prepare


def test_photo_compresses_like_a_photo():
  pixels = bench_prepare.photo(np.random.default_rng(0))
  assert pixels.shape == (480, 640, 3) and pixels.dtype == np.uint8
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
  assert 100_000 < len(buf.getvalue()) < 250_000  # COCO's photos: about 160 KB
  assert bench_prepare.caption(np.random.default_rng(0)).startswith("A ")


def test_write_corpus_is_a_karpathy_corpus(tmp_path):
  path = bench_prepare.write_corpus(str(tmp_path), 5, val=2, height=30, width=40)
  corpus = corpora.load("karpathy").read(corpora.Options(
      path=path, train_split="train", eval_split="val")).splits
  assert [i.key for i in corpus["train"]] == ["0", "1", "2"]
  assert [i.key for i in corpus["val"]] == ["3", "4"]
  assert all(len(i.captions) == 5 for i in corpus["train"] + corpus["val"])
  with Image.open(corpus["val"][1].image) as im:
    assert im.format == "JPEG" and im.size == (40, 30)


def test_run_reports_rates_from_the_timed_builds(tmp_path, capsys):
  config = clip.get_config("smoke")
  out = bench_prepare.run(config, repeats=1, n_images=6, image_size=32, workers=1)
  assert out["images"] == 6 and out["workers"] == 1 and out["repeats"] == 1
  assert out["images_per_second"] > 0 and out["cpu_ms_per_image"] > 0
  assert out["end_to_end_images_per_second"] == pytest.approx(6 / out["seconds"])
  assert 0 < out["bytes_per_image"] < 10_000  # a 32 px JPEG
  assert 0 < out["worker_cpu_ms_per_image"] < out["cpu_ms_per_image"]
  assert out["idle_cores_images_per_second"] == pytest.approx(
      os.cpu_count() * 1e3 / out["worker_cpu_ms_per_image"])
  assert "images/s once started" in capsys.readouterr().out
  runs = [{"images": 10, "seconds": 4.0, "write_seconds": 2.0, "worker_seconds": 4.0,
           "cpu_seconds": 0.05, "worker_cpu_seconds": 0.02, "bytes_per_image": 100.0},
          {"images": 10, "seconds": 2.0, "write_seconds": 1.0, "worker_seconds": 2.0,
           "cpu_seconds": 0.03, "worker_cpu_seconds": 0.01, "bytes_per_image": 300.0}]
  summary = bench_prepare.summary(runs, 32, 2)
  assert summary["images_per_second"] == pytest.approx(7.5)  # median of 5 and 10
  assert summary["end_to_end_images_per_second"] == pytest.approx(3.75)
  assert summary["images_per_second_per_process"] == pytest.approx(3.75)
  assert summary["cpu_ms_per_image"] == pytest.approx(4.0)
  assert summary["worker_cpu_ms_per_image"] == pytest.approx(1.5)
  assert summary["bytes_per_image"] == 200.0
