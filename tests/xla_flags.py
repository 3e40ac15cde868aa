"""XLA flags for the tests: fake CPU devices, and a fast compile.

The tests' programs are small and run a few steps each, so compiling them is most
of the suite's time. XLA's CPU backend compiles them much faster at LLVM -O0 and
with its elemental emitter instead of the MLIR fusion emitters, which build their
rewrite patterns anew for every fusion. Measured on the 2-core machine:

* four training tests in one process: 92-100 s at the default level, 68-72 s at -O0;
* two small training runs in one process (CLIP, then Structure-CLIP from it):
  28.0 s of CPU at -O0, 22.7 s at -O0 without the fusion emitters;
* the smoke ``python -m vlkg.main`` run of tests/test_main.py: 24.4 s of CPU with
  no flags, 12.7 s with both.

Two more flags cut what is left of the compile: LLVM's expensive passes off (what
``JAX_DISABLE_MOST_OPTIMIZATIONS`` also turns off), and the machine code of a
program emitted as one module rather than split into several that are compiled
in parallel. The suite's processes already keep the cores busy, and each split
module costs its own set-up. tests/models/test_knowledge_augmented.py compiled its
128 programs in 15.4-18.2 s without the two, 12.1-13.1 s with them (2-core
machine, interleaved runs, `-p tests.compile_log`); over the whole suite the cut
is within its run-to-run spread (docs/results.md, "The test suite").

No flag changes what a program computes beyond floating-point rounding.
"""

import re

FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
                "--xla_llvm_disable_expensive_passes=true "
                "--xla_cpu_parallel_codegen_split_count=1")

# Fake CPU devices of the suite's processes: two, so that every trainer, evaluator
# and encoder test runs sharded over a mesh of more than one device. The tests marked
# ``devices(8)`` (meshes of two axes, 1 against 8 devices, the sharded index) run
# in a process of their own with eight (tests/devices.py). Each step of a
# program partitioned over eight fake devices runs eight partitions on the two
# cores: the whole suite took 14 min 53 s of CPU with eight, 10 min 17 s with two.
TEST_DEVICES = 2


def with_devices(n: int) -> str:
  """``XLA_FLAGS`` for a process with ``n`` fake CPU devices that compiles fast."""
  return f"--xla_force_host_platform_device_count={n} {FAST_COMPILE}"


def device_count(flags: str) -> int:
  """The fake CPU devices that ``XLA_FLAGS`` asks for (1 when it does not say)."""
  found = re.findall(r"--xla_force_host_platform_device_count=(\d+)", flags)
  return int(found[-1]) if found else 1
