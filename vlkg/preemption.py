"""Pre-emption: SIGTERM or SIGINT saves a checkpoint at the current step, then exits.

Spot and pre-emptible TPU VMs get SIGTERM some seconds before they are taken away;
Ctrl-C sends SIGINT. Either way the run finishes the step in flight, saves the state
at that step, waits until the save is on disk, logs where it is, and exits with
``128 + signal number`` (143 for SIGTERM, 130 for SIGINT): what a shell reports for
a process that a signal ended, so that ``main && evaluate`` or a job scheduler sees
that the run did not finish. The same command resumes it (DESIGN.md, "Checkpoints").

On several hosts every host must save the same step, or the checkpoint mixes
steps. jax's pre-emption sync manager agrees on one: when any host gets SIGTERM it
tells the others through the coordination service, and
``multihost_utils.reached_preemption_sync_point(step)`` turns true on every host at
the same step. orbax's ``CheckpointManager.reached_preemption`` is that call
(``Checkpointer.reached_preemption``). The sync manager exists only after
``jax.distributed.initialize``, and it catches SIGTERM in C++; so

* with jax.distributed initialised, SIGTERM is left to it (a Python handler would
  replace its handler), and SIGINT is turned into a SIGTERM to this process, so that
  Ctrl-C on one host also reaches the others;
* in a single process, ``reached_preemption`` is always False (there is no
  coordination service), and a Python handler sets a local flag instead.

A second Ctrl-C while the save is pending stops at once (Python's usual
KeyboardInterrupt), without saving.
"""

from __future__ import annotations

import signal
import time

import jax
from absl import logging

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SystemExit):
  """The run stopped at a signal after saving; ``code`` is 128 + the signal number."""

  def __init__(self, message: str, signum: int):
    super().__init__(128 + signum)
    self.message, self.signum = message, signum

  def __str__(self) -> str:
    return self.message


def synced() -> bool:
  """Whether jax's pre-emption sync manager runs: jax.distributed is initialised and
  its pre-emption service (``jax_enable_preemption_service``, on by default) is on.
  Without it each process watches its own signals."""
  return (jax.distributed.is_initialized()
          and bool(getattr(jax.config, "jax_enable_preemption_service", True)))


class Watcher:
  """Catches SIGTERM and SIGINT while it is open; ``reached(step)`` says when to stop.

  Signal handlers can only be set from the main thread; elsewhere (a run started
  from a worker thread) the watcher relies on jax's sync manager alone and logs so.
  """

  def __init__(self, checkpointer):
    self._ckpt = checkpointer
    self.signum: int | None = None
    self._previous = {}
    self._synced = synced()

  def __enter__(self) -> "Watcher":
    try:
      if self._synced:
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._forward)
      else:
        for signum in SIGNALS:
          self._previous[signum] = signal.signal(signum, self._flag)
    except ValueError:  # not the main thread
      logging.warning("not in the main thread: SIGTERM/SIGINT will not save a checkpoint")
    else:
      logging.info("from here on SIGTERM or SIGINT%s saves the step in flight and stops",
                   " on any host" if self._synced else "")
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """Puts back the handlers that were there before."""
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _flag(self, signum, frame) -> None:
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now
    self.signum = self.signum or signum
    logging.warning("received %s: saving a checkpoint after the step in flight%s",
                    signal.Signals(signum).name,
                    "; press Ctrl-C again to stop without saving"
                    if signum == signal.SIGINT else "")

  def _forward(self, signum, frame) -> None:
    del signum, frame
    if self.signum is not None:
      raise KeyboardInterrupt
    self.signum = signal.SIGINT
    logging.warning("received SIGINT: passing it to every host as a pre-emption notice")
    signal.raise_signal(signal.SIGTERM)  # to jax's notifier, which tells the others

  def reached(self, step: int) -> bool:
    """Whether to save and stop before training ``step``; every host gets the same
    answer for the same step. Call it at every step (jax's sync protocol needs it)."""
    if self._synced:
      if self._ckpt.reached_preemption(step):
        self.signum = self.signum or signal.SIGTERM
        return True
      return False
    return self.signum is not None

  def stop(self, step: int, state, start_step: int):
    """Saves ``state`` as ``step`` (unless that step is already on disk), waits for
    it, and raises ``Preempted``. All hosts call it at the same step."""
    name = signal.Signals(self.signum).name
    start = time.perf_counter()
    if step == start_step:
      where = (f"no step had run since the start; the same command starts again from "
               f"step {step}")
    else:
      self._ckpt.save(step, state, force=True)
      self._ckpt.wait()
      where = f"checkpoint saved to {self._ckpt.directory}/{step}"
    message = (f"pre-empted ({name}) at step {step}: {where} "
               f"({time.perf_counter() - start:.1f}s); run the same command to resume")
    logging.warning(message)
    raise Preempted(message, self.signum)
