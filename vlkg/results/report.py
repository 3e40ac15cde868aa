"""The protocol's outputs in words: the claims table, the base, the ablations, the
times, the JSON.

The claims section is written into ``docs/results.md`` between
``<!-- results:begin -->`` and ``<!-- results:end -->``, so the rest of that
hand-written document is kept; every figure in the section comes from one results
run. Accuracies are shown as fractions in [0, 1], gains (Δ) in points.

A method whose declared runs (``vlkg.results.runs``: its paper's ablations) are
among the results gets an ablation table: the full method and each of its runs
that ran, on the metrics of the method's claims (what its paper is judged on),
each mean ± standard error over seeds.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

from vlkg.results import claims as claims_lib

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
R1 = "retrieval/test/image_to_text_R@1"
# What the base must get right (objects, attributes) and what it must still get
# wrong (binding, relations), as the papers' pre-trained CLIP does.
BASE_METRICS = ("probe/shape", "world/replace_obj", "world/replace_att",
                "world/attribute_swap", "world/relation_swap", R1)
SUITES = ("attribute_swap", "relation_swap", "order", "replace_att", "replace_obj",
          "replace_rel", "swap_att", "swap_obj", "add_att", "knowledge")
# Each suite of the all-runs table and of results.png.
SUITE_METRICS = (tuple(f"world/{s}" for s in SUITES)
                 + ("world/kvqa", "world/kvqa_head", "world/entity_linking",
                    "world_comp/attribute_swap", "world_comp/relation_swap", R1,
                    "grounding/pointing_acc", "probe/shape", "text_prior/test/blind",
                    "text_prior/test_comp/blind"))


def fmt(x: float | None) -> str:
  return "—" if x is None else f"{x:.3f}"


def fmt_stat(s: claims_lib.Stat | None) -> str:
  if s is None:
    return "—"
  return fmt(s.mean) if s.se is None else f"{s.mean:.3f} ± {s.se:.3f}"


def fmt_points(s: claims_lib.Stat | None) -> str:
  if s is None:
    return "—"
  text = f"{100 * s.mean:+.1f}"
  return text if s.se is None else f"{text} ± {100 * s.se:.1f}"


def fmt_seconds(s: float | None) -> str:
  if s is None:
    return "—"
  m, sec = divmod(int(round(s)), 60)
  return f"{m} min {sec:02d} s" if m else f"{sec} s"


def run_stats(runs: Mapping, metric: str) -> dict[str, claims_lib.Stat]:
  """Run name -> mean ± s.e. of ``metric`` over the run's seeds that have it."""
  out = {}
  for name, seeds in runs.items():
    values = [m[metric] for m in seeds.values() if m.get(metric) is not None]
    if values:
      out[name] = claims_lib.stat(values)
  return out


def _met(v: claims_lib.Verdict) -> str:
  if v.met is None:
    return "not measured"
  return "**met**" if v.met else "not met"


def seeds_line(seeds: Sequence[int]) -> str:
  if len(seeds) == 1:
    return (f"One seed ({seeds[0]}): single values, no error bars; a claim is judged "
            "on that seed.")
  return (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); ± is the standard "
          "error over seeds (std with ddof 1 over √n; Δ paired by seed). A claim is "
          "judged on the mean.")


