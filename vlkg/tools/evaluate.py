"""Evaluates a finished run from ``params.npz`` alone, in a fresh process.

    python -m vlkg.tools.evaluate --workdir DIR --benchmark world [--data DATASET_DIR] [--out FILE]
    python -m vlkg.tools.evaluate --workdir DIR --benchmark NAME --data PATH [--images DIR] [--out FILE]

Prints one JSON object with the metrics (DESIGN.md metric names) and writes it to
``--out`` if given. For ``world`` the dataset defaults to the one the run was
trained on (from ``DIR/config.json``), and the metrics include phrase grounding on
its test split (``grounding/*``, `vlkg.evaluators.grounding`). Every other NAME is
a real benchmark in its official on-disk format (ARO, COCO/Flickr-Order, SugarCrepe,
Winoground, Karpathy-split retrieval, OK-VQA, A-OKVQA, WikiDiverse), scored by
`vlkg.evaluators.real_benchmarks`: ``--data`` is its annotation file (the folder of
category files for SugarCrepe; the file or its folder for OK-VQA, A-OKVQA and
WikiDiverse) and
``--images`` its image root, by default the folder of ``--data``. docs/data.md,
"Evaluating on the real benchmarks", lists what each one expects. For OK-VQA and
A-OKVQA, ``--train`` names the train split's questions (their images under the same
root), on which an answer head is fitted on the frozen model
(``okvqa/accuracy_head``, ``aokvqa/direct_answer_head``).
"""

from __future__ import annotations

import json

from absl import app, flags

from vlkg import console, files
from vlkg.files import atomic_write
from vlkg.evaluators import real_benchmarks

# The real benchmarks, in their on-disk formats, and the world's own suites.
BENCHMARKS = (*real_benchmarks.BENCHMARKS, "world")


def _define_flags() -> None:
  # Defined only when run as a program, so that `evaluate` can be imported next to
  # other tools that define --workdir (absl rejects a flag defined twice).
  flags.DEFINE_string("workdir", None, "Run directory with params.npz.")
  flags.DEFINE_enum("benchmark", None, BENCHMARKS, "Benchmark to run.")
  flags.DEFINE_string("data", None, "Benchmark file or dataset directory.")
  flags.DEFINE_string(
      "images", None, "Image root of a real benchmark (default: the folder of --data).")
  flags.DEFINE_string("out", None, "Also write the JSON here.")
  flags.DEFINE_string(
      "train", None, "okvqa, aokvqa: the train split's questions file or folder; "
      "also fits an answer head on the frozen model (okvqa/accuracy_head, "
      "aokvqa/direct_answer_head).")


def evaluate(workdir: str, benchmark: str, data: str | None = None,
             images: str | None = None, train: str | None = None) -> dict:
  """The metrics of the run in ``workdir`` on ``benchmark``; see the module docstring.

  Args:
    workdir: A run directory (or ``params.npz`` with ``config.json`` beside it).
    benchmark: One of `BENCHMARKS`.
    data: The dataset (``world``: default the run's own) or the benchmark file.
    images: The image root of a real benchmark; default the folder of ``data``.
    train: OK-VQA's or A-OKVQA's train questions: also fit and score an answer
      head (`vlkg.evaluators.knowledge_vqa`).

  Returns:
    Metric name -> value.

  Raises:
    app.UsageError: For an unknown benchmark, or a real benchmark without ``data``.
    FileNotFoundError: If a real benchmark's ``data`` does not exist.
  """
  if benchmark not in BENCHMARKS:
    raise app.UsageError(f"--benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
  if benchmark != "world" and data is None:
    raise app.UsageError(f"--benchmark {benchmark} needs --data (its annotation file "
                         "or folder)")
  if train is not None and benchmark not in ("okvqa", "aokvqa"):
    raise app.UsageError(f"--train is for --benchmark okvqa or aokvqa, not {benchmark}")
  if benchmark != "world" and not files.exists(data):
    # Before loading the model, so a typo costs no time.
    raise FileNotFoundError(f"--data {data} does not exist")
  from vlkg import api
  if benchmark == "world":
    from vlkg.data import prepare
    from vlkg.evaluators import world
    if data is None:
      data = prepare.run_dataset_dir(workdir)
    return world.evaluate(api.load(workdir, dataset_dir=data), data,
                          splits=("test", "test_comp"))
  options = {"train": train} if train is not None else {}
  return real_benchmarks.evaluate(api.load(workdir), benchmark=benchmark, data=data,
                                  images=images, **options)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  result = evaluate(f.workdir, f.benchmark, f.data, f.images, f.train)
  text = json.dumps(result, sort_keys=True)
  if f.out:
    atomic_write(f.out, text + "\n")
  print(text)


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["workdir", "benchmark"])
  console.run(main)
