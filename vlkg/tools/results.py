"""The world protocol in one command: the base, every method fine-tuned, the claims.

    python -m vlkg.tools.results [--methods clip,structure_clip] [--seeds 3]
        [--out DIR] [--quick] [--docs docs] [--ablations] [--reevaluate kg]

Trains ``configs/clip.py:base`` once into ``OUT/base`` (reused while its config is
unchanged), fine-tunes every run from it for each seed (``configs/<m>.py:finetune``,
``OUT/<run>/seed<S>``), evaluates each, and judges every claim that the method
modules declare (``vlkg.results.claims``). A killed results run, started again
with the same flags, redoes no finished stage (``vlkg.results.protocol``). A stage
whose config has changed since it ran is an error that names the changed keys: a
changed base makes every fine-tune under ``OUT`` stale, so use a new ``--out``.

Runs: ``--methods`` (default: the baselines ``clip`` and ``negclip`` and every
method that declares claims), plus the baselines that their claims name (a run
that a method declares, such as Knowledge-CLIP's ``clip_kg``, the "CLIP + KG"
baseline of its KG claims). ``--methods`` may name a declared run itself
(``knowledge_clip_no_e2e``); ``--ablations`` adds every run that the selected
methods declare (``vlkg.results.runs``: their papers' ablations, e.g.
Knowledge-CLIP without each of E2E, E2R, G2E, KD), which are too costly to run by
default. Each method with declared runs among the results gets an ablation table
in the report.

``--reevaluate`` names evaluators (keys of ``config.evals``) that changed since the
runs trained: each run's evaluation runs them again on its params, and their
metrics replace the run's own (a later results run keeps them).

Writes ``OUT/results.md`` (the claims section), ``OUT/results.png`` and
``OUT/results.json``; with ``--docs DIR`` also the section of ``DIR/results.md``
between its ``<!-- results:begin -->`` / ``<!-- results:end -->`` markers (the rest
of that file is kept) and ``DIR/results.png``. The last printed line is one JSON
object ``{"base": {metric: value}, "claims": [{"name", "method", "metric",
"baseline", "value", "delta", "target", "met", ...}], ...}``.

``--quick`` runs every stage on a tiny world with a smoke-sized model for a few
steps (one seed unless ``--seeds`` is given), into its own default ``--out``: a
minutes-long check that the protocol works, whose figures mean nothing.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

def _define_flags() -> None:
  # Defined only when run as a program, so that this module imports beside other
  # tools that define --out (absl rejects a flag defined twice).
  flags.DEFINE_list("methods", None, "Runs to fine-tune (default: the baselines and "
                    "every method that declares CLAIMS).")
  flags.DEFINE_integer("seeds", None, "Seeds per run (default 3; 1 with --quick).")
  flags.DEFINE_string("out", None, "The protocol's directory (default "
                      "~/.cache/vlkg/results, or results_quick with --quick).")
  flags.DEFINE_bool("quick", False, "A minutes-long pass on a tiny world.")
  flags.DEFINE_string("docs", "", "Also write DIR/results.md's section and "
                      "DIR/results.png (e.g. docs); empty: only OUT.")
  flags.DEFINE_bool("ablations", False, "Also run every ablation that the selected "
                    "methods declare (their RUNS).")
  flags.DEFINE_list("reevaluate", None, "Evaluators (names of config.evals, e.g. kg) "
                    "to run again on every run's params, their metrics replacing "
                    "the run's own: an evaluator changed since the runs trained.")


def run(methods=None, seeds=None, out=None, quick=False, docs="",
        ablations=False, reevaluate=None) -> dict:
  """The protocol with the flags' defaults filled in; its summary (the JSON line)."""
  from vlkg.results import claims, command, protocol
  methods = methods or (list(protocol.BASELINES) + claims.methods_with_claims())
  seeds = seeds if seeds is not None else (1 if quick else 3)
  if seeds < 1:
    raise app.UsageError(f"--seeds must be >= 1, got {seeds}")
  out = out or os.path.join("~", ".cache", "vlkg", "results_quick" if quick else "results")
  return command.run(methods, seeds, out, quick, docs, ablations=ablations,
                     reevaluate=reevaluate or ())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  f = flags.FLAGS
  summary = run(f.methods, f.seeds, f.out, f.quick, f.docs, f.ablations,
                f.reevaluate)
  print(json.dumps(summary, sort_keys=True), flush=True)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
