"""``python -m vlkg.main`` as a new user sees it: one smoke run, with the environment
of a fresh shell (no test settings), read for its log lines, eval tables, final
summary and the library noise it must not show; then the same run again, a workdir
of another model, and a bad benchmark file for tools.evaluate."""

import json
import os
import re
import subprocess
import sys

import pytest

from vlkg import console
from tests import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ("smoke,world.num_train=128,world.num_val=16,world.num_test=16,"
         "world.num_test_comp=16,world.workers=2,input.batch_size=16,total_steps=6,"
         "log_every_steps=3,checkpoint_every_steps=3,eval_every_steps=3")
# What the console of a run must not show (issue: "Noise on every command").
NOISE = ("Unable to initialize backend", "absl::InitializeLog", "oneDNN custom operations",
         "Given directory is read only", "Traceback", "done: {")


def _env(tmp):
  """A user's environment: none of conftest's settings, which would hide the noise.
  Only the fast compile stays (one device, as on a user's CPU); it prints nothing."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "JAX_PLATFORMS")}
  env["XLA_FLAGS"] = xla_flags.FAST_COMPILE
  env["VLKG_DATA_DIR"] = str(tmp / "data")
  return env


def _run(args, tmp, module="vlkg.main"):
  out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=_env(tmp),
                       capture_output=True, text=True, timeout=600)
  return out.returncode, out.stdout, out.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("console")
  workdir = str(tmp / "run")
  rc, stdout, stderr = _run(["--config", f"configs/clip.py:{SMOKE}", "--workdir", workdir],
                            tmp)
  assert rc == 0, stderr
  return tmp, workdir, stdout, stderr


def test_log_lines_show_the_loss_beside_throughput_and_eta(run):
  _, _, _, stderr = run
  lines = [l for l in stderr.splitlines() if re.search(r"\] step \d+/6 ", l)]
  assert [re.search(r"step (\d+)/6", l).group(1) for l in lines] == ["3", "6"]
  for line in lines:
    assert re.search(r"  loss \d+\.\d+  ", line), line
    assert re.search(r"i2t_acc [\d.]+  t2i_acc [\d.]+  grad_norm [\d.]+  lr ", line), line
    assert re.search(r"  \|  [\d.]+ steps/s, \d+ examples/s, ETA \S+$", line), line


def test_each_eval_prints_a_table_of_headline_metrics(run):
  _, _, _, stderr = run
  lines = stderr.splitlines()
  heads = [i for i, l in enumerate(lines) if re.search(r"\] eval at step \d+ \(", l)]
  assert [re.search(r"step (\d+)", lines[i]).group(1) for i in heads] == ["0", "3", "6"]
  table = lines[heads[-1] + 1:heads[-1] + 9]
  names = [l.split()[0] for l in table]
  assert names == ["retrieval/test/image_to_text_R@1", "retrieval/test/text_to_image_R@1",
                   "world/attribute_swap", "world_comp/attribute_swap",
                   "world/relation_swap", "world_comp/relation_swap",
                   "grounding/pointing_acc", "grounding/iou50_acc"]
  assert all(0.0 <= float(l.split()[1]) <= 1.0 for l in table)


def test_the_end_is_a_summary_of_metrics_files_and_next_commands(run):
  _, workdir, stdout, _ = run
  lines = stdout.splitlines()
  assert lines[0] == f"clip finished: step 6 of 6 in {workdir}"
  final = {l.split()[0]: float(l.split()[1]) for l in lines[2:10]}
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  last_eval = [r for r in records if "world/attribute_swap" in r][-1]
  assert last_eval["step"] == 6
  for name, value in final.items():
    assert value == pytest.approx(last_eval[name], abs=1e-4), name
  for name in ("config.json", "metrics.jsonl", "checkpoints/", "params.npz", "tensorboard/"):
    assert any(l.startswith(f"  {name} ") for l in lines), name
  nxt = lines[lines.index("next:") + 1:]
  assert [c.split()[:3] for c in nxt[:3]] == [["python", "-m", "vlkg.tools.evaluate"],
                                              ["python", "-m", "vlkg.tools.plot"],
                                              ["python", "-m", "vlkg.tools.export"]]
  assert nxt[3].split()[0] == "tensorboard"
  assert len(lines) < 30


def test_no_library_noise(run):
  _, _, stdout, stderr = run
  for noise in NOISE:
    assert noise not in stdout + stderr, noise


def test_a_finished_run_run_again_says_so_and_shows_its_metrics(run):
  tmp, workdir, first, _ = run
  rc, stdout, stderr = _run(["--config", f"configs/clip.py:{SMOKE}", "--workdir", workdir],
                            tmp)
  assert rc == 0, stderr
  assert f"{workdir} is already finished (step 6 of 6)" in stderr
  assert stdout == first  # the same summary, from metrics.jsonl
  assert not re.search(r"\] step \d+/6 ", stderr)  # nothing trained
  for noise in NOISE:  # resuming opens the checkpoints read-only: still quiet
    assert noise not in stdout + stderr, noise


def test_a_workdir_of_another_model_is_one_line(run):
  tmp, workdir, _, _ = run
  rc, stdout, stderr = _run(["--config", f"configs/clip.py:{SMOKE}", "--workdir", workdir,
                             "--config.model.image.width=48"], tmp)
  assert rc == console.EXIT_USER_ERROR
  assert stderr.strip().splitlines()[-1] == (
      f"error: {workdir}/config.json was written by a run with a different model or "
      "data: model.image.width: 32 -> 48. Use a new --workdir, or restore the old values.")
  assert "Traceback" not in stderr and stdout == ""


def test_a_bad_benchmark_file_is_one_line(run):
  tmp, workdir, _, _ = run
  bad = tmp / "vg_relation.json"
  bad.write_text(json.dumps([{"image_id": 1}]))
  rc, stdout, stderr = _run(["--workdir", workdir, "--benchmark", "aro_relation",
                             "--data", str(bad)], tmp, module="vlkg.tools.evaluate")
  assert rc == console.EXIT_USER_ERROR
  assert stderr.splitlines() == [f"error: {bad}: item 0: missing field 'image_path'"]
  assert stdout == ""
