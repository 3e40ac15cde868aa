"""Multi-process runs: joining from the environment, and a two-process CPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vlkg import sharding

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
