"""Builds the prepared dataset of a config once (shards, tokenizer, suites, KG).

    python -m vlkg.tools.prepare --config configs/clip.py

``vlkg.main`` runs the same step by itself when the data is missing.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from vlkg.data import prepare

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_FORCE = flags.DEFINE_bool("force", False, "Rebuild even if the dataset exists.")


def main(argv):
  del argv
  config = _CONFIG.value
  directory = prepare.dataset_dir(config)
  if _FORCE.value:
    import shutil
    shutil.rmtree(directory, ignore_errors=True)
  directory = prepare.ensure_prepared(config)
  logging.info("dataset ready: %s", directory)
  print(directory)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
