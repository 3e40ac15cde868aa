"""Linear probes of a run's image embedding on the world (``vlkg.evaluators.probe``).

    python -m vlkg.tools.probe --workdir DIR [--data DATASET_DIR] [--fit val --score test]

Prints one JSON object: ``probe/shape``, ``probe/color``, ``probe/size``,
``probe/texture`` (accuracy on one-object images of ``--score``) and each one's
``_chance`` (the majority class).
"""

import json

from absl import flags

from vlkg import console

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory with params.npz.")
_DATA = flags.DEFINE_string("data", None, "Prepared world; default: the run's own.")
_FIT = flags.DEFINE_string("fit", "val", "Split the probes are fitted on.")
_SCORE = flags.DEFINE_string("score", "test", "Split the probes are scored on.")


def main(argv):
  del argv
  from vlkg import api
  from vlkg.data import prepare
  from vlkg.evaluators import probe
  dataset_dir = _DATA.value or prepare.run_dataset_dir(_WORKDIR.value)
  result = probe.evaluate(api.load(_WORKDIR.value), dataset_dir, _FIT.value, _SCORE.value)
  print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  console.run(main)
