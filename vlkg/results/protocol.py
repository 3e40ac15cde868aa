"""The stages of the world protocol, each a subprocess, resumable and timed.

A run is a baseline (``BASELINES``), a method, or a run that a method module
declares (``vlkg.results.runs``: its paper's ablations). Layout of the protocol's
directory ``OUT``::

    OUT/base/                 python -m vlkg.main --config configs/clip.py:base
    OUT/<run>/seed<S>/        python -m vlkg.main --config configs/<m>.py:finetune
                                  --config.model_init=OUT/base --config.seed=S
    <workdir>/evaluation.json python -m vlkg.results.evaluation (probes, blind score,
                              evaluators added since the run trained)
    <workdir>/protocol_config.json  the stage's config as the protocol builds it now
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
size and time of the params it measured. ``reevaluate`` names evaluators that
changed since the runs trained: each run's evaluation runs them again on its params,
their metrics replacing the run's own, and a later evaluation keeps them.

A changed config is an error, never a silent reuse: before a stage starts, the
config it would write is compared with the ``config.json`` of its workdir. Only
what is evaluated may differ (``workdir.NOT_TRAINING``): an evaluator added since a
run trained is run on its params by the evaluation stage. A
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
from vlkg.results import runs as runs_lib
from vlkg.results.workdir import (CONFIG_FILE, EVALUATION_FILE, METRICS_FILE,
                                  StageError, StaleRunError, check_parent,
                                  check_tokenizer, config_changes,
                                  evaluation_changes, final_metrics, finished,
                                  stage_seconds, timed)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = "base"
LOCK_FILE = ".lock"
# The config the protocol would train the stage with today, for the evaluation
# stage (its evaluators may have grown since the run trained).
PROTOCOL_CONFIG_FILE = "protocol_config.json"


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A fine-tuned run: ``configs/<config>.py:finetune`` with ``overrides``; one that
  ``evaluates`` another run evaluates that run's params under this config."""
  name: str
  config: str
  overrides: tuple[str, ...] = ()
  evaluates: str = ""


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
    "model.text.heads=2", "total_steps=4", "log_every_steps=2", "checkpoint_every_steps=2",
    "eval_every_steps=0", "optim.warmup_steps=1",
)
# The base's plain scenes (world.num_plain), scaled down alike.
QUICK_BASE = ("world.num_plain=64", "world.plain_steps=2")
# The fine-tunes' VQA head (vlkg.evaluators.vqa_head), scaled down alike where a
# preset has it.
QUICK_FINETUNE = ("evals.vqa_head.fit_scenes=256", "evals.vqa_head.hidden=32",
                  "evals.vqa_head.steps=100", "evals.vqa_head.select_every=50")


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
  """A baseline's spec, a run a method module declares (``vlkg.results.runs``: its
  method's config with its overrides), or a method fine-tuned with its own preset."""
  if name in BASELINES:
    return BASELINES[name]
  declared = runs_lib.all_declared(reserved=BASELINES).get(name)
  if declared is not None:
    return RunSpec(name, declared.config or declared.method, declared.overrides,
                   declared.evaluates)
  return RunSpec(name, name)


def load_config(config_file: str, arg: str, flag_overrides: dict):
  """The config ``vlkg.main --config <file>:<arg> --config.k=v ...`` would train.

  The file is loaded by path, as ``vlkg.main``'s config flag does.
  """
  path = os.path.join(ROOT, config_file)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config file {path}")
  if ROOT not in sys.path:  # the repository root, as for `python -m vlkg.main`
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


Runner = Callable[[Sequence[str], str], None]


# Linux: the stage is killed when the results process dies (PR_SET_PDEATHSIG,
# which execve keeps), so that a killed results run leaves no trainer behind to race
# the restarted one. Set by a tiny exec wrapper, not a preexec_fn, which is unsafe
# in a process with threads (JAX and TensorFlow start some).
_GUARD = ("import ctypes, os, signal, sys; "
          "ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL); "
          "os.getppid() == int(sys.argv[1]) or sys.exit('the results run is gone'); "
          "os.execvp(sys.argv[2], sys.argv[2:])")


def guarded(argv: Sequence[str]) -> list[str]:
  """``argv`` run so that it dies with this process (Linux; elsewhere as is)."""
  if not sys.platform.startswith("linux"):
    return list(argv)
  return [sys.executable, "-c", _GUARD, str(os.getpid()), *argv]


def subprocess_runner(argv: Sequence[str], log_path: str) -> None:
  """Runs ``argv`` in the repository root, its output appended to ``log_path``."""
  with open(log_path, "a") as log:
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    rc = subprocess.run(guarded(argv), cwd=ROOT, stdout=log,
                        stderr=subprocess.STDOUT).returncode
  if rc != 0:
    with open(log_path) as f:
      tail = "".join(f.readlines()[-30:])
    raise StageError(f"{' '.join(argv)} exited with {rc}; the end of {log_path}:\n{tail}")


@dataclasses.dataclass
class Stage:
  """One training run and its evaluation."""
  name: str
  workdir: str
  config_file: str
  arg: str
  flag_overrides: dict
  parent: str = ""  # the workdir whose params.npz this run starts from
  # An evaluation-only stage: the workdir whose params it evaluates under its own
  # config (``Run.evaluates``); it trains nothing.
  trained_in: str = ""

  def argv(self, python: str) -> list[str]:
    flags_ = [f"--config.{k}={v}" for k, v in self.flag_overrides.items()]
    return [python, "-m", "vlkg.main", "--config", f"{self.config_file}:{self.arg}",
            *flags_, "--workdir", self.workdir]


