"""``bench run``: a real training run's throughput against the isolated step's, and
what its evals cost.

The isolated figure is ``bench step``'s (the jitted update alone, on one prepared
batch). The run is the config itself, cut to ``--steps`` steps with an eval at its
start and its end: its input pipeline, logging, checkpoints and evals all run, and
its throughput is the median ``examples_per_sec`` of its log lines after the first
(which holds compilation; the trainer leaves eval time out of these figures). The
evals' share of the config's full run is then projected from the measured parts:
the first eval (which compiles the eval towers), a later one, the config's number
of evals and its steps at the in-run rate.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

from vlkg import metrics as metrics_lib, train
from vlkg.tools import bench_step


def eval_count(total_steps: int, eval_every: int) -> int:
  """How many evals a run of ``total_steps`` makes: those the trainer's ETA counts
  from its start (at step 0, every ``eval_every`` steps and at the end)."""
  return metrics_lib.evals_left(0, total_steps, eval_every)


def eval_share(total_steps: int, eval_every: int, steps_per_sec: float,
               first_eval: float, later_eval: float) -> float:
  """The fraction of a run's time that its evals take."""
  n = eval_count(total_steps, eval_every)
  evals = first_eval + (n - 1) * later_eval
  return evals / (total_steps / steps_per_sec + evals)


def run(config, repeats: int, steps: int) -> dict:
  isolated = bench_step.run(config, repeats, peer=False, ratio=False)
  short = config.copy_and_resolve_references()
  with short.unlocked():
    short.total_steps = steps
    short.eval_every_steps = steps
  workdir = tempfile.mkdtemp(prefix="vlkg-bench-run-")
  start = time.perf_counter()
  train.train_and_evaluate(short, workdir)
  wall = time.perf_counter() - start
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  rates = [l["examples_per_sec"] for l in lines if "examples_per_sec" in l][1:]
  evals = [l["eval_seconds"] for l in lines if "eval_seconds" in l]
  if not rates or len(evals) < 2:
    raise ValueError(f"--steps={steps} gives {len(rates) + 1} log lines and {len(evals)} "
                     f"evals; it needs at least 2 of each (log_every_steps="
                     f"{config.log_every_steps})")
  in_run = statistics.median(rates)
  batch = config.input.batch_size
  out = {
      "isolated_examples_per_sec": isolated["examples_per_sec"],
      "in_run_examples_per_sec": in_run,
      "in_run_over_isolated": in_run / isolated["examples_per_sec"],
      "run_steps": steps,
      "run_wall_seconds": wall,
      "first_eval_seconds": evals[0],
      "later_eval_seconds": evals[-1],
      "full_run_steps": config.total_steps,
      "full_run_evals": eval_count(config.total_steps, config.eval_every_steps),
      "full_run_eval_share": eval_share(config.total_steps, config.eval_every_steps,
                                        in_run / batch, evals[0], evals[-1]),
  }
  print(f"in-run throughput {in_run:.0f} examples/s (median of {len(rates)} log lines) "
        f"against {isolated['examples_per_sec']:.0f} isolated: "
        f"{out['in_run_over_isolated']:.2f}x")
  print(f"evals: {evals[0]:.1f} s the first (compiles the eval towers), "
        f"{evals[-1]:.1f} s later; {out['full_run_evals']} of them in the full "
        f"{config.total_steps}-step run: {out['full_run_eval_share']:.1%} of its time")
  return out