def claims_table(verdicts: Sequence[claims_lib.Verdict], runs: Mapping) -> list[str]:
  lines = ["| claim | method | metric | baseline | NegCLIP | method's score | Δ (pts) "
           "| blind Δ (pts) | paper's reported effect | target | result |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  if not verdicts:
    return ["No run among these declares a claim."]
  for v in verdicts:
    c = v.claim
    neg = run_stats({"negclip": runs.get("negclip", {})}, c.metric).get("negclip")
    delta = fmt_points(v.delta)
    if c.rule == "ratio" and v.ratio is not None:
      delta += f" ({v.ratio:.2f}×)"
    lines.append(
        f"| {c.name} | {c.subject} | `{c.metric}` | {c.baseline} {fmt_stat(v.baseline)} "
        f"| {fmt_stat(neg)} | {fmt_stat(v.value)} | {delta} "
        f"| {fmt_points(v.blind_delta) if c.blind else 'n/a'} | {c.paper or '—'} "
        f"| {c.describe_target()} | {_met(v)} |")
  return lines


def runs_table(base: Mapping, runs: Mapping, metrics: Sequence[str]) -> list[str]:
  names = list(runs)
  lines = ["| metric | base | " + " | ".join(names) + " |",
           "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
  for metric in metrics:
    stats = run_stats(runs, metric)
    if metric not in base and not stats:
      continue
    lines.append(f"| `{metric}` | {fmt(base.get(metric))} | "
                 + " | ".join(fmt_stat(stats.get(n)) for n in names) + " |")
  return lines


def times_table(times: Sequence[Mapping], total: float | None) -> list[str]:
  lines = ["| stage | training | evaluation |", "| --- | --- | --- |"]
  for t in times:
    note = " (resumed; a killed attempt's time is not counted)" if t["resumed"] else ""
    lines.append(f"| {t['stage']}{note} | {fmt_seconds(t['train'])} "
                 f"| {fmt_seconds(t['evaluate'])} |")
  train = [t["train"] for t in times if t["train"] is not None]
  evaluate = [t["evaluate"] for t in times if t["evaluate"] is not None]
  lines.append(f"| all stages | {fmt_seconds(sum(train))} | {fmt_seconds(sum(evaluate))} |")
  if total is not None:
    lines.append(f"| this results run (wall clock; reused stages cost nothing) "
                 f"| {fmt_seconds(total)} | |")
  return lines


def claim_metrics(method: str) -> list[str]:
  """The metrics of ``method``'s claims, in their order, each once."""
  return list(dict.fromkeys(c.metric for c in claims_lib.declared(method)))


def ablation_tables(runs: Mapping, declared: Mapping,
                    metrics_of: Callable[[str], Sequence[str]] = claim_metrics
                    ) -> list[str]:
  """One table per method with declared runs among ``runs`` (see module doc).

  Args:
    runs: run -> seed -> metrics.
    declared: run name -> ``vlkg.results.runs.Run`` (its method and label).
    metrics_of: a method's columns (by default its claims' metrics).
  """
  lines = []
  by_method: dict[str, list] = {}
  for name, run in declared.items():
    if runs.get(name):
      by_method.setdefault(run.method, []).append(run)
  for method, members in by_method.items():
    metrics = metrics_of(method)
    if not metrics:
      continue
    rows = [(method, "the full method")] + [(r.name, r.label or "—") for r in members]
    stats = {m: run_stats(runs, m) for m in metrics}
    lines += [f"#### {method}", "",
              "| run | what | " + " | ".join(f"`{m}`" for m in metrics) + " |",
              "| --- | --- | " + " | ".join("---" for _ in metrics) + " |"]
    for name, label in rows:
      lines.append(f"| {name} | {label} | "
                   + " | ".join(fmt_stat(stats[m].get(name)) for m in metrics) + " |")
    lines.append("")
  return lines


def section(result: Mapping, verdicts: Sequence[claims_lib.Verdict], *,
            command: str, seeds: Sequence[int], figure: str | None = "results.png",
            declared: Mapping | None = None) -> str:
  """The markdown between the markers; ``declared`` (run name -> ``Run``) gives
  the ablation tables."""
  base, runs = result["base"], result["runs"]
  ablations = ablation_tables(runs, declared or {})
  metrics = list(SUITE_METRICS) + sorted({v.claim.metric for v in verdicts}
                                         - set(SUITE_METRICS))
  lines = [
      "## The paper claims on the world, from the base (generated)", "",
      "```bash", command, "```", "",
      "Every run is fine-tuned from the same base (`configs/clip.py:base`) with its "
      "method's `finetune` preset: equal steps, batch and learning-rate schedule. "
      "`clip` is CLIP fine-tuned the same way (the fair baseline); `negclip` is "
      "Structure-CLIP's NegCLIP loss with no ranking term (the second baseline). "
      + seeds_line(seeds), "",
      "### The base", "",
      "| " + " | ".join(f"`{m}`" for m in BASE_METRICS) + " |",
      "| " + " | ".join("---" for _ in BASE_METRICS) + " |",
      "| " + " | ".join(fmt(base.get(m)) for m in BASE_METRICS) + " |", "",
      "### Claims", "",
      "The blind Δ is the gain of `text_prior`'s blind score (every item scored "
      "against the mean image: the caption prior alone); a binding claim counts only "
      "if it is less than half the sighted Δ.", "",
      *claims_table(verdicts, runs), "",
      "### Every run" + (" (mean ± s.e. over seeds)" if len(seeds) > 1 else ""), "",
      *runs_table(base, runs, metrics), "",
      *(["### Ablations" + (" (mean ± s.e. over seeds)" if len(seeds) > 1 else ""),
         "", "Each method beside the runs that remove a part of it (run with "
         "`--ablations`; a run that a claim names as its baseline runs anyway).", "",
         *ablations] if ablations else []),
      "### Time per stage", "",
      *times_table(result["times"], result.get("seconds")), "",
  ]
  if figure:
    lines += [f"![each suite, the runs side by side]({figure})", ""]
  return "\n".join(lines)


def update_markdown(text: str, body: str) -> str:
  """``text`` with the part between the markers replaced by ``body`` (appended at
  the end, markers included, if the markers are absent)."""
  block = f"{BEGIN}\n{body.rstrip()}\n{END}"
  if not text.strip():
    return block + "\n"
  if BEGIN in text and END in text:
    head, rest = text.split(BEGIN, 1)
    if END not in rest:
      raise ValueError(f"{END} comes before {BEGIN}")
    return head + block + rest.split(END, 1)[1]
  if BEGIN in text or END in text:
    raise ValueError(f"only one of {BEGIN} / {END} is present")
  return text.rstrip("\n") + "\n\n" + block + "\n"


def write_markdown(path: str, body: str) -> None:
  text = ""
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(update_markdown(text, body))
  os.replace(tmp, path)


def summary(result: Mapping, verdicts: Sequence[claims_lib.Verdict],
            seeds: Sequence[int]) -> dict:
  """The final JSON line: the base's metrics and every judged claim."""
  return {"base": {m: result["base"].get(m) for m in BASE_METRICS},
          "claims": [v.to_json() for v in verdicts], "seeds": list(seeds),
          "seconds": result.get("seconds")}
