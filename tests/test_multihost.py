"""Multi-process runs: joining from the environment, and a two-process CPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vlkg import sharding
from tests import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_single_process_env_joins_nothing():
  assert sharding.initialize_distributed({}) is False
  assert sharding.initialize_distributed({"VLKG_NUM_PROCESSES": "1"}) is False
  assert sharding.initialize_distributed({"VLKG_DISTRIBUTED": "0"}) is False


def test_missing_peer_variables_are_named():
  with pytest.raises(ValueError, match="VLKG_PROCESS_ID and VLKG_COORDINATOR"):
    sharding.initialize_distributed({"VLKG_NUM_PROCESSES": "2"})
  with pytest.raises(ValueError, match="VLKG_COORDINATOR"):
    sharding.initialize_distributed({"VLKG_NUM_PROCESSES": "2", "VLKG_PROCESS_ID": "0"})


@pytest.mark.slow
def test_two_cpu_processes_train_one_model(tmp_path):
  """launch/multihost_cpu.sh: 2 processes x 2 devices share one global batch; both
  end with the same loss, and only process 0 writes the run files."""
  workdir = tmp_path / "run"
  env = dict(os.environ, VLKG_DATA_DIR=str(tmp_path / "data"))
  subprocess.run(
      ["bash", os.path.join(ROOT, "launch", "multihost_cpu.sh"), "2", "2",
       "--config", "configs/clip.py:smoke,total_steps=6,eval_every_steps=0", "--workdir",
       str(workdir), "--verbosity=1"], cwd=ROOT, env=env, check=True, timeout=600)
  finals = []
  for p in range(2):
    # --verbosity=1: each process logs its final metrics as one JSON object.
    log = (workdir / f"process_{p}.log").read_text()
    line = [l for l in log.splitlines() if "] final metrics: " in l][-1]
    finals.append(json.loads(line.split("] final metrics: ", 1)[1]))
  assert finals[0]["loss"] == finals[1]["loss"]
  assert (workdir / "params.npz").exists() and (workdir / "metrics.jsonl").exists()
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  steps = [r["step"] for r in records if "loss" in r]
  assert steps == sorted(set(steps))  # one writer: no training step logged twice


@pytest.mark.slow
def test_sigterm_on_one_host_stops_every_host_at_one_step(tmp_path):
  """Pre-emption across hosts (vlkg.preemption): SIGTERM to process 1 only; jax's
  pre-emption sync point makes both processes save the same step and exit 143; the
  same command then finishes the run."""
  import re
  import signal
  import time
  workdir = tmp_path / "run"
  workdir.mkdir()
  args = ["--config", "configs/clip.py:smoke,total_steps=200,eval_every_steps=0,log_every_steps=10,"
          "checkpoint_every_steps=1000", "--workdir", str(workdir)]
  port = 20000 + os.getpid() % 20000
  procs, logs = [], [workdir / f"process_{p}.log" for p in range(2)]
  for p in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", VLKG_DATA_DIR=str(tmp_path / "data"),
               XLA_FLAGS=xla_flags.with_devices(2),
               VLKG_NUM_PROCESSES="2", VLKG_PROCESS_ID=str(p),
               VLKG_COORDINATOR=f"localhost:{port}")
    with open(logs[p], "w") as log:
      procs.append(subprocess.Popen([sys.executable, "-m", "vlkg.main", *args], cwd=ROOT,
                                    env=env, stdout=log, stderr=subprocess.STDOUT))
  try:
    deadline = time.time() + 500
    while "step 20/200" not in logs[0].read_text():
      assert time.time() < deadline and all(p.poll() is None for p in procs)
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    assert [p.wait(timeout=300) for p in procs] == [143, 143]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  stopped = [re.findall(r"pre-empted \(SIGTERM\) at step (\d+): checkpoint saved",
                        log.read_text()) for log in logs]
  assert len(stopped[0]) == 1 and stopped[0] == stopped[1]
  step = int(stopped[0][0])
  assert 20 <= step < 200
  assert sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()) == [step]
  subprocess.run(["bash", os.path.join(ROOT, "launch", "multihost_cpu.sh"), "2", "2", *args],
                 cwd=ROOT, env=dict(os.environ, VLKG_DATA_DIR=str(tmp_path / "data")),
                 check=True, timeout=600)
  assert f"starting at step {step} (workdir" in logs[0].read_text()
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  steps = [r["step"] for r in records if "loss" in r]
  assert steps == sorted(set(steps)) and steps[-1] == 200  # no step trained twice
