"""vlkg.workdir_lock: one run per workdir, and no lock outlives its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from configs import clip
from vlkg import train, workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_second_holder_is_refused_naming_the_workdir(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lock.hold(workdir):
    with pytest.raises(workdir_lock.WorkdirInUseError,
                       match=f"workdir {workdir} is in use by another run "
                             rf"\(pid {os.getpid()} on "):
      with workdir_lock.hold(workdir):
        pass
  with workdir_lock.hold(workdir):  # released on leaving the block
    pass
  with workdir_lock.hold(workdir, enabled=False), workdir_lock.hold(workdir):
    pass  # a host other than process 0 takes no lock


def test_train_refuses_a_workdir_in_use(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lock.hold(workdir):
    # Refused before anything is prepared or written.
    with pytest.raises(workdir_lock.WorkdirInUseError, match=f"workdir {workdir} is in use"):
      train.train_and_evaluate(clip.get_config(f"smoke,data_dir='{tmp_path}/data'"),
                               workdir)
  assert sorted(os.listdir(workdir)) == ["run.lock"]
  assert not os.path.exists(tmp_path / "data")


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path):
  workdir = str(tmp_path / "run")
  code = ("import sys, time\nfrom vlkg import workdir_lock\n"
          "with workdir_lock.hold(sys.argv[1]):\n"
          "  print('held', flush=True)\n  time.sleep(120)\n")
  proc = subprocess.Popen([sys.executable, "-c", code, workdir], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lock.WorkdirInUseError, match=f"pid {proc.pid} on "):
      with workdir_lock.hold(workdir):
        pass
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  with workdir_lock.hold(workdir):  # the kernel dropped the dead process's lock
    assert open(os.path.join(workdir, "run.lock")).read().startswith(f"pid {os.getpid()} ")
