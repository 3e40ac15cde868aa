"""``metrics.jsonl`` (the contract) and TensorBoard events, plus what the console shows.

One JSON object per logged step, with at least ``step``, ``loss`` and
``examples_per_sec``; eval metrics are written under their own names. On resume, lines
from steps after the restored checkpoint are dropped, so the file always describes
exactly one run of the steps it contains.

On the console, each log step is one line: the loss and the main training metrics
(`TRAIN_KEYS`), then steps/s, examples/s and an ETA that counts the evals still to
come (`Progress`). Each eval prints a short table of its headline metrics
(`HEADLINE`: retrieval R@1, attribute and relation swaps, grounding, the real
benchmarks' main figures). A method module may name more of its own metrics, train
or eval, in an optional ``HEADLINE`` tuple of regexes (e.g. LOUPE's
``("ssim", "fallback_rate")``); they are shown beside these.
"""

from __future__ import annotations

import json
import math
import os
import re
import time

from absl import logging

from vlkg import files
from vlkg.files import atomic_write

METRICS_FILE = "metrics.jsonl"

# Regexes (full match) over the DESIGN.md metric names: what an eval table and the
# end-of-run summary show, in this order.
HEADLINE = (
    r"retrieval/[^/]+/(image_to_text|text_to_image)_R@1",
    r"world(_[a-z]+)?/attribute_swap",
    r"world(_[a-z]+)?/relation_swap",
    r"grounding/(pointing_acc|iou50_acc)",
    r"aro_(relation|attribution)/macro_accuracy",
    r"(coco|flickr)_order/precision@1",
    r"winoground/(text|image|group)",
)
# What each log line shows beside the throughput, where the method reports it.
TRAIN_KEYS = ("loss", "i2t_acc", "t2i_acc", "grad_norm", "lr")


class MetricWriter:

  def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    if files.exists(self.path):
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
    files.append_text(self.path, json.dumps({"step": int(step), **clean}) + "\n")
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
  with files.open(path) as f:
    lines = [l for l in f if l.strip()]
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (json.JSONDecodeError, KeyError):
      pass  # a line cut by a kill mid-write
  atomic_write(path, "".join(kept))


def read_final(path: str) -> dict:
  """The latest value of every metric in a ``metrics.jsonl`` (``path``, or the
  workdir that holds it), with ``step`` the last line's step; {} if there is none.

  This is what a run ended with: its last log step and its last eval."""
  if files.isdir(path):
    path = os.path.join(path, METRICS_FILE)
  out = {}
  if not files.exists(path):
    return out
  with files.open(path) as f:
    for line in f:
      try:
        out.update(json.loads(line))
      except json.JSONDecodeError:
        pass  # a line cut by a kill mid-write
  return out


def select(metrics: dict, patterns) -> list[str]:
  """The names in ``metrics`` with a number that fully match one of ``patterns``
  (regexes), in the order of the patterns, then of ``metrics``."""
  out = []
  for pattern in patterns:
    rx = re.compile(pattern)
    out += [k for k, v in metrics.items() if k not in out and rx.fullmatch(k)
            and isinstance(v, (int, float)) and not isinstance(v, bool)]
  return out


def headline(metrics: dict, extra=(), select_metric: str = "") -> list[str]:
  """The headline metrics of ``metrics``: `HEADLINE`, a method's ``extra`` patterns,
  and the run's ``select_metric`` with ``selected_step`` (params_best.npz)."""
  chosen = [re.escape(select_metric), "selected_step"] if select_metric else []
  return select(metrics, (*HEADLINE, *extra, *chosen))


def format_value(v) -> str:
  """Four significant digits; scientific for the very small or large (an lr)."""
  if isinstance(v, int) and not isinstance(v, bool):
    return str(v)
  v = float(v)
  if math.isfinite(v) and v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
    return f"{v:.2e}"
  return f"{v:.4g}"


