"""The world protocol in one command: the base, every method fine-tuned, the claims.

    python -m vlkg.tools.results [--methods clip,structure_clip] [--seeds 3]
        [--out DIR] [--quick] [--docs docs]

Trains ``configs/clip.py:base`` once into ``OUT/base`` (reused while its config is
unchanged), fine-tunes every run from it for each seed (``configs/<m>.py:finetune``,
``OUT/<run>/seed<S>``), evaluates each, and judges every claim that the method
modules declare (``vlkg.results.claims``). A killed results run, started again
with the same flags, redoes no finished stage (``vlkg.results.protocol``).

Runs: ``--methods`` (default: the baselines ``clip`` and ``negclip`` and every
method that declares claims), plus the baselines that their claims name.

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
import shutil

from absl import app, flags

_METHODS = flags.DEFINE_list("methods", None, "Runs to fine-tune (default: the "
                             "baselines and every method that declares CLAIMS).")
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds per run (default 3; 1 with --quick).")
_OUT = flags.DEFINE_string("out", None, "The protocol's directory (default "
                           "~/.cache/vlkg/results, or results_quick with --quick).")
_QUICK = flags.DEFINE_bool("quick", False, "A minutes-long pass on a tiny world.")
_DOCS = flags.DEFINE_string("docs", "", "Also write DIR/results.md's section and "
                            "DIR/results.png (e.g. docs); empty: only OUT.")


def select_runs(requested, claims_of) -> list[str]:
  """Baselines first, then the requested runs, plus every baseline a claim names."""
  from vlkg.results import protocol
  runs = list(requested)
  for run in list(runs):
    for claim in claims_of(run):
      if claim.baseline not in runs:
        runs.append(claim.baseline)
  baselines = [b for b in protocol.BASELINES if b in runs]
  return baselines + [r for r in runs if r not in baselines]


def claims_of(run: str):
  from vlkg.results import claims, protocol
  spec = protocol.run_spec(run)
  return claims.declared(run) if spec.config == run else ()


def command_line(methods, seeds: int, quick: bool) -> str:
  parts = ["python -m vlkg.tools.results", f"--methods {','.join(methods)}",
           f"--seeds {seeds}"]
  return " ".join(parts + (["--quick"] if quick else []))


def run(methods, seeds: int, out: str, quick: bool, docs: str, runner=None,
        log=print) -> dict:
  """The whole protocol; returns the final JSON object."""
  from vlkg.results import claims, figure, protocol, report
  runs = select_runs(methods, claims_of)
  verdict_claims = [c for r in runs for c in claims_of(r)]
  seed_list = list(range(seeds))
  kwargs = {} if runner is None else {"runner": runner}
  result = protocol.Protocol(out, runs, seed_list, quick=quick, log=log, **kwargs).run()
  verdicts = [claims.judge(c, result["runs"]) for c in verdict_claims]
  body = report.section(result, verdicts, command=command_line(methods, seeds, quick),
                        seeds=seed_list)
  out = os.path.abspath(os.path.expanduser(out))
  summary = report.summary(result, verdicts, seed_list)
  report.write_markdown(os.path.join(out, "results.md"), body)
  figure.write(os.path.join(out, "results.png"), result["base"], result["runs"])
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({**summary, "runs": result["runs"], "times": result["times"]}, f,
              indent=1)
  if docs:
    os.makedirs(docs, exist_ok=True)
    report.write_markdown(os.path.join(docs, "results.md"), body)
    shutil.copyfile(os.path.join(out, "results.png"), os.path.join(docs, "results.png"))
  for v in verdicts:
    log(f"[results] {v.claim.method} {v.claim.name}: "
        f"{'not measured' if v.met is None else 'met' if v.met else 'not met'}")
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from vlkg.results import claims, protocol
  quick = _QUICK.value
  methods = _METHODS.value or (list(protocol.BASELINES) + claims.methods_with_claims())
  seeds = _SEEDS.value if _SEEDS.value is not None else (1 if quick else 3)
  if seeds < 1:
    raise app.UsageError(f"--seeds must be >= 1, got {seeds}")
  out = _OUT.value or os.path.join("~", ".cache", "vlkg",
                                   "results_quick" if quick else "results")
  summary = run(methods, seeds, out, quick, _DOCS.value)
  print(json.dumps(summary, sort_keys=True), flush=True)


if __name__ == "__main__":
  app.run(main)
