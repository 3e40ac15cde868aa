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
