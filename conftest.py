"""Test-wide setup: 8 fake CPU devices for mesh tests, XLA compiling at -O0, quiet
TensorFlow, and one compilation cache for the session.

Many tests compile the same small programs (a tiny CLIP step, its evaluation), in
this process and in the runs they start as subprocesses. JAX's persistent
compilation cache, in a directory of the session's own that is removed at its end,
compiles each of them once.
"""

import os
import shutil
import tempfile

# The tests' programs are small and run a few steps each, so compiling them is
# most of the suite's time: XLA's CPU backend at LLVM -O0 compiles them about 30%
# faster (a set of four training tests: 92-100 s at the default level, 68-72 s).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vlkg-tests-xla-")
  # Every program, however small or quick to compile (the defaults skip those).
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def pytest_sessionfinish(session, exitstatus):
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
