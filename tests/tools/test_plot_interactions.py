"""`python -m vlkg.tools.plot interactions` on an untrained run of a tiny world, and
the patch tokens it draws (`vlkg.api.Model.encode_image_tokens`).

The run is a workdir made the cheap way: a prepared tiny world, the run files
(`train.write_run_files`) and freshly initialised params in ``params.npz``; no
step of training is needed to check shapes, norms and the pictures."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import clip
from vlkg import api, checkpoint, methods, preprocess, train
from vlkg.data import prepare
from vlkg.evaluators import grounding
from vlkg.tools import plot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ("smoke,world.num_train=64,world.num_val=16,world.num_test=16,"
        "world.num_test_comp=16,world.num_shards=2,world.workers=1")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, dataset directory)."""
  root = tmp_path_factory.mktemp("run")
  config = clip.get_config(TINY + f",data_dir='{root / 'data'}'")
  directory = prepare.ensure_prepared(config)
  config = train.resolve_config(config, directory)
  path = str(root / "workdir")
  os.makedirs(path)
  train.write_run_files(path, config, directory)
  module = methods.build_model(config)
  params = methods.init_params(module, config, jax.random.key(0))
  checkpoint.save_params_npz(os.path.join(path, "params.npz"), params)
  return path, directory


@pytest.fixture(scope="module")
def workdir(run):
  return run[0]


def test_image_tokens_are_the_towers_projected_tokens_normalised(run):
  workdir, dataset = run
  model = api.load(workdir, batch_size=2)
  images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  tokens = model.encode_image_tokens(images)  # batches of 2, the last padded
  assert tokens.shape == (3, 64, 32) and tokens.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(tokens, axis=-1), 1.0, atol=1e-5)
  _, raw = model.module.apply({"params": model.params},
                              preprocess.normalize_images(images), return_tokens=True,
                              method="embed_images")
  raw = np.asarray(raw)
  np.testing.assert_allclose(tokens, raw / np.linalg.norm(raw, axis=-1, keepdims=True),
                             atol=1e-5)
  # And the grounding evaluator takes the run's model as it is.
  metrics = grounding.evaluate(model, dataset, max_images=4)
  assert metrics["grounding/n_images"] == 4
  assert 0.0 <= metrics["grounding/pointing_acc"] <= 1.0


def _check_png(path: str, min_width: int) -> None:
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with Image.open(path) as im:
    im.verify()
  with Image.open(path) as im:
    assert im.width >= min_width and im.height > 64


def test_plot_command_writes_a_png(workdir, tmp_path):
  out = str(tmp_path / "maps.png")
  result = subprocess.run(
      [sys.executable, "-m", "vlkg.tools.plot", "interactions", "--workdir", workdir,
       "--out", out, "--num", "2"], cwd=ROOT, check=True, capture_output=True,
      text=True)
  assert result.stdout.strip().splitlines()[-1] == out
  # Two cells at least per row: the image and one phrase, 64 px x 3 each.
  _check_png(out, 2 * 64 * 3)


def test_shapley_maps_are_seeded_and_drawn(workdir, tmp_path):
  model = api.load(workdir)
  image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  a, se = plot.region_phrase_interactions(model, image, "a red circle", 8, 2, 4)
  b, _ = plot.region_phrase_interactions(model, image, "a red circle", 8, 2, 4)
  assert a.shape == se.shape == (2, 2) and np.isfinite(a).all()
  np.testing.assert_array_equal(a, b)
  out = plot.plot_interactions(workdir, str(tmp_path / "shapley.png"), num=1,
                               shapley_regions=2, num_samples=2)
  _check_png(out, 3 * 64 * 3)  # the image, a cosine map and an interaction map


def test_colorize_ends_of_the_ramps():
  np.testing.assert_array_equal(plot.colorize(np.array([0.0, 1.0])),
                                [[0, 0, 4], [252, 255, 164]])
  np.testing.assert_array_equal(plot.colorize(np.array([0.5]), plot._DIVERGING),
                                [[247, 247, 247]])
