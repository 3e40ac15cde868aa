"""A finished smoke run, loaded back: vlkg.api, vlkg.tools.evaluate, export, main."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import clip
from vlkg import api, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ("smoke,world.num_train=128,world.num_val=16,world.num_test=16,"
         "world.num_test_comp=16,world.workers=1,input.batch_size=16,total_steps=6,"
         "log_every_steps=3,checkpoint_every_steps=3,eval_every_steps=3")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("run")
  workdir = str(root / "workdir")
  config = clip.get_config(SMOKE + f",data_dir='{root / 'data'}'")
  last = train.train_and_evaluate(config, workdir)
  return workdir, last


def test_run_writes_the_contract_files(run):
  workdir, last = run
  for name in ("config.json", "metrics.jsonl", "params.npz", "checkpoints", "tokenizer.model"):
    assert os.path.exists(os.path.join(workdir, name)), name
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = [l for l in lines if "world/attribute_swap" in l]
  assert [l["step"] for l in evals] == [0, 3, 6]  # at step 0, every eval_every, the end
  assert all(l["eval_seconds"] > 0 for l in evals)  # each eval's wall time
  trains = [l for l in lines if "loss" in l]
  assert all({"step", "loss", "examples_per_sec"} <= set(l) for l in trains)
  assert 0.0 <= last["world_comp/attribute_swap"] <= 1.0
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  keys = np.load(os.path.join(workdir, "params.npz")).files
  assert "img/conv1/kernel" in keys and "txt/token_embedding/embedding" in keys


def test_run_killed_before_its_final_eval_evaluates_on_resume(run, tmp_path):
  """Killed after its last checkpoint, before the final eval and params.npz: the
  same command writes both."""
  workdir, _ = run
  killed = str(tmp_path / "killed")
  shutil.copytree(workdir, killed)
  os.remove(os.path.join(killed, "params.npz"))
  path = os.path.join(killed, "metrics.jsonl")
  lines = [json.loads(l) for l in open(path)]
  with open(path, "w") as f:
    for l in lines:
      if not (l["step"] == 6 and "world/attribute_swap" in l):
        f.write(json.dumps(l) + "\n")
  config = clip.get_config(SMOKE + f",data_dir='{os.path.dirname(workdir)}/data'")
  train.train_and_evaluate(config, killed)
  evals = [json.loads(l) for l in open(path) if "world/attribute_swap" in l]
  assert [l["step"] for l in evals] == [0, 3, 6]
  final = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))
           if "world/attribute_swap" in l][-1]
  assert evals[-1]["world/attribute_swap"] == pytest.approx(final["world/attribute_swap"])
  assert os.path.exists(os.path.join(killed, "params.npz"))


def test_results_evaluation_of_a_run(run, tmp_path):
  """vlkg.results.evaluation: the probes and the blind score of the run's own
  world, with the params' stamp."""
  from vlkg.results import evaluation
  workdir, _ = run
  out = str(tmp_path / "evaluation.json")
  result = evaluation.write(workdir, out)
  assert json.load(open(out)) == json.loads(json.dumps(result))
  assert result["params"] == evaluation.params_stamp(workdir)
  metrics = result["metrics"]
  for name in ("shape", "color", "size", "texture"):
    assert 0.0 <= metrics[f"probe/{name}"] <= 1.0
    assert 0.0 <= metrics[f"probe/{name}_chance"] <= 1.0
  assert metrics["probe/n_score"] > 0
  for split in ("test", "test_comp"):
    assert 0.0 <= metrics[f"text_prior/{split}/blind"] <= 1.0
    assert 0.0 <= metrics[f"text_prior/{split}/sighted"] <= 1.0
  # --all (an evaluation-only run): every evaluator of the given config, which
  # reproduces the run's own final evaluation of the same params.
  from vlkg.results import workdir as workdir_lib
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  full = evaluation.write(workdir, str(tmp_path / "all.json"), config, everything=True)
  assert full["evals"] == evaluation.full_key(config)
  own = workdir_lib.final_metrics(workdir)
  shared = [k for k in own if k.startswith("world/")]
  assert shared and all(full["metrics"][k] == pytest.approx(own[k], abs=1e-6)
                        for k in shared)
  assert full["metrics"]["probe/shape"] == metrics["probe/shape"]
  # --reevaluate: an evaluator the run already ran is run again on its params.
  again = evaluation.write(workdir, str(tmp_path / "again.json"), config,
                           reevaluate=["world"])
  assert again["evals"] == ["world"]
  assert all(again["metrics"][k] == pytest.approx(own[k], abs=1e-6) for k in shared)


