"""Entry point: ``python -m vlkg.main --config configs/clip.py --workdir DIR``.

``--mode train`` (default) trains and resumes automatically from ``DIR``, and ends
with a summary of the run (`vlkg.summary`): its final headline metrics, its files,
and the commands to run next. A finished run, run again, says so and shows the
same summary. ``--mode eval`` runs the config's evaluators on ``DIR/params.npz``
and prints their metrics as one JSON line; ``--mode export`` writes
``DIR/params.npz`` from the latest checkpoint.

The console is `vlkg.console`'s: no library noise, and one line for a user's
mistake; ``--verbosity=1`` shows everything.
"""

import json

from absl import app, flags, logging
from ml_collections import config_flags

from vlkg import console

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "export"], "What to do.")


def _headline(method: str) -> tuple:
  """The method module's own headline patterns (its optional ``HEADLINE``)."""
  from vlkg import methods
  return tuple(getattr(methods.load(method), "HEADLINE", ()))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config, workdir = _CONFIG.value, _WORKDIR.value
  from vlkg import sharding
  sharding.initialize_distributed()
  if _MODE.value == "train":
    import jax
    from vlkg import summary, train
    result = train.train_and_evaluate(config, workdir)
    logging.debug("final metrics: %s", json.dumps(result, sort_keys=True, default=str))
    if jax.process_index() == 0:
      print(summary.run_summary(workdir, _headline(config.method)), flush=True)
    return
  if _MODE.value == "eval":
    import time
    from vlkg import api, evaluators, metrics
    from vlkg.data import prepare
    start = time.perf_counter()
    dataset_dir = prepare.ensure_prepared(config)
    result = evaluators.run(config, api.load(workdir, dataset_dir=dataset_dir), dataset_dir)
    metrics.log_eval(None, result, time.perf_counter() - start, _headline(config.method))
  else:
    from vlkg.tools import export
    result = {"params": export.export(workdir)}
  print(json.dumps(result, sort_keys=True, default=str))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  console.run(main)
