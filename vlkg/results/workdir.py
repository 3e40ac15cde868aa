"""What a stage leaves in its workdir, and what that says about the stage.

``vlkg.main`` writes ``config.json``, ``metrics.jsonl`` and ``params.npz``; the
protocol adds ``evaluation.json`` (``vlkg.results.evaluation``), ``stage_times.json``
(the seconds of every attempt at each stage) and, in a fine-tune,
``base_params.json`` (which base params it started from). From these the protocol
decides whether a stage is finished, stale, or to be run (again).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

from vlkg.results import evaluation

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVALUATION_FILE = "evaluation.json"
TIMES_FILE = "stage_times.json"
PARENT_FILE = "base_params.json"


class StageError(RuntimeError):
  pass


class StaleRunError(ValueError):
  pass


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


# Sections that do not shape the trained params: what is evaluated (an evaluator
# added since a run trained is run on its params by the evaluation stage,
# `missing_evals`) and where metrics are mirrored.
NOT_TRAINING = ("evals", "wandb")


def config_changes(written: dict, expected: dict) -> list[str]:
  """Keys on which a run's ``config.json`` and the config it would now get differ.

  The trainer fills in what the dataset decides (``model.text.vocab_size`` when 0)
  and adds the tokenizer's description; neither is a change, nor is a section of
  `NOT_TRAINING`, nor a key added since the run at the value that behaves as the
  code did before (`vlkg.config.legacy.ADDED`).
  """
  from vlkg.config import legacy
  skip = ("tokenizer", *NOT_TRAINING)
  # Keys added since at their old behaviour; the expected config is read the same
  # way, so that a key it lacks is not a change either.
  written, expected = legacy.upgrade(written), legacy.upgrade(expected)
  old = _flat({k: v for k, v in written.items() if k not in skip})
  new = _flat({k: v for k, v in expected.items() if k not in skip})
  if new.get("model.text.vocab_size") == 0:
    new.pop("model.text.vocab_size")
    old.pop("model.text.vocab_size", None)
  return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def evaluation_changes(trained: dict, expected: dict) -> list[str]:
  """``config_changes`` that change training: all but those of keys named
  ``eval_*`` (a method's test-time settings, such as ``reavl.eval_distractors``),
  the difference allowed between an evaluation-only run and the run it evaluates."""
  return [c for c in config_changes(trained, expected)
          if not c.split(":", 1)[0].rsplit(".", 1)[-1].startswith("eval_")]


def missing_evals(workdir: str, expected: dict) -> dict:
  """The evaluators of the ``expected`` config that the run's own ``config.json``
  lacks (name -> spec): added since it trained, so its metrics lack them."""
  with open(os.path.join(workdir, CONFIG_FILE)) as f:
    own = json.load(f).get("evals", {})
  return {k: v for k, v in expected.get("evals", {}).items() if k not in own}


def final_metrics(workdir: str) -> dict:
  """The eval metrics logged at the run's last step (``{}`` if there are none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return {}
  records = []
  with open(path) as f:
    for line in f:
      if line.strip():
        records.append(json.loads(line))
  if not records:
    return {}
  last = max(r["step"] for r in records)
  merged = {}
  for r in records:
    if r["step"] == last:
      merged.update({k: v for k, v in r.items() if "/" in k})
  return merged


def finished(workdir: str, total_steps: int) -> bool:
  """Has params.npz and the eval record of step ``total_steps``."""
  if not os.path.exists(os.path.join(workdir, evaluation.PARAMS)):
    return False
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    records = [json.loads(l) for l in f if l.strip()]
  return any(r["step"] == total_steps and any("/" in k for k in r) for r in records)


def read_times(workdir: str) -> dict:
  path = os.path.join(workdir, TIMES_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_times(workdir: str, times: dict) -> None:
  tmp = os.path.join(workdir, TIMES_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(times, f, indent=1)
  os.replace(tmp, os.path.join(workdir, TIMES_FILE))


def timed(workdir: str, kind: str, fn: Callable[[], None]) -> float:
  """Runs ``fn`` and records its seconds under ``kind``; an attempt that was
  killed stays recorded with ``seconds: null`` (the stage was resumed)."""
  times = read_times(workdir)
  attempts = times.setdefault(kind, [])
  attempts.append({"started": time.time(), "seconds": None})
  _write_times(workdir, times)
  start = time.perf_counter()
  fn()
  attempts[-1]["seconds"] = time.perf_counter() - start
  _write_times(workdir, times)
  return attempts[-1]["seconds"]


def stage_seconds(workdir: str, kind: str) -> tuple[float | None, bool]:
  """(seconds, resumed). Training resumes from checkpoints, so its time is the sum
  of its finished attempts, and ``resumed`` says that a killed one is missing from
  it; an evaluation starts over, so its time is its last finished attempt."""
  attempts = read_times(workdir).get(kind, [])
  done = [a["seconds"] for a in attempts if a["seconds"] is not None]
  if kind != "train":
    return (done[-1] if done else None), False
  return (sum(done) if done else None), any(a["seconds"] is None for a in attempts)


def check_parent(workdir: str, parent: str, record: bool) -> None:
  """A fine-tune records which base params it starts from (``record``); one made
  from other base params (the base was trained again) is stale."""
  path = os.path.join(workdir, PARENT_FILE)
  if not os.path.exists(os.path.join(parent, evaluation.PARAMS)):
    return  # the base is not trained yet
  stamp = evaluation.params_stamp(parent)
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f) != stamp:
        raise StaleRunError(f"{workdir} was fine-tuned from other params than "
                            f"{parent}/params.npz (the base was trained again); "
                            f"delete {workdir} to retrain it")
  elif record:
    with open(path, "w") as f:
      json.dump(stamp, f)


def check_tokenizer(workdir: str, parent: str) -> None:
  """Each method prepares its own records of the world (its fields differ), each
  with a tokenizer trained on the same captions; the fine-tune reads the base's
  token embeddings, so the two tokenizers must be one."""
  descs = []
  for workdir in (parent, workdir):
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
      descs.append(json.load(f).get("tokenizer"))
  if descs[0] != descs[1]:
    raise StageError(f"{workdir} was tokenized with {descs[1]}, but its base "
                     f"{parent} with {descs[0]}: the base's token embeddings "
                     "would be read with other ids")
