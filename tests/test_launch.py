"""launch/tpu_vm.sh --dry-run: the gcloud commands for a run kept in gs://."""

from __future__ import annotations

import os
import shlex
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "launch", "tpu_vm.sh")
JAX = next(l.split("==")[1].strip() for l in open(os.path.join(ROOT, "requirements.txt"))
           if l.startswith("jax=="))


def _dry_run(tmp_path, args, **env):
  # A gcloud that records any call: a dry run must make none.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  fake = bin_dir / "gcloud"
  fake.write_text(f"#!/bin/sh\ntouch {tmp_path}/gcloud_was_called\n")
  fake.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TPU_NAME="my-v4-32",
             ZONE="us-central2-b", **env)
  proc = subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True, text=True,
                        timeout=60, check=False)
  assert not (tmp_path / "gcloud_was_called").exists()
  return proc


def test_dry_run_prints_the_gcloud_commands_for_gs_paths(tmp_path):
  proc = _dry_run(tmp_path, ["--config", "configs/clip.py:vit_b32,total_steps=10",
                             "--dry-run", "--workdir", "gs://bucket/runs/sc"],
                  VLKG_DATA_DIR="gs://bucket/data")
  assert proc.returncode == 0, proc.stderr
  assert "not a gs:// path" not in proc.stderr  # no shared mount asked for
  commands = [shlex.split(line) for line in proc.stdout.splitlines()]
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  zone = ["--zone", "us-central2-b"]
  assert commands[0] == ["tar", "-C", ROOT, "--exclude=.git", "-czf", "/tmp/vlkg_src.tgz", "."]
  assert commands[1] == [*tpu, "scp", "/tmp/vlkg_src.tgz", "my-v4-32:~/", "--worker=all",
                         *zone]
  ssh = [*tpu, "ssh", "my-v4-32", "--worker=all", "--command"]
  assert commands[2][:8] == ssh and commands[2][9:] == zone
  assert "python3 -m pip install -q -r requirements.txt" in commands[2][8]
  assert f"'jax[tpu]=={JAX}'" in commands[2][8]
  assert commands[3][:8] == ssh and commands[3][9:] == zone
  assert shlex.split(commands[3][8]) == [
      "cd", "~/vlkg", "&&", "VLKG_DISTRIBUTED=1", "VLKG_DATA_DIR=gs://bucket/data",
      "nohup", "python3", "-m", "vlkg.main", "--config",
      "configs/clip.py:vit_b32,total_steps=10", "--workdir", "gs://bucket/runs/sc", ">",
      "~/vlkg_train.log", "2>&1", "&"]
  assert len(commands) == 4


def test_dry_run_rerun_and_checks(tmp_path):
  proc = _dry_run(tmp_path, ["--dry-run", "--config", "c", "--workdir=/mnt/runs/x"],
                  SETUP="0", PROJECT="my-project")
  assert proc.returncode == 0, proc.stderr
  [command] = [shlex.split(line) for line in proc.stdout.splitlines()]  # no copy, no install
  assert command[-4:] == ["--zone", "us-central2-b", "--project", "my-project"]
  assert "--workdir=/mnt/runs/x" in shlex.split(command[8])
  assert "/mnt/runs/x is not a gs:// path" in proc.stderr
  proc = _dry_run(tmp_path, ["--dry-run", "--config", "c"])
  assert proc.returncode == 2 and "--workdir is required" in proc.stderr
