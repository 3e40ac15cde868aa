"""An opt-in pytest plugin that logs every XLA compile of the test processes.

    python -m pytest -q -p tests.compile_log --compile-log=DIR

writes ``DIR/<worker>.json`` (``gw0``, ``gw1``, ... or ``main``): a list of
``[program name, seconds, test id]``, one per compile, where the program name is
JAX's (``jit_update_step``, or ``jit_multiply`` for one operation run outside
``jax.jit``). A compile answered by the persistent compilation cache is not
listed. It wraps JAX's private ``jax._src.compiler.backend_compile_and_load``, so a
JAX release may move it; the suite itself never loads this plugin.
"""

import json
import os
import time

import pytest

_RECORDS = pytest.StashKey()  # (folder, the compiles logged so far)


def pytest_addoption(parser):
  parser.addoption("--compile-log", default=None,
                   help="folder for one JSON list of XLA compiles per test process")


def pytest_configure(config):
  folder = config.getoption("--compile-log")
  if not folder:
    return
  from jax._src import compiler
  compile_and_load, records = compiler.backend_compile_and_load, []

  def timed(backend, module, *args, **kwargs):
    start = time.perf_counter()
    try:
      return compile_and_load(backend, module, *args, **kwargs)
    finally:
      name = str(module.operation.attributes["sym_name"]).strip('"')
      test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
      records.append([name, time.perf_counter() - start, test])

  compiler.backend_compile_and_load = timed
  config.stash[_RECORDS] = (folder, records)


def pytest_sessionfinish(session):
  found = session.config.stash.get(_RECORDS, None)
  if found is None:
    return
  folder, records = found
  os.makedirs(folder, exist_ok=True)
  worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
  with open(os.path.join(folder, f"{worker}.json"), "w") as f:
    json.dump(records, f)
