"""A paper's claim as a measurable statement, and the arithmetic that judges it.

Each method module declares its paper's claims at its end::

    CLAIMS = (Claim(name="attribute binding", metric="world/attribute_swap",
                    target=0.15, halve_errors_above=0.8,
                    blind="text_prior/test/blind", paper="..."),)

``python -m vlkg.tools.results`` finds every ``vlkg.methods.<m>.CLAIMS`` (a new
method joins the protocol by declaring its claims; nothing else names it), fine-tunes
the method and each claim's baseline from the same base for the same seeds, and
judges the claim on the mean over seeds:

* ``rule="gain"``: Δ = mean(method) − mean(baseline) ≥ ``target`` (accuracies in
  [0, 1], so 0.15 is 15 points; a negative target bounds a drop). With
  ``halve_errors_above``, a baseline above that accuracy also counts as beaten when
  the method's error is at most half the baseline's: +15 points cannot be had
  above 85%.
* ``rule="ratio"``: mean(method) ≥ ``target`` × mean(baseline).
* ``rule="at_least"``: mean(method) ≥ ``target``, an absolute level (REAVL's
  retriever recall); no baseline.
* ``rule="relative_gain"``: a gain measured against another gain, Δ = mean(run −
  baseline) ≥ ``target`` × mean(reference[0] − reference[1]), both paired by seed
  (REAVL's sample efficiency: its gain over CLIP at 10% of the data at least its
  gain at 100%; the gate's robustness: the gated model's drop under distractors at
  most half the ungated one's, both drops negative gains). ``run`` names the
  claim's own side when it is a declared run rather than the method itself.
* ``blind``: a binding claim counts only if the image decides it: the gain of the
  blind score (``vlkg.evaluators.text_prior``, every item scored against the
  mean image, so only the caption prior speaks) must be less than half the gain
  of the sighted score Δ.

Seeds are paired: seed S of the method and seed S of the baseline start from the
same base with the same data order, so the standard error of Δ is that of the
per-seed differences (std with ddof 1 over √n). With one seed there is no error
bar.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
from typing import Mapping, Sequence

RULES = ("gain", "ratio", "at_least", "relative_gain")
# A claim holds at its target exactly; float noise must not flip it.
_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim of a method's paper against a baseline run (see module doc).

  ``method`` is filled in from the module that declares the claim.
  """
  name: str
  metric: str
  target: float
  rule: str = "gain"
  baseline: str = "clip"
  halve_errors_above: float | None = None
  blind: str = ""
  paper: str = ""
  method: str = ""
  run: str = ""
  reference: tuple[str, ...] = ()

  def __post_init__(self):
    if self.rule not in RULES:
      raise ValueError(f"claim {self.name!r}: rule={self.rule!r}; expected one of {RULES}")
    if self.rule == "ratio" and self.target <= 0:
      raise ValueError(f"claim {self.name!r}: a ratio target must be > 0")
    if (self.rule == "relative_gain") != (len(self.reference) == 2):
      raise ValueError(f"claim {self.name!r}: rule 'relative_gain' and a reference of "
                       "two runs go together")

  @property
  def subject(self) -> str:
    """The run whose metric the claim is about: ``run``, else the method."""
    return self.run or self.method

  def runs(self) -> tuple[str, ...]:
    """Every run the claim reads."""
    names = [self.subject] + ([] if self.rule == "at_least" else [self.baseline])
    return tuple(dict.fromkeys(names + list(self.reference)))

  def describe_target(self) -> str:
    """The target in words, as the claims table shows it."""
    if self.rule == "at_least":
      return f"≥ {self.target:g}"
    if self.rule == "relative_gain":
      a, b = self.reference
      return f"Δ ≥ {self.target:g}× Δ({a} − {b})"
    if self.rule == "ratio":
      text = f"≥ {self.target:g}× {self.baseline}"
    else:
      text = f"Δ ≥ {100 * self.target:+.1f} pts"
      if self.halve_errors_above is not None:
        text += f", or errors halved if {self.baseline} > {self.halve_errors_above:.0%}"
    if self.blind:
      text += "; blind Δ < ½ Δ"
    return text


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean and standard error over seeds; ``se`` is None for one seed."""
  mean: float
  se: float | None
  n: int


def stat(values: Sequence[float]) -> Stat:
  """Mean ± std(ddof=1)/√n of ``values``."""
  values = [float(v) for v in values]
  if not values:
    raise ValueError("no values")
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return Stat(mean, None, 1)
  var = sum((v - mean) ** 2 for v in values) / (n - 1)
  return Stat(mean, math.sqrt(var / n), n)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """A judged claim. ``met`` is None when a run or metric it needs is missing."""
  claim: Claim
  seeds: tuple[int, ...]
  value: Stat | None = None
  baseline: Stat | None = None
  delta: Stat | None = None
  ratio: float | None = None
  blind_delta: Stat | None = None
  rule_met: bool | None = None
  blind_met: bool | None = None
  met: bool | None = None
  reference: Stat | None = None

  def to_json(self) -> dict:
    c = self.claim
    mean = lambda s: None if s is None else s.mean
    se = lambda s: None if s is None else s.se
    return {
        "name": c.name, "method": c.method, "metric": c.metric,
        "baseline": c.baseline, "value": mean(self.value), "delta": mean(self.delta),
        "target": c.target, "met": self.met, "rule": c.rule,
        "baseline_value": mean(self.baseline), "value_se": se(self.value),
        "delta_se": se(self.delta), "ratio": self.ratio,
        "blind_delta": mean(self.blind_delta), "seeds": list(self.seeds),
        "reference_delta": mean(self.reference),
    }


Runs = Mapping[str, Mapping[int, Mapping[str, float]]]  # run -> seed -> metrics


def _paired(runs: Runs, a: str, b: str, metric: str) -> tuple[list[int], list, list]:
  sa, sb = runs.get(a, {}), runs.get(b, {})
  seeds = sorted(s for s in set(sa) & set(sb)
                 if sa[s].get(metric) is not None and sb[s].get(metric) is not None)
  return seeds, [sa[s][metric] for s in seeds], [sb[s][metric] for s in seeds]


def _judge_level(claim: Claim, runs: Runs) -> Verdict:
  per = runs.get(claim.subject, {})
  seeds = sorted(s for s in per if per[s].get(claim.metric) is not None)
  if not seeds:
    return Verdict(claim, ())
  value = stat([per[s][claim.metric] for s in seeds])
  met = value.mean >= claim.target - _EPS
  return Verdict(claim, tuple(seeds), value, rule_met=met, met=met)


def _judge_relative(claim: Claim, runs: Runs) -> Verdict:
  names = claim.runs()
  common = set.intersection(*(set(s for s, m in runs.get(n, {}).items()
                                  if m.get(claim.metric) is not None) for n in names))
  seeds = sorted(common)
  if not seeds:
    return Verdict(claim, ())
  get = lambda n: [runs[n][s][claim.metric] for s in seeds]
  ours, theirs = get(claim.subject), get(claim.baseline)
  ref_a, ref_b = (get(n) for n in claim.reference)
  delta = stat([x - y for x, y in zip(ours, theirs)])
  reference = stat([x - y for x, y in zip(ref_a, ref_b)])
  met = delta.mean >= claim.target * reference.mean - _EPS
  return Verdict(claim, tuple(seeds), stat(ours), stat(theirs), delta, rule_met=met,
                 met=met, reference=reference)


def judge(claim: Claim, runs: Runs) -> Verdict:
  """Judges ``claim`` on the seeds that all of its runs have."""
  if claim.rule == "at_least":
    return _judge_level(claim, runs)
  if claim.rule == "relative_gain":
    return _judge_relative(claim, runs)
  seeds, ours, theirs = _paired(runs, claim.subject, claim.baseline, claim.metric)
  if not seeds:
    return Verdict(claim, ())
  value, base = stat(ours), stat(theirs)
  delta = stat([x - y for x, y in zip(ours, theirs)])
  ratio = value.mean / base.mean if base.mean else None
  if claim.rule == "ratio":
    rule_met = value.mean >= claim.target * base.mean - _EPS
  else:
    rule_met = delta.mean >= claim.target - _EPS
    if claim.halve_errors_above is not None and base.mean > claim.halve_errors_above:
      rule_met = rule_met or (1 - value.mean) <= (1 - base.mean) / 2 + _EPS
  blind_delta = blind_met = None
  met = rule_met
  if claim.blind:
    blind_seeds, b_ours, b_theirs = _paired(runs, claim.subject, claim.baseline,
                                            claim.blind)
    if blind_seeds != seeds:
      met = None  # the blind rule cannot be judged on the same seeds
    else:
      blind_delta = stat([x - y for x, y in zip(b_ours, b_theirs)])
      blind_met = blind_delta.mean < delta.mean / 2
      met = rule_met and blind_met
  return Verdict(claim, tuple(seeds), value, base, delta, ratio, blind_delta,
                 rule_met, blind_met, met)


def declared(method: str) -> tuple[Claim, ...]:
  """``vlkg.methods.<method>.CLAIMS`` with ``method`` filled in; () if none."""
  from vlkg import methods
  module = methods.load(method)
  out = []
  for claim in getattr(module, "CLAIMS", ()):
    if not isinstance(claim, Claim):
      raise TypeError(f"vlkg.methods.{method}.CLAIMS holds {claim!r}, not a Claim")
    out.append(dataclasses.replace(claim, method=method))
  return tuple(out)


def methods_with_claims() -> list[str]:
  """Every method module that declares ``CLAIMS``, sorted by name."""
  import vlkg.methods as package
  names = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
  return [n for n in names
          if getattr(importlib.import_module(f"vlkg.methods.{n}"), "CLAIMS", None)]
