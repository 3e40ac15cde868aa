"""The evaluations of a finished run that its ``metrics.jsonl`` does not hold.

    python -m vlkg.results.evaluation --workdir DIR --out DIR/evaluation.json

The world suites, retrieval and grounding are the run's own final evaluation
(``metrics.jsonl``). This adds the linear probes of the image embedding
(``vlkg.evaluators.probe``: does the tower know shapes at all?) and the caption
prior's blind score (``vlkg.evaluators.text_prior``: how much of an attribute-swap
score the captions alone explain), both on the run's own world; and the evaluators
that the protocol's config now names but the run's own did not (``--evals``, an
evaluator added since the run trained), on the dataset of the protocol's config
(``--config``), which holds the same records; and, for a world run trained before
the knowledge suites existed (its metrics lack ``world/kvqa``), ``world/kvqa`` and
``world/entity_linking`` (`vlkg.evaluators.world_knowledge`) on its world's test
split; and the evaluators named by ``--reevaluate`` (changed since the run
trained), whose metrics replace the run's own. With ``--all`` (an evaluation-only
run of the protocol, ``Run.evaluates``) it runs every evaluator of ``--config`` on the params, the encoder built from that
config (its ``eval_*`` keys, say) rather than the run's own. It runs as its own
process, as training does, so that the results command
never holds an accelerator. The output records which ``params.npz`` it measured
(size and modification time), so that a retrained run is evaluated again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

from absl import app, flags

PARAMS = "params.npz"


def params_stamp(workdir: str) -> dict:
  """What identifies the params a cached evaluation measured."""
  st = os.stat(os.path.join(workdir, PARAMS))
  return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


# Added to an evaluation's key when it scores the knowledge suites for an older run.
KNOWLEDGE_KEY = "world_knowledge"


def lacks_knowledge(workdir: str) -> bool:
  """A world run whose final metrics predate ``world/kvqa``."""
  from vlkg.results import workdir as workdir_lib
  metrics = workdir_lib.final_metrics(workdir)
  return any(k.startswith("world/") for k in metrics) and "world/kvqa" not in metrics


def extra_evals(workdir: str, config: dict | None,
                reevaluate: Sequence[str] = ()) -> dict:
  """The evaluators of ``config`` (the protocol's config of the run) to run on the
  params: those the run's own config lacks, and those named in ``reevaluate``
  (an evaluator changed since the run trained: its metrics replace the run's)."""
  from vlkg.results import workdir as workdir_lib
  config = config or {}
  extra = workdir_lib.missing_evals(workdir, config)
  named = config.get("evals", {})
  extra.update({k: named[k] for k in reevaluate if k in named})
  return extra


def cache_key(workdir: str, config: dict | None,
              reevaluate: Sequence[str] = ()) -> list[str]:
  """The extra evaluations an evaluation runs; a cached evaluation whose key holds
  them all stands (`covers`)."""
  key = sorted(extra_evals(workdir, config, reevaluate))
  return key + [KNOWLEDGE_KEY] if lacks_knowledge(workdir) else key


def covers(cached: Sequence[str], key: Sequence[str]) -> bool:
  """Whether a cached evaluation of key ``cached`` holds every evaluation of
  ``key``: an evaluator re-run once (``reevaluate``) stays re-run."""
  return (ALL_KEY in cached) == (ALL_KEY in key) and set(key) <= set(cached)


# An evaluation of every evaluator (``--all``) is keyed by this and their names.
ALL_KEY = "*all*"


def full_key(config: dict) -> list[str]:
  """The key of an evaluation that runs every evaluator of ``config``."""
  return [ALL_KEY, *sorted(config.get("evals", {}))]


def evaluate_all(workdir: str, config: dict) -> dict[str, float]:
  """Every evaluation of the params in ``workdir`` under ``config`` (the protocol's
  config of an evaluation-only run, which builds the encoder), probes included."""
  import ml_collections
  from vlkg import api, evaluators
  from vlkg.data import prepare
  from vlkg.evaluators import probe, text_prior
  config = ml_collections.ConfigDict(config)
  data = prepare.ensure_prepared(config)
  model = api.load(workdir, dataset_dir=data, config=config)
  out = dict(probe.evaluate(model, data))
  out.update(text_prior.evaluate(model, data))
  out.update(evaluators.run(config, model, data))
  return out


def evaluate(workdir: str, config: dict | None = None,
             reevaluate: Sequence[str] = ()) -> dict[str, float]:
  """``probe/*`` and ``text_prior/*`` of the run in ``workdir``, and the evaluators
  of ``config`` (the protocol's config of the run, as a dict) that the run lacks or
  that ``reevaluate`` names (`extra_evals`)."""
  from vlkg import api, evaluators
  from vlkg.data import prepare
  from vlkg.evaluators import probe, text_prior
  from vlkg import config as config_lib
  # The run's dataset, prepared again if it is gone (or was prepared by an older
  # generator: the records of a seed are the same bytes).
  data = prepare.ensure_prepared(config_lib.load_run_config(workdir))
  model = api.load(workdir)
  out = dict(probe.evaluate(model, data))
  out.update(text_prior.evaluate(model, data))
  if lacks_knowledge(workdir):
    from vlkg.evaluators import common, world_knowledge
    out.update(world_knowledge.score(common.EmbeddingCache(model, 256), data, "test",
                                     "world")[0])
  extra = extra_evals(workdir, config, reevaluate)
  if extra:
    import ml_collections
    current = ml_collections.ConfigDict(config)
    current.evals = extra
    current_data = prepare.ensure_prepared(current)
    out.update(evaluators.run(current, api.load(workdir, dataset_dir=current_data),
                              current_data))
  return out


def write(workdir: str, out: str, config: dict | None = None,
          everything: bool = False, reevaluate: Sequence[str] = ()) -> dict:
  """Evaluates (``everything``: `evaluate_all`) and writes ``{"params": stamp,
  "evals": names, "metrics": ..., "seconds": ...}``."""
  stamp = params_stamp(workdir)
  start = time.perf_counter()
  if everything:
    if config is None:
      raise ValueError("--all needs --config")
    key, metrics = full_key(config), evaluate_all(workdir, config)
  else:
    key = cache_key(workdir, config, reevaluate)
    metrics = evaluate(workdir, config, reevaluate)
  result = {"params": stamp, "evals": key, "metrics": metrics,
            "seconds": time.perf_counter() - start}
  tmp = out + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  os.replace(tmp, out)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  config = None
  if flags.FLAGS.config:
    with open(flags.FLAGS.config) as f:
      config = json.load(f)
  result = write(flags.FLAGS.workdir, flags.FLAGS.out, config, flags.FLAGS.all,
                 flags.FLAGS.reevaluate or ())
  print(json.dumps(result["metrics"], sort_keys=True))


if __name__ == "__main__":
  # Defined here, not on import: the results command imports this module and has
  # its own --out.
  flags.DEFINE_string("workdir", None, "A finished run's directory.")
  flags.DEFINE_string("out", None, "Where to write the JSON.")
  flags.DEFINE_string("config", None, "The protocol's config of the run (JSON); its "
                      "evaluators that the run's config.json lacks are run too.")
  flags.DEFINE_bool("all", False, "Run every evaluator of --config, the encoder "
                    "built from it (an evaluation-only run).")
  flags.DEFINE_list("reevaluate", None, "Evaluators of --config to run again on the "
                    "params, their metrics replacing the run's own.")
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)
