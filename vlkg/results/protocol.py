"""The stages of the world protocol, each a subprocess, resumable and timed.

Layout of the protocol's directory ``OUT``::

    OUT/base/                 python -m vlkg.main --config configs/clip.py:base
    OUT/<run>/seed<S>/        python -m vlkg.main --config configs/<m>.py:finetune
                                  --config.model_init=OUT/base --config.seed=S
    <workdir>/evaluation.json python -m vlkg.results.evaluation (probes, blind score)
    <workdir>/stage_times.json the seconds of each attempt at each stage
    <workdir>/base_params.json which base params.npz a fine-tune started from
    <workdir>/train.log, evaluate.log   the stages' output

Every stage is the documented command line in its own process, which owns its
memory and devices; the results command itself holds no accelerator.

``config.seed`` seeds both the init of a method's new modules (the trainer's init
key; the rest comes from the base) and the order of the training data
(``input_pipeline.train_iterator(seed=...)``); the world itself
(``world.seed``) is the same for every stage.

Resume. A stage whose outputs exist is not rerun: a run is finished when it has
``params.npz`` and the eval record of its last step in ``metrics.jsonl``; a run
killed midway is started again with the same command, and ``vlkg.main`` resumes
it from its checkpoints; an evaluation is cached in ``evaluation.json`` with the
size and time of the params it measured.

A changed config is an error, never a silent reuse: before a stage starts, the
config it would write is compared with the ``config.json`` of its workdir. A
changed base invalidates every fine-tune made from it, so the error says to use a
new ``--out`` (or delete the stale directory).

One results run at a time holds ``OUT`` (a lock file), and on Linux a stage dies
with the results process, so a restarted run never races a leftover trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Callable, Sequence

from vlkg.results import evaluation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = "base"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVALUATION_FILE = "evaluation.json"
TIMES_FILE = "stage_times.json"
LOCK_FILE = ".lock"
PARENT_FILE = "base_params.json"


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A fine-tuned run: ``configs/<config>.py:finetune`` with ``overrides``."""
  name: str
  config: str
  overrides: tuple[str, ...] = ()


# The two baselines every claim is read against, as the papers report them:
# CLIP fine-tuned on the same data for the same steps (the fair baseline), and
# NegCLIP (Yuksekgonul et al., ICLR 2023): Structure-CLIP's InfoNCE with the
# hard negatives in the softmax and no ranking term.
BASELINES = {
    "clip": RunSpec("clip", "clip"),
    "negclip": RunSpec("negclip", "structure_clip",
                       ("structure_clip.loss=negclip", "structure_clip.neg_weight=0.0")),
}

# --quick: a smoke-sized model on a tiny world, a few steps; every stage runs
# the same code path as the full protocol in well under a minute each.
QUICK = (
    "world.num_train=256", "world.num_val=32", "world.num_test=32",
    "world.num_test_comp=32", "world.num_shards=2", "world.vocab_size=256",
    "world.workers=1", "input.batch_size=16", "input.shuffle_buffer=256",
    "model.embed_dim=32", "model.image.width=32", "model.image.depth=1",
    "model.image.heads=2", "model.text.width=32", "model.text.depth=1",
    "model.text.heads=2", "total_steps=4", "log_every=2", "checkpoint_every=2",
    "eval_every=0", "optim.warmup_steps=1",
)


class StageError(RuntimeError):
  pass


class StaleRunError(ValueError):
  pass


@contextlib.contextmanager
def _locked(path: str):
  """One results run per directory: a second one would train the same runs twice."""
  with open(path, "w") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      raise StageError(f"another results run holds {path}") from None
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def run_spec(name: str) -> RunSpec:
  """A baseline's spec, or a method fine-tuned with its own preset."""
  return BASELINES.get(name) or RunSpec(name, name)


def load_config(config_file: str, arg: str, flag_overrides: dict):
  """The config ``vlkg.main --config <file>:<arg> --config.k=v ...`` would train.

  The file is loaded by path, as ``vlkg.main``'s config flag does.
  """
  path = os.path.join(ROOT, config_file)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config file {path}")
  if ROOT not in sys.path:  # config files import their shared helpers from configs/
    sys.path.insert(0, ROOT)
  name = "vlkg_results_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  for dotted, value in flag_overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(written: dict, expected: dict) -> list[str]:
  """Keys on which a run's ``config.json`` and the config it would now get differ.

  The trainer fills in what the dataset decides (``model.text.vocab_size`` when 0)
  and adds the tokenizer's description; neither is a change.
  """
  old = _flat({k: v for k, v in written.items() if k != "tokenizer"})
  new = _flat(expected)
  if new.get("model.text.vocab_size") == 0:
    new.pop("model.text.vocab_size")
    old.pop("model.text.vocab_size", None)
  return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


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


