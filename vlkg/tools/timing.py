"""Timing for the benchmarks: timed repeats after a warm-up, and their median."""

import statistics
import time


def run_seconds(fn, repeats: int, warmup: int = 0) -> list[float]:
  """Wall seconds of each of ``repeats`` calls of ``fn``, after ``warmup`` calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
  return statistics.median(run_seconds(fn, repeats, warmup))


def interleaved_seconds(fns: dict, repeats: int,
                        warmup: int = 1) -> dict[str, list[float]]:
  """Wall seconds of each of ``fns`` (name -> callable), timed in alternation.

  Each round calls every function once, in the given order, so that a load that
  comes and goes on a shared machine slows them alike: the ratio of their medians
  is steadier than that of two separate runs.
  """
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return times
