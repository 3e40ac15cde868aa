"""A run kept entirely on a non-local file system: TensorFlow's in-memory ``ram://``,
which goes through the same path layer (``vlkg.files``) as ``gs://``.

Prepare, a smoke training with checkpoints, TensorBoard and metrics, a resume, an
export and an evaluation all read and write ``ram://`` only; the local disk sees
nothing but temporary staging directories. ``ram://`` lives in this process, so the
run is in-process. The training runs no evals (they are the same code as
``tools.evaluate``'s, which runs once at the end)."""

import json
import os
import sys
import uuid

import ml_collections
import numpy as np
import pytest

from configs import clip
from vlkg import api, checkpoint, files, train
from vlkg.tools import evaluate, export

import test_wandb_writer  # its fake wandb module

SMOKE = ("smoke,world.num_train=64,world.num_val=8,world.num_test=16,"
         "world.num_test_comp=8,world.workers=1,input.batch_size=16,total_steps=4,"
         "log_every_steps=2,checkpoint_every_steps=2,eval_every_steps=0")


def _config(preset, data_dir):
  config = clip.get_config(preset + f",data_dir='{data_dir}'")
  config.evals = ml_collections.ConfigDict()
  return config


@pytest.fixture(scope="module")
def ram_run(tmp_path_factory):
  root = f"ram://vlkg-cloud-{uuid.uuid4().hex[:8]}"
  workdir, data_dir = f"{root}/runs/smoke", f"{root}/data"
  cwd = os.getcwd()
  local = tmp_path_factory.mktemp("cwd")
  os.chdir(local)  # anything written to a relative local path would land here
  wandb = test_wandb_writer.fake_wandb()  # the trainer's W&B wiring, checked on the way
  try:
    with pytest.MonkeyPatch.context() as patch:
      patch.setitem(sys.modules, "wandb", wandb)
      config = _config(SMOKE + ",wandb.project=vlkg-test", data_dir)
      first = train.train_and_evaluate(config, workdir)
  finally:
    os.chdir(cwd)
  return root, workdir, data_dir, config, first, local, wandb


def test_the_run_writes_its_files_on_the_url(ram_run):
  root, workdir, data_dir, _, first, local, wandb = ram_run
  assert os.listdir(local) == []
  names = set(files.listdir(workdir))
  assert {"config.json", "metrics.jsonl", "params.npz", "checkpoints", "tensorboard",
          "tokenizer.model"} <= names
  assert "run.lock" not in names  # no file lock on an object store
  lines = [json.loads(l) for l in files.read_bytes(f"{workdir}/metrics.jsonl").splitlines()]
  assert [l["step"] for l in lines if "loss" in l] == [2, 4]
  assert all(np.isfinite(l["loss"]) and l["examples_per_sec"] > 0 for l in lines if "loss" in l)
  assert lines[-1]["loss"] == pytest.approx(first["loss"], abs=1e-6)
  # orbax's steps, mirrored complete (commit file present), the oldest dropped (keep=2).
  assert sorted(files.listdir(f"{workdir}/checkpoints"), key=int) == ["2", "4"]
  assert files.exists(f"{workdir}/checkpoints/4/commit_success.txt")
  assert files.listdir(f"{workdir}/tensorboard")[0].startswith("events.out.tfevents")
  [run] = wandb.runs  # W&B got the same numbers, in one run that the config names
  assert run.init["project"] == "vlkg-test" and run.init["dir"] is None and run.finished
  assert [s for s, d in run.logged if "loss" in d] == [2, 4]
  assert run.init["config"]["total_steps"] == 4
  [dataset] = files.listdir(data_dir)
  assert files.exists(f"{data_dir}/{dataset}/manifest.json")


def test_export_evaluate_and_api_read_the_url(ram_run):
  _, workdir, _, config, first, _, _ = ram_run
  out = f"{workdir}/exported.npz"
  assert export.export(workdir, out=out) == out
  exported = files.load_npz(out)
  final = files.load_npz(f"{workdir}/params.npz")
  assert sorted(exported) == sorted(final)
  for k in final:
    np.testing.assert_array_equal(exported[k], final[k])
  step, params = checkpoint.load_checkpoint_params(workdir)
  assert step == 4
  np.testing.assert_array_equal(
      checkpoint.flatten_params(params)["logit_scale"], final["logit_scale"])

  result = evaluate.evaluate(workdir, "world", None, None)
  for name in ("world/attribute_swap", "world_comp/relation_swap", "world/order"):
    assert 0.0 <= result[name] <= 1.0, name
  assert result["world/n_items"] > 0
  model = api.load(workdir)
  images = np.zeros((2, 32, 32, 3), np.uint8)
  scores = model.score(images, ["a red cube", "a blue ball"])
  assert scores.shape == (2, 2) and np.all(np.abs(scores) <= 1 + 1e-5)


def test_a_longer_run_resumes_from_the_url(ram_run):
  _, workdir, _, config, _, _, _ = ram_run
  longer = _config(SMOKE.replace("total_steps=4", "total_steps=6"), config.data_dir)
  train.train_and_evaluate(longer, workdir)
  lines = [json.loads(l) for l in files.read_bytes(f"{workdir}/metrics.jsonl").splitlines()]
  # Steps 2 and 4 from the first run, 6 from the resumed one: it started at step 4.
  assert [l["step"] for l in lines if "loss" in l] == [2, 4, 6]
  assert sorted(files.listdir(f"{workdir}/checkpoints"), key=int) == ["4", "6"]
