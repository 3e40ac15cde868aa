"""Entry point: ``python -m vlkg.main --config configs/clip.py --workdir DIR``.

``--mode train`` (default) trains and resumes automatically from ``DIR``;
``--mode eval`` runs the config's evaluators on ``DIR/params.npz``;
``--mode export`` writes ``DIR/params.npz`` from the latest checkpoint.
"""

import json
import logging as py_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "export"], "What to do.")


class _QuietLibraries(py_logging.Filter):
  """orbax logs every save phase at INFO; keep its warnings, drop its chatter."""

  def filter(self, record):
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def main(argv):
  py_logging.getLogger("absl").addFilter(_QuietLibraries())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  config, workdir = _CONFIG.value, _WORKDIR.value
  from vlkg import sharding
  sharding.initialize_distributed()
  if _MODE.value == "train":
    from vlkg import train
    result = train.train_and_evaluate(config, workdir)
  elif _MODE.value == "eval":
    from vlkg import api, evaluators
    from vlkg.data import prepare
    dataset_dir = prepare.ensure_prepared(config)
    result = evaluators.run(config, api.load(workdir, dataset_dir=dataset_dir), dataset_dir)
  else:
    from vlkg.tools import export
    result = {"params": export.export(workdir)}
  logging.info("done: %s", result)
  print(json.dumps(result, sort_keys=True, default=str))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
