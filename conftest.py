"""Test-wide setup: fake CPU devices (two; eight for the tests marked ``devices(8)``,
tests/devices.py), XLA compiling at -O0, quiet TensorFlow, and one compilation cache
for the session.

Many tests compile the same small programs (a tiny CLIP step, its evaluation), in
this process and in the runs they start as subprocesses. JAX's persistent
compilation cache, in a directory of the session's own that is removed at its end,
compiles each of them once.
"""

import os
import shutil
import tempfile

import pytest

from tests import devices, xla_flags

# Fake devices for the mesh tests, and a fast compile (tests/xla_flags.py).
os.environ.setdefault("XLA_FLAGS", xla_flags.with_devices(xla_flags.TEST_DEVICES))
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


# The files whose tests train or run whole programs, longest first (about 10-65 s
# each on 2 cores; `python -m pytest --durations=0`). The test workers take files in
# collection order (pytest.ini turns off xdist's reordering by test count), so these
# start first and the many short files fill in around them. In xdist's order a
# one-test 40-second file came last and kept one worker busy after the other had
# finished.
LONGEST_FIRST = (
    devices.RUNNER,
    "tests/test_train.py",
    "tests/methods/test_reavl.py",
    "tests/test_api.py",
    "tests/test_interruptions.py",
    "tests/methods/test_knowledge_clip.py",
    "tests/methods/test_loupe.py",
    "tests/test_main.py",
    "tests/models/test_knowledge_augmented.py",
    "tests/test_colab.py",
    "tests/methods/test_structure_clip.py",
    "tests/models/test_text_packing.py",
    "tests/methods/test_toy_method.py",
    "tests/methods/test_knowledge_clip_loss.py",
    "tests/tools/test_plot_interactions.py",
    "tests/convert/test_open_clip_parity.py",
    "tests/evaluators/test_real_benchmarks.py",
    "tests/methods/test_mosaiclip.py",
    "tests/data/test_input_pipeline.py",
    "tests/models/test_tower_masks.py",
    "tests/models/test_towers.py",
    "tests/test_cloud_paths.py",
)


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected theirs
def pytest_collection_modifyitems(session, config, items):
  devices.defer(config, items)
  rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
