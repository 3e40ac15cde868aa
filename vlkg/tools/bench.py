"""Benchmarks: measured figures, printed as lines and a final JSON line.

    python -m vlkg.tools.bench input [--config configs/clip.py]
    python -m vlkg.tools.bench step  [--config configs/clip.py] [--peer [transformers]
                                     [open_clip]] [--peer_compile] [--noratio]
    python -m vlkg.tools.bench parse
    python -m vlkg.tools.bench decompose [--config configs/mosaiclip.py]
    python -m vlkg.tools.bench shapley
    python -m vlkg.tools.bench retrieval [--retrieval_dtype float32]
    python -m vlkg.tools.bench prepare [--images 2000] [--image_size 224]
    python -m vlkg.tools.bench run   [--config configs/clip.py] [--steps 200]

Every figure is the median of ``--repeats`` timed runs after a warm-up, and the
machine is described in the output. Benchmarks are scripts, never tests.
"""

from __future__ import annotations

import json
import os
import platform

from absl import app, flags
from ml_collections import config_flags

from vlkg import console
from vlkg.tools import timing

_CONFIG = config_flags.DEFINE_config_file("config", "configs/clip.py", "Config file.",
                                          lock_config=True)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats; the median is reported.")
_RETRIEVAL_DTYPE = flags.DEFINE_enum("retrieval_dtype", "float32",
                                     ["float32", "bfloat16"],
                                     "retrieval: the dtype the entity keys are held in.")
_PEER = flags.DEFINE_bool("peer", False, "step: also time the PyTorch peers if installed "
                          "(all, or those named after the command: transformers, open_clip).")
_PEER_COMPILE = flags.DEFINE_bool("peer_compile", False,
                                  "step: torch.compile the open_clip peer's model.")
_IMAGES = flags.DEFINE_integer("images", 2000, "prepare: JPEGs in the generated corpus.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "prepare: the records' image side.")
_STEPS = flags.DEFINE_integer("steps", 200, "run: the training run's length in steps.")
_RATIO = flags.DEFINE_bool("ratio", True, "step: time CLIP's step in alternation with "
                           "a method's and report the method's cost as a multiple.")


def machine() -> dict:
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  import jax
  return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
          "jax_backend": jax.default_backend(), "jax_devices": jax.device_count()}


def median_rate(fn, items_per_call: int, repeats: int, warmup: int = 1) -> float:
  return items_per_call / timing.median_seconds(fn, repeats, warmup)


def bench_input(config, repeats: int) -> dict:
  from vlkg.data import input_pipeline, prepare, world as world_lib
  from vlkg.data.world import build, render, scene as scene_lib
  spec = build.world_spec(world_lib.settings(config))
  n = 2000

  def sample_and_render():
    for i in range(n):
      render.render(scene_lib.sample_scene(spec, "train", i))

  scenes = [scene_lib.sample_scene(spec, "train", i) for i in range(n)]

  def render_only():
    for s in scenes:
      render.render(s)

  out = {"image_size": spec.image_size}
  out["scenes_per_sec"] = median_rate(sample_and_render, n, repeats)
  out["render_only_scenes_per_sec"] = median_rate(render_only, n, repeats)
  print(f"world: {out['scenes_per_sec']:.0f} scenes/s sampled+rendered on one core "
        f"({out['render_only_scenes_per_sec']:.0f}/s render only) at "
        f"{spec.image_size}x{spec.image_size}")

  dataset_dir = prepare.ensure_prepared(config)
  batch_size, num_batches = 256, 40
  it = input_pipeline.train_iterator(dataset_dir, batch_size=batch_size, seed=0,
                                     shuffle_buffer=config.input.shuffle_buffer)
  for _ in range(10):
    next(it)

  def pull():
    for _ in range(num_batches):
      next(it)

  out["batch_size"] = batch_size
  out["examples_per_sec"] = median_rate(pull, batch_size * num_batches, repeats, warmup=0)
  print(f"input pipeline: {out['examples_per_sec']:.0f} examples/s at batch {batch_size} "
        "from prepared shards")
  return out


WHAT = ("input", "step", "parse", "decompose", "shapley", "retrieval", "prepare", "run")


def main(argv):
  peers = argv[2:] if len(argv) > 2 and argv[1] == "step" and _PEER.value else ()
  if len(argv) - len(peers) != 2 or argv[1] not in WHAT:
    raise app.UsageError(
        f"usage: python -m vlkg.tools.bench {{{'|'.join(WHAT)}}} [--config ...]")
  config = _CONFIG.value
  info = machine()
  print("machine:", ", ".join(f"{k}={v}" for k, v in info.items()))
  if argv[1] == "input":
    result = bench_input(config, _REPEATS.value)
  elif argv[1] == "parse":
    from vlkg.tools import bench_graphs
    result = bench_graphs.parse(repeats=_REPEATS.value)
  elif argv[1] == "decompose":
    from vlkg.tools import bench_graphs
    from vlkg.data import world as world_lib
    result = bench_graphs.decompose_cost(world_lib.settings(config), repeats=_REPEATS.value)
  elif argv[1] == "shapley":
    from vlkg.tools import bench_shapley
    result = bench_shapley.run(_REPEATS.value)
  elif argv[1] == "retrieval":
    from vlkg.tools import bench_retrieval
    result = bench_retrieval.run(_REPEATS.value, dtype=_RETRIEVAL_DTYPE.value)
  elif argv[1] == "prepare":
    from vlkg.tools import bench_prepare
    result = bench_prepare.run(config, _REPEATS.value, _IMAGES.value, _IMAGE_SIZE.value,
                               config.world.workers)
  elif argv[1] == "run":
    from vlkg.tools import bench_run
    result = bench_run.run(config, _REPEATS.value, _STEPS.value)
  else:
    from vlkg.tools import bench_step
    result = bench_step.run(config, _REPEATS.value, peers or _PEER.value, _RATIO.value,
                            _PEER_COMPILE.value)
  print(json.dumps({"what": argv[1], "machine": info, **result}))


if __name__ == "__main__":
  console.run(main)