Runner = Callable[[Sequence[str], str], None]


def _die_with_parent() -> None:
  """Linux: the stage is killed when the results process dies, so that a killed
  results run leaves no trainer behind to race the restarted one."""
  try:
    import ctypes
    import signal
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def subprocess_runner(argv: Sequence[str], log_path: str) -> None:
  """Runs ``argv`` in the repository root, its output appended to ``log_path``."""
  with open(log_path, "a") as log:
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    rc = subprocess.run(list(argv), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                        preexec_fn=preexec).returncode
  if rc != 0:
    with open(log_path) as f:
      tail = "".join(f.readlines()[-30:])
    raise StageError(f"{' '.join(argv)} exited with {rc}; the end of {log_path}:\n{tail}")


def check_parent(stage: "Stage", record: bool) -> None:
  """A fine-tune records which base params it starts from (``record``); one made
  from other base params (the base was trained again) is stale."""
  path = os.path.join(stage.workdir, PARENT_FILE)
  if not os.path.exists(os.path.join(stage.parent, evaluation.PARAMS)):
    return  # the base is not trained yet
  stamp = evaluation.params_stamp(stage.parent)
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f) != stamp:
        raise StaleRunError(f"{stage.workdir} was fine-tuned from other params than "
                            f"{stage.parent}/params.npz (the base was trained again); "
                            f"delete {stage.workdir} to retrain it")
  elif record:
    with open(path, "w") as f:
      json.dump(stamp, f)


def check_tokenizer(stage: "Stage") -> None:
  """Each method prepares its own records of the world (its fields differ), each
  with a tokenizer trained on the same captions; the fine-tune reads the base's
  token embeddings, so the two tokenizers must be one."""
  descs = []
  for workdir in (stage.parent, stage.workdir):
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
      descs.append(json.load(f).get("tokenizer"))
  if descs[0] != descs[1]:
    raise StageError(f"{stage.workdir} was tokenized with {descs[1]}, but its base "
                     f"{stage.parent} with {descs[0]}: the base's token embeddings "
                     "would be read with other ids")


@dataclasses.dataclass
class Stage:
  """One training run and its evaluation."""
  name: str
  workdir: str
  config_file: str
  arg: str
  flag_overrides: dict
  parent: str = ""  # the workdir whose params.npz this run starts from

  def argv(self, python: str) -> list[str]:
    flags_ = [f"--config.{k}={v}" for k, v in self.flag_overrides.items()]
    return [python, "-m", "vlkg.main", "--config", f"{self.config_file}:{self.arg}",
            *flags_, "--workdir", self.workdir]


