"""Tests that need more fake devices than the suite's processes have.

``@pytest.mark.devices(n)`` marks a test that needs ``n`` devices (a mesh of two
axes, 1 against 8 devices, the index sharded eight ways). The suite's processes
have ``xla_flags.TEST_DEVICES``, since every program partitioned over more fake
devices runs that many partitions on the machine's cores. In a process with fewer
than ``n`` devices such a test is deselected, and ``tests/test_devices.py`` runs all
of them in one process of their own with ``n`` devices. Where that runner is not
collected (a run of one file), each is skipped with the command that runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = "tests/test_devices.py"
# Node ids of the deselected tests, by the devices they need.
DEFERRED = pytest.StashKey[dict]()


def available() -> int:
  return xla_flags.device_count(os.environ.get("XLA_FLAGS", ""))


def defer(config, items: list) -> None:
  """Deselects (or, without the runner, skips) the tests that need more devices."""
  have = available()
  needs = {}
  for item in items:
    marker = item.get_closest_marker("devices")
    if marker is not None and marker.args[0] > have:
      needs[item] = marker.args[0]
  deferred = {}
  for item, n in needs.items():
    deferred.setdefault(n, []).append(item.nodeid)
  config.stash[DEFERRED] = deferred
  if not needs:
    return
  if any(item.nodeid.startswith(RUNNER + "::") for item in items):
    config.hook.pytest_deselected(items=list(needs))
    items[:] = [item for item in items if item not in needs]
    return
  for item, n in needs.items():
    item.add_marker(pytest.mark.skip(
        reason=f"needs {n} devices, this process has {have}: "
               f"XLA_FLAGS=--xla_force_host_platform_device_count={n} "
               f"python -m pytest {item.nodeid}"))


def run_with_devices(n: int, nodeids: list[str]) -> subprocess.CompletedProcess:
  """Runs ``nodeids`` in one pytest process (no test workers) with ``n`` devices."""
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
  env = dict(os.environ, XLA_FLAGS=flags.strip())
  return subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", *nodeids],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


def passed(stdout: str) -> int:
  found = re.findall(r"(\d+) passed", stdout)
  return int(found[-1]) if found else 0
