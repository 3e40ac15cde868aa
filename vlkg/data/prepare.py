"""Finding, checking and (if needed) building the prepared dataset of a config.

A dataset's directory name carries a fingerprint of everything that changes its
bytes, so two configs that differ in the world never share (or overwrite) shards,
and a directory without a manifest (an interrupted prepare) is rebuilt, never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil

from vlkg.data import records

# Fields of config.world that do not change the dataset's bytes.
_NOT_FINGERPRINTED = ("workers",)


def data_root(config) -> str:
  root = config.get("data_dir") or os.environ.get("VLKG_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "vlkg", "data")
  return os.path.abspath(os.path.expanduser(root))


def graph_config(config) -> dict | None:
  """The scene-graph fields the method reads (its FIELDS), with their sizes; None if
  it reads none. Only these are built, so CLIP's data carries no graph tensors."""
  from vlkg import methods
  fields = set(methods.load(config.method).FIELDS)
  if not fields & {"neg_text", "triples", "mosaic_texts", "phrase_spans"}:
    return None
  g = config.graph
  out = {"negatives": tuple(g.negatives) if "neg_text" in fields else (),
         "fallback_negatives": tuple(g.fallback_negatives) if "neg_text" in fields else (),
         "max_triples": g.max_triples if "triples" in fields else 0,
         "triple_tokens": g.triple_tokens if "triples" in fields else 0}
  if "mosaic_texts" in fields:
    # Only present for MosaiCLIP, so the fingerprints of the other methods' datasets
    # (and the datasets themselves) stay what they were.
    out.update(max_pos=g.max_pos, max_neg=g.max_neg, p1=g.p1)
  if "phrase_spans" in fields:
    out.update(max_phrases=g.max_phrases)
  return out


def world_fingerprint(config) -> str:
  world = {k: v for k, v in config.world.to_dict().items() if k not in _NOT_FINGERPRINTED}
  from vlkg.data.world import build
  parts = {"world": world, "text_len": config.input.text_len,
           "format": records.FORMAT_VERSION, "generator": build.GENERATOR_VERSION}
  graph = graph_config(config)
  if graph:
    parts["graph"] = graph
  key = json.dumps(parts, sort_keys=True)
  return hashlib.sha256(key.encode()).hexdigest()[:12]


def dataset_dir(config) -> str:
  data = config.input.data
  if data == "world":
    return os.path.join(data_root(config), f"world-{world_fingerprint(config)}")
  raise ValueError(f"config.input.data={data!r} is not a known dataset; expected 'world'")


def ensure_prepared(config) -> str:
  """The dataset directory of ``config``, built first if missing or incomplete."""
  directory = dataset_dir(config)
  if os.path.exists(os.path.join(directory, records.MANIFEST)):
    return directory
  if os.path.exists(directory):
    logging.warning("%s has no manifest (an interrupted prepare?); rebuilding it", directory)
    shutil.rmtree(directory)
  os.makedirs(os.path.dirname(directory), exist_ok=True)
  logging.info("preparing %s into %s", config.input.data, directory)
  from vlkg.data.world import build
  info = build.build_atomically(directory, config.world, config.input.text_len,
                                graph_config(config))
  logging.info("prepared %s in %.1fs", directory, info["build_seconds"])
  return directory
