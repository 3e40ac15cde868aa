"""Builds the prepared dataset of a config once (shards, tokenizer, suites, KG).

    python -m vlkg.tools.prepare --config configs/clip.py
    python -m vlkg.tools.prepare --config configs/structure_clip.py:vit_b32 \
        --config.input.data=coco --config.input.path=coco/annotations

The first builds the built-in world; the second a real corpus (docs/data.md, Real
corpora), reporting images written per second and the images found missing.
``vlkg.main`` runs the same step by itself when the data is missing.
"""

from __future__ import annotations

import json
import os


from absl import flags, logging
from ml_collections import config_flags

from vlkg import console, files
from vlkg.data import prepare

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_FORCE = flags.DEFINE_bool("force", False, "Rebuild even if the dataset exists.")


def main(argv):
  del argv
  config = _CONFIG.value
  dataset_dir = prepare.dataset_dir(config)
  if _FORCE.value:
    files.rmtree(dataset_dir, ignore_errors=True)
  dataset_dir = prepare.ensure_prepared(config)
  logging.info("dataset ready: %s", dataset_dir)
  info_path = os.path.join(dataset_dir, "corpus.json")
  if files.exists(info_path):  # a real corpus: what its build found
    with files.open(info_path) as f:
      info = json.load(f)
    images = sum(r["images"] for r in info["report"].values())
    logging.info("%d images in %.1fs (%.1f images/s; %.1f once the workers started); "
                 "missing: %s", images, info["build_seconds"],
                 images / max(info["build_seconds"], 1e-9),
                 images / max(info.get("write_seconds", info["build_seconds"]), 1e-9),
                 {s: r["missing_images"] for s, r in info["report"].items()})
  print(dataset_dir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  console.run(main)
