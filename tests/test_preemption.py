"""vlkg.preemption in this process: a signal is caught, the step saved, the exit code
set. The real runs that are signalled and resumed are in tests/test_train.py."""

from __future__ import annotations

import os
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from vlkg import checkpoint, preemption


def _state(step):
  return {"step": jnp.asarray(step, jnp.int32), "params": {"w": jnp.arange(4.0) + step}}


def test_sigterm_saves_the_current_step_and_exits_143(tmp_path, caplog):
  before = signal.getsignal(signal.SIGTERM)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  with preemption.Watcher(ckpt) as watcher:
    assert not watcher.reached(3)
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this (main) thread
    assert watcher.signum == signal.SIGTERM
    assert watcher.reached(5)
    with caplog.at_level("WARNING"), pytest.raises(preemption.Preempted) as stopped:
      watcher.stop(5, _state(5), start_step=2)
  assert signal.getsignal(signal.SIGTERM) is before
  assert stopped.value.code == 143
  message = str(stopped.value)
  assert message.startswith("pre-empted (SIGTERM) at step 5: checkpoint saved to "
                            f"{tmp_path}/checkpoints/5")
  assert message.endswith("run the same command to resume") and message in caplog.text
  # The save is on disk before the exception leaves stop().
  assert ckpt.all_steps() == [5]
  step, params = checkpoint.load_checkpoint_params(str(tmp_path))
  assert step == 5
  np.testing.assert_array_equal(params["w"], np.arange(4.0) + 5)
  ckpt.close()


def test_sigint_saves_once_and_a_second_one_stops_at_once(tmp_path):
  before = signal.getsignal(signal.SIGINT)
  with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
    with preemption.Watcher(ckpt) as watcher:
      os.kill(os.getpid(), signal.SIGINT)
      assert watcher.reached(7)
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes
          pass
      # No step had run since the start (the step it resumed from): nothing to save.
      with pytest.raises(preemption.Preempted, match=r"\(SIGINT\) at step 7: no step had "
                         "run since the start") as stopped:
        watcher.stop(7, _state(7), start_step=7)
    assert stopped.value.code == 130
    assert ckpt.all_steps() == []
  assert signal.getsignal(signal.SIGINT) is before


def test_single_process_is_not_synced():
  # jax's pre-emption sync manager needs jax.distributed; a lone process watches its
  # own signals (tests/test_multihost.py has the synced case).
  assert not preemption.synced()
