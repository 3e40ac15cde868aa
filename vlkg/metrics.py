"""``metrics.jsonl`` (the contract), TensorBoard and W&B through clu, and what the
console shows.

One JSON object per logged step, with at least ``step``, ``loss`` and
``examples_per_sec``; eval metrics are written under their own names. On resume, lines
from steps after the restored checkpoint are dropped, so the file always describes
exactly one run of the steps it contains. Every finite number of a line also goes to
clu's metric writers (``clu.metric_writers``, as in big_vision and scenic): a
``SummaryWriter`` for ``tensorboard/``, and Weights & Biases when
``config.wandb.project`` is set (`vlkg.wandb_writer`).

On the console, each log step is one line: the loss and the main training metrics
(`TRAIN_KEYS`), then steps/s, examples/s and an ETA that counts the evals still to
come (`Progress`, a ``clu.periodic_actions.ReportProgress``). Each eval prints a short table of its headline metrics
(`HEADLINE`: retrieval R@1, attribute and relation swaps, grounding, the real
benchmarks' main figures). A method module may name more of its own metrics, train
or eval, in an optional ``HEADLINE`` tuple of regexes (e.g. LOUPE's
``("ssim", "fallback_rate")``); they are shown beside these.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time

from absl import logging
from clu import metric_writers, periodic_actions

from vlkg import files, wandb_writer
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
  """``metrics.jsonl``, and its numbers through clu's metric writers."""

  def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True,
               wandb_project: str = "", run_config: dict | None = None):
    """``enabled``: False on every process but 0 of a multi-host run.
    ``wandb_project``: a W&B project to log to as well ("" = off); ``run_config``:
    the resolved config, which W&B records with the run."""
    self.path = os.path.join(workdir, METRICS_FILE)
    self.enabled = enabled
    self._writer = None
    if not enabled:
      return
    if files.exists(self.path):
      _truncate_after(self.path, resume_step)
    writers = []
    try:
      writers.append(metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard")))
    except Exception as e:  # TensorBoard is a convenience; metrics.jsonl is the record.
      logging.warning("no TensorBoard events: %s", e)
    wandb = wandb_writer.create(wandb_project, workdir, run_config or {})
    if wandb is not None:
      writers.append(wandb)
    self._writer = metric_writers.MultiWriter(writers)

  @property
  def writer(self) -> metric_writers.MetricWriter | None:
    """The clu writer (TensorBoard, W&B), for what is no line of metrics.jsonl."""
    return self._writer

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    clean = {k: _plain(v) for k, v in metrics.items()}
    files.append_text(self.path, json.dumps({"step": int(step), **clean}) + "\n")
    numbers = {k: v for k, v in clean.items() if isinstance(v, (int, float))
               and not isinstance(v, bool) and math.isfinite(v)}
    if numbers:
      self._writer.write_scalars(int(step), numbers)
      self._writer.flush()  # a killed run keeps every event written so far

  def close(self):
    if self._writer is not None:
      self._writer.close()


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


class Progress(periodic_actions.ReportProgress):
  """The log line: training metrics, throughput, and an ETA with the evals to come.

  clu's ``ReportProgress`` keeps the clock: the trainer calls ``tick`` at its log
  steps (which triggers clu's ``_apply``) and wraps each eval in ``timed("eval")``;
  with a ``writer``, clu's ``uptime`` scalar goes to TensorBoard.
  The line itself is vlkg's, because it says more than clu's work-unit note:
  throughput is measured between log steps with the time of timed parts (evals)
  left out, in steps/s and examples/s, and the ETA is the remaining steps at that
  rate plus the evals still to come at the duration of the latest eval (the first
  one includes compiling the eval towers, so the estimate falls after the second).
  """

  def __init__(self, total_steps: int, batch_size: int, start_step: int, *,
               eval_every: int | None = None, show=TRAIN_KEYS,
               writer: metric_writers.MetricWriter | None = None):
    """``eval_every``: the eval period in steps (0: only at the end), None when the
    run has no evals; ``show``: regexes of the metrics each line shows; ``writer``:
    where clu writes its ``uptime`` scalar (None: nowhere); the rates that ``tick``
    returns go into metrics.jsonl with the rest of the line."""
    super().__init__(num_train_steps=total_steps, writer=writer, every_secs=None)
    self.total, self.batch = total_steps, batch_size
    self.eval_every, self.show = eval_every, tuple(show)
    self.eval_seconds = None  # wall time of the latest eval
    self._metrics, self._rates, self._timed_at_last = {}, {}, 0.0
    self(start_step, time.perf_counter())  # clu's first call only starts the clock

  def _should_trigger(self, step: int, t: float) -> bool:
    del t  # the trainer calls at its log steps only; the first call starts the clock
    return step != self._previous_step

  def eta(self, step: int, steps_per_sec: float) -> tuple[float, bool]:
    """(seconds left, whether that counts every eval still to come)."""
    evals = evals_left(step, self.total, self.eval_every)
    seconds = (self.total - step) / steps_per_sec
    if evals and self.eval_seconds is not None:
      seconds += evals * self.eval_seconds
    return seconds, not evals or self.eval_seconds is not None

  def tick(self, step: int, metrics: dict | None = None) -> dict:
    """Logs the line of ``step``; returns ``steps_per_sec`` and ``examples_per_sec``."""
    self._metrics = metrics or {}
    self(step, time.perf_counter())
    return self._rates

  def _apply(self, step: int, t: float) -> None:
    timed = sum(self._time_per_part.values())
    steps = max(step - self._previous_step, 1)
    dt = max(t - self._previous_time - (timed - self._timed_at_last), 1e-9)
    self._timed_at_last = timed
    rate = steps / dt
    eta, complete = self.eta(step, rate)
    metrics = self._metrics
    shown = "  ".join(f"{k} {format_value(metrics[k])}" for k in select(metrics, self.show))
    logging.info("step %d/%d (%.0f%%)  %s  |  %.2f steps/s, %.0f examples/s, ETA %s%s",
                 step, self.total, 100 * step / self.total, shown, rate, rate * self.batch,
                 format_duration(eta), "" if complete else " + evals")
    if self._writer is not None:  # steps/s goes out with the returned rates
      self._writer.write_scalars(step, {"uptime": time.monotonic() - self._t0})
    self._rates = {"steps_per_sec": rate, "examples_per_sec": rate * self.batch}

  @contextlib.contextmanager
  def timed(self, name: str, wait_jax_async_dispatch: bool = False):
    """Times a part of the loop (``"eval"``) as clu's ``timed`` does, on the clock
    of the log line; its time is left out of the next throughput figure. vlkg's
    evals end in host transfers, so wall time is their device time and clu's
    async-dispatch barrier is not needed."""
    del wait_jax_async_dispatch
    start = time.perf_counter()
    try:
      yield
    finally:
      seconds = time.perf_counter() - start
      self._time_per_part[name] += seconds
      if name == "eval":
        self.eval_seconds = seconds
