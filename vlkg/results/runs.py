"""Runs that a method module declares beside itself: its paper's ablations.

A method module lists them at its end, next to its ``CLAIMS``::

    RUNS = (Run("clip_kg", ("knowledge_clip.mode=captions",),
                "CLIP + KG: the triplets written as captions"),
            Run("knowledge_clip_no_e2e", ("knowledge_clip.e2e_weight=0.0",),
                "without E2E"))

A declared run is ``configs/<method>.py:finetune`` (or ``configs/<config>.py`` when
the run names another method's config) with ``overrides``, fine-tuned
and evaluated by ``python -m vlkg.tools.results`` like any run, under its own name
(``OUT/<name>/seed<S>``). A run that ``evaluates`` another trains nothing: the
other run's params are evaluated again under its config (a test-time change such
as REAVL's distractor items). It runs when a claim names it as its baseline (Pan et
al.'s "CLIP + KG" for Knowledge-CLIP's KG claims), when ``--methods`` names it, or,
with ``--ablations``, with its method. The report shows each method's declared
runs in an ablation table beside the full method (``vlkg.results.report``).
Nothing else names them: the method module is their one home.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil


@dataclasses.dataclass(frozen=True)
class Run:
  """A run of a method's config with ``overrides``; ``method`` is filled in from
  the module that declares it."""
  name: str
  overrides: tuple[str, ...]
  label: str = ""
  method: str = ""
  # Another method's config the run fine-tunes (REAVL's CLIP at 10% of the data,
  # the baseline of its sample-efficiency claim); "" = the declaring method's.
  config: str = ""
  # An evaluation-only run: the run (the method, or another declared run) whose
  # trained params it evaluates, seed by seed, under its own config. Nothing
  # trains; its overrides may change only what the evaluation reads (REAVL's
  # distractors at test time), which the protocol checks against the trained
  # run's config.
  evaluates: str = ""


def method_names() -> list[str]:
  """Every built-in method module, sorted."""
  import vlkg.methods as package
  return sorted(m.name for m in pkgutil.iter_modules(package.__path__))


def declared(method: str) -> tuple[Run, ...]:
  """``vlkg.methods.<method>.RUNS`` with ``method`` filled in; () if none."""
  from vlkg import methods
  out = []
  for run in getattr(methods.load(method), "RUNS", ()):
    if not isinstance(run, Run):
      raise TypeError(f"vlkg.methods.{method}.RUNS holds {run!r}, not a Run")
    out.append(dataclasses.replace(run, method=method, overrides=tuple(run.overrides)))
  return tuple(out)


def all_declared(reserved=()) -> dict[str, Run]:
  """Run name -> ``Run`` over every method module.

  Raises:
    ValueError: if two declarations share a name, or one takes the name of a
      method module or of ``reserved`` (the protocol's baselines): a run's name is
      its directory, so it must say one thing.
  """
  names = method_names()
  taken = set(names) | set(reserved)
  out: dict[str, Run] = {}
  for method in names:
    if not hasattr(importlib.import_module(f"vlkg.methods.{method}"), "RUNS"):
      continue
    for run in declared(method):
      if run.name in taken or run.name in out:
        other = (f"a run of vlkg.methods.{out[run.name].method}" if run.name in out
                 else "a method or a baseline")
        raise ValueError(f"vlkg.methods.{method}.RUNS declares {run.name!r}, already "
                         f"the name of {other}")
      out[run.name] = run
  for run in out.values():
    if run.evaluates and run.evaluates not in out and run.evaluates != run.method:
      raise ValueError(f"vlkg.methods.{run.method}.RUNS: {run.name!r} evaluates "
                       f"{run.evaluates!r}, neither {run.method} nor a declared run")
  return out
