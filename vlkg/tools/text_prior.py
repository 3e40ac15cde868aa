"""Sighted vs blind attribute-swap scores of a run (``vlkg.evaluators.text_prior``).

    python -m vlkg.tools.text_prior --workdir DIR [--data DATASET_DIR]

Prints one JSON object: for ``test`` and ``test_comp``, ``text_prior/<split>/sighted``
(the suite's accuracy), ``/blind`` (with the mean image for every item: the caption
prior alone), ``/agreement`` and the sighted accuracy per swapped attribute kind;
the same for the ``relation_swap`` suite under ``text_prior/<split>/relation_swap/``,
per relation, and for the ``replace_att`` suite under
``text_prior/<split>/replace_att/``, per kind of the replaced word, and split by
whether the replacing word names another object of the caption.
"""

import json

from absl import flags

from vlkg import console

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory with params.npz.")
_DATA = flags.DEFINE_string("data", None, "Prepared world; default: the run's own.")


def main(argv):
  del argv
  from vlkg import api
  from vlkg.data import prepare
  from vlkg.evaluators import text_prior
  dataset_dir = _DATA.value or prepare.run_dataset_dir(_WORKDIR.value)
  print(json.dumps(text_prior.evaluate(api.load(_WORKDIR.value), dataset_dir), sort_keys=True))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  console.run(main)