def format_duration(seconds: float) -> str:
  """``42s``, ``4m05s``, ``2h03m``."""
  s = int(round(max(seconds, 0)))
  if s < 60:
    return f"{s}s"
  m, s = divmod(s, 60)
  if m < 60:
    return f"{m}m{s:02d}s"
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m"


def format_table(metrics: dict, names, indent: str = "  ") -> str:
  """One ``name  value`` line per name, the values aligned."""
  width = max((len(n) for n in names), default=0)
  return "\n".join(f"{indent}{n:<{width}}  {format_value(metrics[n])}" for n in names)


def log_eval(step: int | None, results: dict, seconds: float, extra=(),
             select_metric: str = "") -> None:
  """The eval table of the console: the headline metrics of ``results`` (of the
  train step ``step``; None for a finished run's params)."""
  names = headline(results, extra, select_metric)
  body = format_table(results, names) if names else "  (no headline metric)"
  at = "" if step is None else f" at step {step}"
  logging.info("eval%s (%.1fs):\n%s", at, seconds, body)


def evals_left(step: int, total_steps: int, every: int | None) -> int:
  """How many evals are still to run when step ``step`` is logged: those due at
  steps ``step..total_steps`` (the trainer logs a step before it evaluates it),
  i.e. every ``every`` steps and always at the end; ``every`` None: no evals."""
  if every is None or step > total_steps:
    return 0
  if every <= 0:
    return 1
  multiples = total_steps // every - (step - 1) // every
  return multiples + (0 if total_steps % every == 0 else 1)


class Progress:
  """The log line: training metrics, throughput, and an ETA with the evals to come.

  Throughput is measured between log steps with eval time left out (`pause` /
  `resume` around each eval). The ETA is the remaining steps at that rate plus
  the evals still to come at the duration of the latest eval (the first one
  includes compiling the eval towers, so the estimate falls after the second).
  """

  def __init__(self, total_steps: int, batch_size: int, start_step: int, *,
               eval_every: int | None = None, show=TRAIN_KEYS):
    """``eval_every``: the eval period in steps (0: only at the end), None when the
    run has no evals; ``show``: regexes of the metrics each line shows."""
    self.total, self.batch = total_steps, batch_size
    self.eval_every, self.show = eval_every, tuple(show)
    self.eval_seconds = None  # wall time of the latest eval
    self._t, self._step = time.perf_counter(), start_step

  def eta(self, step: int, steps_per_sec: float) -> tuple[float, bool]:
    """(seconds left, whether that counts every eval still to come)."""
    evals = evals_left(step, self.total, self.eval_every)
    seconds = (self.total - step) / steps_per_sec
    if evals and self.eval_seconds is not None:
      seconds += evals * self.eval_seconds
    return seconds, not evals or self.eval_seconds is not None

  def tick(self, step: int, metrics: dict | None = None) -> dict:
    """Logs the line of ``step``; returns ``steps_per_sec`` and ``examples_per_sec``."""
    now = time.perf_counter()
    steps = max(step - self._step, 1)
    dt = max(now - self._t, 1e-9)
    self._t, self._step = now, step
    rate = steps / dt
    eta, complete = self.eta(step, rate)
    metrics = metrics or {}
    shown = "  ".join(f"{k} {format_value(metrics[k])}" for k in select(metrics, self.show))
    logging.info("step %d/%d (%.0f%%)  %s  |  %.2f steps/s, %.0f examples/s, ETA %s%s",
                 step, self.total, 100 * step / self.total, shown, rate, rate * self.batch,
                 format_duration(eta), "" if complete else " + evals")
    return {"steps_per_sec": rate, "examples_per_sec": rate * self.batch}

  def pause(self):
    """Before an eval: its time is left out of the next throughput figure."""
    self._paused = time.perf_counter()

  def resume(self) -> float:
    """After an eval: returns its seconds, the estimate for the evals to come."""
    now = time.perf_counter()
    paused = now - getattr(self, "_paused", now)
    self._t += paused
    self.eval_seconds = paused
    return paused