class Protocol:
  """Runs the base, then every run for every seed, each evaluated; see module doc."""

  def __init__(self, out: str, runs: Sequence[str], seeds: Sequence[int], *,
               quick: bool = False, runner: Runner = subprocess_runner,
               python: str = sys.executable, log: Callable[[str], None] = print):
    self.out = os.path.abspath(os.path.expanduser(out))
    self.runs, self.seeds = list(runs), list(seeds)
    self.quick, self.runner, self.python, self.log = quick, runner, python, log

  def _arg(self, preset: str, overrides: Sequence[str] = ()) -> str:
    return ",".join([preset, *overrides, *(QUICK if self.quick else ())])

  def base_stage(self) -> Stage:
    return Stage(BASE, os.path.join(self.out, BASE), "configs/clip.py",
                 self._arg("base"), {})

  def finetune_stage(self, run: str, seed: int) -> Stage:
    spec = run_spec(run)
    return Stage(f"{run} seed {seed}", os.path.join(self.out, run, f"seed{seed}"),
                 f"configs/{spec.config}.py", self._arg("finetune", spec.overrides),
                 {"model_init": os.path.join(self.out, BASE), "seed": seed},
                 parent=os.path.join(self.out, BASE))

  def stages(self) -> list[Stage]:
    """The base, then seed by seed every run (so one full seed comes first)."""
    return [self.base_stage()] + [self.finetune_stage(r, s)
                                  for s in self.seeds for r in self.runs]

  def check(self, stage: Stage):
    """The stage's config; raises StaleRunError if its workdir holds another."""
    config = load_config(stage.config_file, stage.arg, stage.flag_overrides)
    path = os.path.join(stage.workdir, CONFIG_FILE)
    if os.path.exists(path):
      with open(path) as f:
        changes = config_changes(json.load(f), json.loads(config.to_json()))
      if changes:
        remedy = (f"every run under {self.out} descends from it: use a new --out, or "
                  f"delete {self.out}" if stage.name == BASE else
                  f"delete {stage.workdir} to retrain it")
        raise StaleRunError(f"{stage.workdir} was trained with another config ("
                            + "; ".join(changes) + f"); {remedy}")
    if stage.parent:
      check_parent(stage, record=False)
    return config

  def run_stage(self, stage: Stage) -> dict:
    """Trains and evaluates ``stage`` unless done; its metrics."""
    config = self.check(stage)
    os.makedirs(stage.workdir, exist_ok=True)
    if stage.parent:
      check_parent(stage, record=True)
    if finished(stage.workdir, config.total_steps):
      self.log(f"[results] {stage.name}: trained (reused)")
    else:
      self.log(f"[results] {stage.name}: training in {stage.workdir}")
      seconds = timed(stage.workdir, "train", lambda: self.runner(
          stage.argv(self.python), os.path.join(stage.workdir, "train.log")))
      self.log(f"[results] {stage.name}: trained in {seconds:.0f} s")
      if not finished(stage.workdir, config.total_steps):
        raise StageError(f"{stage.workdir}: training ended without params.npz and the "
                         f"eval of step {config.total_steps} in {METRICS_FILE}; if "
                         "params.npz is there, delete it and run again (vlkg.main "
                         "then resumes from its last checkpoint and evaluates)")
    if stage.parent:
      check_tokenizer(stage)
    metrics = final_metrics(stage.workdir)
    metrics.update(self.evaluate(stage))
    return metrics

  def evaluate(self, stage: Stage) -> dict:
    """The cached evaluation of ``stage``, computed if missing or stale."""
    path = os.path.join(stage.workdir, EVALUATION_FILE)
    stamp = evaluation.params_stamp(stage.workdir)
    if os.path.exists(path):
      with open(path) as f:
        cached = json.load(f)
      if cached.get("params") == stamp:
        self.log(f"[results] {stage.name}: evaluated (reused)")
        return cached["metrics"]
    argv = [self.python, "-m", "vlkg.results.evaluation", "--workdir", stage.workdir,
            "--out", path]
    seconds = timed(stage.workdir, "evaluate", lambda: self.runner(
        argv, os.path.join(stage.workdir, "evaluate.log")))
    self.log(f"[results] {stage.name}: evaluated in {seconds:.0f} s")
    with open(path) as f:
      return json.load(f)["metrics"]

  def run(self) -> dict:
    """Runs every stage; ``{"base": metrics, "runs": {run: {seed: metrics}},
    "times": [{"stage", "train", "evaluate", "resumed"}]}``."""
    os.makedirs(self.out, exist_ok=True)
    with _locked(os.path.join(self.out, LOCK_FILE)):
      return self._run()

  def _run(self) -> dict:
    start = time.perf_counter()
    base, *finetunes = self.stages()
    # Every stage's config is checked before anything trains: a stale run is
    # reported now, not after an hour of training.
    for stage in [base, *finetunes]:
      self.check(stage)
    result = {"base": self.run_stage(base), "runs": {}, "times": []}
    pairs = [(r, s) for s in self.seeds for r in self.runs]
    for (run, seed), stage in zip(pairs, finetunes):
      result["runs"].setdefault(run, {})[seed] = self.run_stage(stage)
    for stage in [base, *finetunes]:
      train, resumed_t = stage_seconds(stage.workdir, "train")
      evaluate, _ = stage_seconds(stage.workdir, "evaluate")
      result["times"].append({"stage": stage.name, "train": train, "evaluate": evaluate,
                              "resumed": resumed_t})
    result["seconds"] = time.perf_counter() - start
    return result