def test_api_encodes_normalised_and_scores(run):
  workdir, _ = run
  model = api.load(workdir)
  images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  zi = model.encode_images(images)
  zt = model.encode_texts(["a red circle", "a small blue square above a star"])
  assert zi.shape == (3, 32) and zt.shape == (2, 32)
  np.testing.assert_allclose(np.linalg.norm(zi, axis=1), 1, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(zt, axis=1), 1, atol=1e-5)
  np.testing.assert_allclose(model.score(images, ["a red circle", "a small blue square above a star"]),
                             zi @ zt.T, atol=1e-6)
  # Larger inputs go through CLIP's resize + center crop to the model's size.
  assert model.encode_images(np.zeros((1, 96, 128, 3), np.uint8)).shape == (1, 32)
  # Embedding one image alone equals embedding it inside a batch.
  np.testing.assert_allclose(model.encode_images(images[1:2])[0], zi[1], atol=1e-5)
  # Calls of 1 to 9 texts are padded to 1, 2, 4, 8 or 16 rows: five programs.
  texts = [f"a red circle left of {n} stars" for n in range(9)]
  alone = np.concatenate([model.encode_texts([t]) for t in texts])
  for n in range(1, 10):
    np.testing.assert_allclose(model.encode_texts(texts[:n]), alone[:n], atol=1e-5)
  assert model._embed_texts._cache_size() == 5


def test_evaluate_tool_reproduces_the_final_eval_from_params_alone(run, tmp_path):
  workdir, last = run
  out = tmp_path / "metrics.json"
  subprocess.run([sys.executable, "-m", "vlkg.tools.evaluate", "--workdir", workdir,
                  "--benchmark", "world", "--out", str(out)], cwd=ROOT, check=True,
                 capture_output=True)
  metrics = json.loads(out.read_text())
  for k in ("world/attribute_swap", "world_comp/relation_swap", "world/knowledge",
            "retrieval/test/image_to_text_R@1", "world/n_items", "world/missing_images",
            "grounding/pointing_acc", "grounding/iou50_acc", "grounding/n_items"):
    assert metrics[k] == pytest.approx(last[k], abs=1e-6), k


def test_main_export_mode_writes_params(run, tmp_path):
  workdir, _ = run
  before = dict(np.load(os.path.join(workdir, "params.npz")))
  os.remove(os.path.join(workdir, "params.npz"))
  subprocess.run([sys.executable, "-m", "vlkg.main", "--config", f"configs/clip.py:{SMOKE}",
                  "--workdir", workdir, "--mode", "export"], cwd=ROOT, check=True,
                 capture_output=True)
  after = np.load(os.path.join(workdir, "params.npz"))
  assert sorted(after.files) == sorted(before)
  for k in before:
    np.testing.assert_array_equal(after[k], before[k])


def test_main_eval_mode_runs_the_config_evaluators(run):
  """--mode eval: vlkg.evaluators.run on DIR/params.npz, one JSON line of metrics."""
  workdir, last = run
  out = subprocess.run([sys.executable, "-m", "vlkg.main", "--config",
                        f"configs/clip.py:{SMOKE}", "--workdir", workdir, "--mode", "eval",
                        f"--config.data_dir={os.path.dirname(workdir)}/data"],
                       cwd=ROOT, check=True, capture_output=True, text=True)
  metrics = json.loads(out.stdout.strip().splitlines()[-1])
  for k in ("world/attribute_swap", "world_comp/relation_swap",
            "retrieval/test/image_to_text_R@1", "grounding/pointing_acc"):
    assert metrics[k] == pytest.approx(last[k], abs=1e-6), k


def _legacy_config_json(path):
  """Rewrites a run's config.json in the keys runs had before the renames."""
  data = json.load(open(path))
  data["world"]["image_size"] = data["model"].pop("image_size")
  data["input"]["image_size"] = 0
  for name in ("log_every", "eval_every", "checkpoint_every"):
    data[name] = data.pop(f"{name}_steps")
    del data[f"{name}_examples"], data[f"{name}_epochs"]
  del data["total_examples"], data["total_epochs"]
  del data["optim"]["warmup_examples"], data["optim"]["warmup_epochs"]
  json.dump(data, open(path, "w"))


def test_a_run_with_an_older_config_json_loads_and_resumes(run, tmp_path):
  import shutil
  from vlkg.data import prepare
  workdir, _ = run
  old = str(tmp_path / "old")
  shutil.copytree(workdir, old)
  _legacy_config_json(os.path.join(old, "config.json"))
  images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  np.testing.assert_allclose(api.load(old).encode_images(images),
                             api.load(workdir).encode_images(images), atol=1e-6)
  assert prepare.run_dataset_dir(old) == prepare.run_dataset_dir(workdir)
  # The same command resumes it (config.json's old keys are not a change), and
  # with more steps it trains on from its last checkpoint.
  config = clip.get_config(SMOKE + f",data_dir='{os.path.dirname(workdir)}/data',"
                           "total_steps=8,evals={}")
  train.train_and_evaluate(config, old)
  steps = [json.loads(l)["step"] for l in open(os.path.join(old, "metrics.jsonl"))]
  assert steps[-1] == 8 and steps == sorted(steps)
