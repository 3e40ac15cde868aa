"""Evaluates a finished run from ``params.npz`` alone, in a fresh process.

    python -m vlkg.tools.evaluate --workdir DIR --benchmark world [--data DATASET_DIR] [--out FILE]

Prints one JSON object with the metrics (DESIGN.md metric names) and writes it to
``--out`` if given. For ``world`` the dataset defaults to the one the run was
trained on (from ``DIR/config.json``), and the metrics include phrase grounding on
its test split (``grounding/*``, `vlkg.evaluators.grounding`).
"""

import json
import os

from absl import app, flags

BENCHMARKS = ("aro_relation", "aro_attribution", "coco_order", "flickr_order",
              "sugarcrepe", "winoground", "retrieval", "world")

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory with params.npz.")
_BENCHMARK = flags.DEFINE_enum("benchmark", None, BENCHMARKS, "Benchmark to run.")
_DATA = flags.DEFINE_string("data", None, "Benchmark file or dataset directory.")
_IMAGES = flags.DEFINE_string("images", None, "Image root of a real benchmark.")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON here.")


def evaluate(workdir: str, benchmark: str, data: str | None = None,
             images: str | None = None) -> dict:
  from vlkg import api
  model = api.load(workdir)
  if benchmark == "world":
    from ml_collections import ConfigDict
    from vlkg.data import prepare
    from vlkg.evaluators import world
    if data is None:
      with open(os.path.join(workdir, "config.json")) as f:
        data = prepare.dataset_dir(ConfigDict(json.load(f)))
    return world.evaluate(model, data, splits=("test", "test_comp"))
  raise app.UsageError(
      f"--benchmark {benchmark}: readers for the real benchmarks are not part of this "
      "version yet; 'world' is available")


def main(argv):
  del argv
  result = evaluate(_WORKDIR.value, _BENCHMARK.value, _DATA.value, _IMAGES.value)
  text = json.dumps(result, sort_keys=True)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "benchmark"])
  app.run(main)
