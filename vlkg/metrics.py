"""``metrics.jsonl`` (the contract) and TensorBoard events, plus progress logging.

One JSON object per logged step, with at least ``step``, ``loss`` and
``examples_per_sec``; eval metrics are written under their own names. On resume, lines
from steps after the restored checkpoint are dropped, so the file always describes
exactly one run of the steps it contains.
"""

from __future__ import annotations

import json
import math
import os
import time

from absl import logging

from vlkg.files import atomic_write

METRICS_FILE = "metrics.jsonl"


class MetricWriter:

  def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    if os.path.exists(self.path):
      _truncate_after(self.path, resume_step)
    try:
      import tensorflow as tf
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
    except Exception as e:  # TensorBoard is a convenience; metrics.jsonl is the record.
      logging.warning("no TensorBoard events: %s", e)

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    clean = {k: _plain(v) for k, v in metrics.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **clean}) + "\n")
    if self._tb is not None:
      import tensorflow as tf
      with self._tb.as_default(step=int(step)):
        for k, v in clean.items():
          if isinstance(v, (int, float)) and math.isfinite(v):
            # The low-level op with the "scalars" plugin tag is what
            # tf.summary.scalar writes, without needing the tensorboard package.
            tf.summary.write(k, tf.constant(float(v), tf.float32), metadata=_scalar_metadata())
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def _scalar_metadata():
  from tensorflow.core.framework import summary_pb2
  meta = summary_pb2.SummaryMetadata()
  meta.plugin_data.plugin_name = "scalars"
  return meta


def _plain(v):
  try:
    v = v.item()
  except AttributeError:
    pass
  return round(v, 6) if isinstance(v, float) else v


def _truncate_after(path: str, step: int) -> None:
  with open(path) as f:
    lines = [l for l in f if l.strip()]
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (json.JSONDecodeError, KeyError):
      pass  # a line cut by a kill mid-write
  atomic_write(path, "".join(kept))


class Progress:
  """Throughput and ETA between log steps."""

  def __init__(self, total_steps: int, batch_size: int, start_step: int):
    self.total, self.batch = total_steps, batch_size
    self._t, self._step = time.perf_counter(), start_step

  def tick(self, step: int) -> dict:
    now = time.perf_counter()
    steps = max(step - self._step, 1)
    dt = max(now - self._t, 1e-9)
    self._t, self._step = now, step
    rate = steps / dt
    eta = (self.total - step) / rate
    logging.info("step %d/%d (%.0f%%): %.2f steps/s, %.0f examples/s, ETA %s",
                 step, self.total, 100 * step / self.total, rate, rate * self.batch,
                 time.strftime("%H:%M:%S", time.gmtime(eta)))
    return {"steps_per_sec": rate, "examples_per_sec": rate * self.batch}

  def pause(self):
    """Excludes eval/checkpoint time from the next throughput figure."""
    self._paused = time.perf_counter()

  def resume(self):
    self._t += time.perf_counter() - getattr(self, "_paused", time.perf_counter())
