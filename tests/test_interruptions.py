"""A run stopped by SIGTERM (pre-emption), SIGKILL and SIGINT, and past a broken
checkpoint, restarted with the same command each time, ends as a run never stopped.

Kept apart from tests/test_train.py, whose runs take as long, so that two test
workers can run the two files side by side.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import trainer_world, xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = trainer_world.SMOKE


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return trainer_world.prepared(tmp_path_factory)


def _main(workdir, data_dir, extra=()):
  cmd = [sys.executable, "-m", "vlkg.main", "--config", f"configs/clip.py:{SMOKE}",
         "--workdir", workdir, f"--config.data_dir={data_dir}", "--config.evals={}",
         *extra]
  env = dict(os.environ, XLA_FLAGS=xla_flags.with_devices(1))
  return cmd, env


# Long enough that a signal sent once training runs arrives before the end.
RUN = ("--config.total_steps=40", "--config.checkpoint_every_steps=10")


def _wait_for(condition, what, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if condition():
      return
    assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}"
    time.sleep(0.02)
  raise AssertionError(f"timed out waiting for {what}")


def _steps(workdir):
  ckpts = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(ckpts) if d.isdigit()) if os.path.isdir(ckpts) else []


def _cut_data_files(step_dir):
  """Truncates the array data files of a saved step (a disk that filled up)."""
  for root, _, files in os.walk(step_dir):
    for name in files:
      if os.path.basename(root) == "d":
        path = os.path.join(root, name)
        os.truncate(path, os.path.getsize(path) // 2)


def test_interrupted_runs_resume_to_the_same_params(data_dir, tmp_path):
  """One run stopped four ways, each time restarted with the same command, ends with
  the params of a run that was never stopped:

  * SIGTERM (pre-emption) mid-training: saves the step in flight, exits 143;
  * SIGKILL after a checkpoint: no save; its workdir lock does not outlive it;
  * SIGINT (Ctrl-C) as training starts: saves the first step, exits 130;
  * then the newest checkpoint is truncated: the last run falls back to the one
    before it, with a warning naming the broken step.
  """
  straight = str(tmp_path / "straight")
  cmd, env = _main(straight, data_dir, RUN)
  subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)

  work = str(tmp_path / "interrupted")
  cmd, env = _main(work, data_dir, RUN)
  log = tmp_path / "stderr.log"

  def start():
    with open(log, "w") as err:
      return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=err)

  # SIGTERM once training runs (a metrics line is written after compilation).
  proc = start()
  metrics = os.path.join(work, "metrics.jsonl")
  _wait_for(lambda: os.path.exists(metrics) and os.path.getsize(metrics) > 0,
            "the first metrics line", proc)
  sent = time.perf_counter()
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 143
  took = time.perf_counter() - sent
  text = log.read_text()
  stopped = re.search(r"pre-empted \(SIGTERM\) at step (\d+): checkpoint saved to (\S+) ",
                      text)
  assert stopped, text[-3000:]
  step = int(stopped.group(1))
  assert 2 <= step < 40 and stopped.group(2) == os.path.join(work, "checkpoints", str(step))
  assert _steps(work)[-1] == step
  assert "run the same command to resume" in text
  print(f"\nSIGTERM to exit: {took:.2f}s (pre-empted at step {step})")

  # SIGKILL once a new checkpoint is on disk.
  proc = start()
  _wait_for(lambda: _steps(work)[-1] > step, "a new checkpoint", proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(work, "params.npz"))

  # SIGINT as soon as the run says signals are caught: it saves the first step.
  proc = start()
  _wait_for(lambda: "from here on SIGTERM or SIGINT" in log.read_text(),
            "the signal handlers", proc)
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=300) == 130
  text = log.read_text()
  stopped = re.search(r"starting at step (\d+).*pre-empted \(SIGINT\) at step (\d+)",
                      text, re.S)
  assert stopped, text[-3000:]
  resumed_at, step = int(stopped.group(1)), int(stopped.group(2))
  assert step > resumed_at and _steps(work)[-1] == step

  # The newest checkpoint broken: the last run resumes from the one before.
  older = _steps(work)[-2]
  _cut_data_files(os.path.join(work, "checkpoints", str(step)))
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"checkpoint step {step} in {work}/checkpoints cannot be restored" in done.stderr
  assert f"starting at step {older} (workdir" in done.stderr
  assert os.path.isdir(os.path.join(work, "broken_checkpoints", str(step)))

  a = np.load(os.path.join(straight, "params.npz"))
  b = np.load(os.path.join(work, "params.npz"))
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_allclose(a[k], b[k], atol=1e-6, rtol=0, err_msg=k)
  steps = [json.loads(l)["step"] for l in open(metrics)]
  assert steps == sorted(set(steps)) and steps[-1] == 40  # no step logged twice
