"""A fake runner for the results protocol's tests: it writes what ``vlkg.main`` and
``vlkg.results.evaluation`` would write for a stage, with a known score per run,
instead of training (tests/results/test_protocol.py)."""

import ast
import json
import os

import numpy as np

from vlkg.results import evaluation, protocol, report

# The score of each run on every metric (plus 0.01 per seed).
SCORES = {"base": 0.55, "clip": 0.60, "negclip": 0.66, "structure_clip": 0.80,
          "mosaiclip": 0.82, "loupe": 0.61, "knowledge_clip": 0.72, "clip_kg": 0.65,
          "knowledge_clip_no_e2e": 0.70, "knowledge_clip_no_e2r": 0.71,
          "knowledge_clip_no_g2e": 0.69, "knowledge_clip_no_kd": 0.68,
          "reavl": 0.75, "reavl_no_retrieval": 0.62, "reavl_no_gate": 0.73,
          "reavl_distractors": 0.72, "reavl_no_gate_distractors": 0.65,
          "reavl_10pct": 0.70, "clip_10pct": 0.52}
# What the fake trainer writes besides the suites: the KG evaluation's figures.
KG_METRICS = ("kg/tail_R@1", "kg/relation_acc")
# What a re-run kg evaluator scores (``--reevaluate kg``).
RESCORED = 0.99
EXTRA_METRICS = ("world_comp/knowledge", *KG_METRICS, "world/kvqa", "world/kvqa_head",
                 "reavl/recall@5")


class FakeRunner:
  """Writes a stage's outputs instead of training; records every call."""

  def __init__(self):
    self.calls = []

  def __call__(self, argv, log_path):
    self.calls.append(list(argv))
    if argv[2] == "vlkg.main":
      self.train(argv)
    else:
      self.evaluate(argv)

  @staticmethod
  def _score(workdir):
    parts = workdir.rstrip("/").split(os.sep)
    if parts[-1] == "base":
      return SCORES["base"]
    return SCORES[parts[-2]] + 0.01 * int(parts[-1][len("seed"):])

  def train(self, argv):
    config_file, arg = argv[argv.index("--config") + 1].split(":", 1)
    overrides = {}
    for a in argv:
      if a.startswith("--config."):
        key, value = a[len("--config."):].split("=", 1)
        try:
          overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
          overrides[key] = value
    workdir = argv[argv.index("--workdir") + 1]
    config = protocol.load_config(config_file, arg, overrides)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      data = json.loads(config.to_json())
      data["model"]["text"]["vocab_size"] = 512  # what the trainer fills in
      json.dump({**data, "tokenizer": {"type": "bpe"}}, f)
    v = self._score(workdir)
    metrics = {m: v for m in report.SUITE_METRICS if not m.startswith(("probe", "text_"))}
    metrics.update({m: v for m in EXTRA_METRICS})
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"step": config.total_steps, "loss": 1.0}) + "\n")
      f.write(json.dumps({"step": config.total_steps, **metrics}) + "\n")
    np.savez(os.path.join(workdir, "params.npz"), w=np.zeros(3))

  def evaluate(self, argv):
    workdir, out = argv[argv.index("--workdir") + 1], argv[argv.index("--out") + 1]
    # The run's own score (an evaluation-only run evaluates another's params).
    v = self._score(os.path.dirname(out))
    metrics = {"probe/shape": v, "text_prior/test/blind": 0.5,
               "text_prior/test_comp/blind": 0.5}
    with open(argv[argv.index("--config") + 1]) as f:
      config = json.load(f)
    if "--all" in argv:
      evals = evaluation.full_key(config)
      metrics.update({m: v for m in report.SUITE_METRICS
                      if not m.startswith(("probe", "text_"))})
      metrics.update({m: v for m in EXTRA_METRICS})
    else:
      again = (argv[argv.index("--reevaluate") + 1].split(",")
               if "--reevaluate" in argv else [])
      evals = evaluation.cache_key(workdir, config, again)
      # A re-run evaluator's figures replace the trainer's (RESCORED).
      metrics.update({m: RESCORED for m in KG_METRICS if "kg" in again})
    metrics.update({f"{name}/added": v for name in evals})
    with open(out, "w") as f:
      json.dump({"params": evaluation.params_stamp(workdir), "evals": evals,
                 "metrics": metrics}, f)

  def trained(self):
    return [c[c.index("--workdir") + 1] for c in self.calls if c[2] == "vlkg.main"]

  def evaluated(self):
    return [c[c.index("--workdir") + 1] for c in self.calls if c[2] != "vlkg.main"]
