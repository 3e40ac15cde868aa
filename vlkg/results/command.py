"""What ``python -m vlkg.tools.results`` does, without its flags (importable by
tests and notebooks): choose the runs, run the protocol, judge the claims, write
the report, the figure and the JSON.
"""

from __future__ import annotations

import json
import os
import shutil

from vlkg.results import claims, figure, protocol, report
from vlkg.results import runs as runs_lib


def select_runs(requested, claims_of, ablations_of=None) -> list[str]:
  """Baselines first, then the requested runs (each followed by its declared
  ablations when ``ablations_of`` is given), plus every run a claim reads (its
  baseline, its own declared run, the runs of a reference gain)."""
  runs = []
  for run in requested:
    for name in [run, *(ablations_of(run) if ablations_of else ())]:
      if name not in runs:
        runs.append(name)
  for run in list(runs):
    for claim in claims_of(run):
      for name in claim.runs():
        if name not in runs:
          runs.append(name)
  baselines = [b for b in protocol.BASELINES if b in runs]
  return baselines + [r for r in runs if r not in baselines]


def claims_of(run: str) -> tuple:
  """The claims of a run's method; () for a baseline variant such as negclip."""
  spec = protocol.run_spec(run)
  return claims.declared(run) if spec.config == run else ()


def ablations_of(run: str) -> tuple[str, ...]:
  """The runs a method's module declares (``vlkg.results.runs``); () for any other
  run (a baseline, a declared run)."""
  spec = protocol.run_spec(run)
  if spec.config != run:
    return ()
  return tuple(r.name for r in runs_lib.declared(run))


def command_line(methods, seeds: int, quick: bool, ablations: bool = False,
                 reevaluate=()) -> str:
  """The command that reproduces a report, as the report shows it."""
  parts = ["python -m vlkg.tools.results", f"--methods {','.join(methods)}",
           f"--seeds {seeds}"]
  return " ".join(parts + (["--ablations"] if ablations else [])
                  + ([f"--reevaluate {','.join(reevaluate)}"] if reevaluate else [])
                  + (["--quick"] if quick else []))


def run(methods, seeds: int, out: str, quick: bool, docs: str, runner=None,
        log=print, ablations: bool = False, reevaluate=()) -> dict:
  """The whole protocol; returns the final JSON object.

  ``out`` is the protocol's directory; ``docs`` ("" for none) a directory whose
  results.md section and results.png are written too; ``runner`` replaces the
  subprocess runner (tests); ``ablations`` adds every run that the selected
  methods declare; ``reevaluate`` names evaluators to run again on every run's
  params (`vlkg.results.evaluation.extra_evals`).
  """
  runs = select_runs(methods, claims_of, ablations_of if ablations else None)
  verdict_claims = [c for r in runs for c in claims_of(r)]
  seed_list = list(range(seeds))
  kwargs = {} if runner is None else {"runner": runner}
  result = protocol.Protocol(out, runs, seed_list, quick=quick, log=log,
                             reevaluate=reevaluate, **kwargs).run()
  verdicts = [claims.judge(c, result["runs"]) for c in verdict_claims]
  body = report.section(result, verdicts,
                        command=command_line(methods, seeds, quick, ablations, reevaluate),
                        seeds=seed_list, declared=runs_lib.all_declared(
                            reserved=protocol.BASELINES))
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