class Protocol:
  """Runs the base, then every run for every seed, each evaluated; see module doc."""

  def __init__(self, out: str, runs: Sequence[str], seeds: Sequence[int], *,
               quick: bool = False, runner: Runner = subprocess_runner,
               python: str = sys.executable, log: Callable[[str], None] = print,
               reevaluate: Sequence[str] = ()):
    self.out = os.path.abspath(os.path.expanduser(out))
    self.runs, self.seeds = list(runs), list(seeds)
    self.reevaluate = list(reevaluate)
    self.quick, self.runner, self.python, self.log = quick, runner, python, log

  def _arg(self, preset: str, overrides: Sequence[str] = ()) -> str:
    return ",".join([preset, *overrides, *(QUICK if self.quick else ())])

  def base_stage(self) -> Stage:
    return Stage(BASE, os.path.join(self.out, BASE), "configs/clip.py",
                 self._arg("base", QUICK_BASE if self.quick else ()), {})

  def _quick_head(self, spec: RunSpec) -> tuple[str, ...]:
    """``QUICK_FINETUNE`` with ``--quick`` where the run's preset has the VQA head."""
    if not self.quick:
      return ()
    config = load_config(f"configs/{spec.config}.py", "finetune", {})
    return QUICK_FINETUNE if "vqa_head" in config.evals else ()

  def finetune_stage(self, run: str, seed: int) -> Stage:
    spec = run_spec(run)
    trained_in = (os.path.join(self.out, spec.evaluates, f"seed{seed}")
                  if spec.evaluates else "")
    return Stage(f"{run} seed {seed}", os.path.join(self.out, run, f"seed{seed}"),
                 f"configs/{spec.config}.py",
                 self._arg("finetune", (*spec.overrides, *self._quick_head(spec))),
                 {"model_init": os.path.join(self.out, BASE), "seed": seed},
                 # An evaluation-only stage's parent is its trained run's.
                 parent="" if trained_in else os.path.join(self.out, BASE),
                 trained_in=trained_in)

  def _ordered_runs(self) -> list[str]:
    """The runs, each evaluation-only run after the run it evaluates (added if
    missing)."""
    out: list[str] = []

    def add(run):
      if run in out:
        return
      source = run_spec(run).evaluates
      if source:
        add(source)
      out.append(run)
    for run in self.runs:
      add(run)
    return out

  def stages(self) -> list[Stage]:
    """The base, then seed by seed every run (so one full seed comes first)."""
    return [self.base_stage()] + [self.finetune_stage(r, s)
                                  for s in self.seeds for r in self._ordered_runs()]

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
      check_parent(stage.workdir, stage.parent, record=False)
    return config

  def run_stage(self, stage: Stage) -> dict:
    """Trains and evaluates ``stage`` unless done; its metrics."""
    config = self.check(stage)
    if stage.trained_in:
      return self.evaluate_only(stage, config)
    os.makedirs(stage.workdir, exist_ok=True)
    if stage.parent:
      check_parent(stage.workdir, stage.parent, record=True)
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
      check_tokenizer(stage.workdir, stage.parent)
    metrics = final_metrics(stage.workdir)
    metrics.update(self.evaluate(stage, config))
    return metrics

  def evaluate_only(self, stage: Stage, config) -> dict:
    """An evaluation-only stage: every evaluation of ``stage.trained_in``'s params
    under the stage's config, which may differ from the trained run's only in
    what is evaluated (``workdir.evaluation_changes``)."""
    with open(os.path.join(stage.trained_in, CONFIG_FILE)) as f:
      trained = json.load(f)
    changes = evaluation_changes(trained, json.loads(config.to_json()))
    if changes:
      raise StaleRunError(
          f"{stage.name} evaluates the params of {stage.trained_in}, but its config "
          "changes what trains (" + "; ".join(changes) + "): an evaluation-only "
          "run may change only evals and eval_* keys")
    os.makedirs(stage.workdir, exist_ok=True)
    return self.evaluate(stage, config, params_dir=stage.trained_in)

  def evaluate(self, stage: Stage, config, params_dir: str = "") -> dict:
    """The cached evaluation of ``stage``, computed if missing or stale; with
    ``params_dir``, every evaluation of the params there (an evaluation-only
    stage), not only those its training left out."""
    path = os.path.join(stage.workdir, EVALUATION_FILE)
    config_path = os.path.join(stage.workdir, PROTOCOL_CONFIG_FILE)
    with open(config_path, "w") as f:
      f.write(config.to_json())
    expected = json.loads(config.to_json())
    source = params_dir or stage.workdir
    stamp = evaluation.params_stamp(source)
    key = (evaluation.full_key(expected) if params_dir
           else evaluation.cache_key(stage.workdir, expected, self.reevaluate))
    if os.path.exists(path):
      with open(path) as f:
        cached = json.load(f)
      if cached.get("params") == stamp and evaluation.covers(cached.get("evals", []),
                                                             key):
        self.log(f"[results] {stage.name}: evaluated (reused)")
        return cached["metrics"]
    argv = [self.python, "-m", "vlkg.results.evaluation", "--workdir", source,
            "--out", path, "--config", config_path] + (
                ["--all"] if params_dir else
                ["--reevaluate", ",".join(self.reevaluate)] if self.reevaluate else [])
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
    pairs = [(r, s) for s in self.seeds for r in self._ordered_runs()]
    for (run, seed), stage in zip(pairs, finetunes):
      result["runs"].setdefault(run, {})[seed] = self.run_stage(stage)
    for stage in [base, *finetunes]:
      train, resumed_t = stage_seconds(stage.workdir, "train")
      evaluate, _ = stage_seconds(stage.workdir, "evaluate")
      result["times"].append({"stage": stage.name, "train": train, "evaluate": evaluate,
                              "resumed": resumed_t})
    result["seconds"] = time.perf_counter() - start
    return result
