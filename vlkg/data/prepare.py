"""Finding, checking and (if needed) building the prepared dataset of a config.

``config.input.data`` picks the data: ``"world"`` (the built-in synthetic world,
``vlkg.data.world.build``) or a real corpus (``vlkg.data.corpora``: ``coco``,
``karpathy``, ``visual_genome``, ``captions``, ``tfds_coco``). Both give the same
record layout (``vlkg.data.records``). ``"tfds:vlkg_world"`` is the world read
through its TFDS dataset (``vlkg.data.world.tfds_builder``; ``_ensure_tfds``).

A dataset's directory name carries a fingerprint of everything that changes its
bytes (including the fields the method declares: their features' names, dtypes and
shapes and the config values their builders read), so two configs that differ in the world, or two corpora (or two versions of
one corpus's annotation files), never share (or overwrite) shards, and a directory
without a manifest (an interrupted prepare) is rebuilt, never read. A corpus is
fingerprinted by its options, the path, size and modification time of each
annotation file, and the tokenizer (its description and the sha256 of its files);
image files are not (there may be millions): after replacing images in place,
prepare again with ``--force``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

from vlkg import files
from vlkg.data import records

TFDS_WORLD = "tfds:vlkg_world"  # vlkg.data.world.tfds_builder.DATA


def is_world(data: str) -> bool:
  """Whether ``config.input.data`` is the built-in world (read directly or through
  its TFDS dataset)."""
  return data in ("world", TFDS_WORLD)


# Fields of config.world that do not change the dataset's bytes.
_NOT_FINGERPRINTED = ("workers", "plain_steps", "plain_every")  # how a run reads, not what is written
# World keys added after worlds were first prepared, with the value that writes the
# bytes written before they existed: at that value they leave the name alone, so
# prepared worlds and old runs still find theirs.
_ADDED_KEYS = {"caption_color_rate": 0.9, "num_plain": 0, "plain_attribute_rate": 0.5,
               "position_rate": 0.0, "train_attribute_rate": 0.5,
               "train_texture_rate": None}
_NO_DEFAULT = object()


def data_root(config) -> str:
  root = config.get("data_dir") or os.environ.get("VLKG_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "vlkg", "data")
  return files.abspath(root)


def _fingerprint(parts: dict, config) -> str:
  """12 hex digits of the sha256 of ``parts`` plus the method's fields."""
  from vlkg import methods
  declared = methods.fields(config)
  if declared:
    parts = {**parts, "fields": [field.fingerprint() for field in declared]}
  key = json.dumps(parts, sort_keys=True)
  return hashlib.sha256(key.encode()).hexdigest()[:12]


def world_fingerprint(config) -> str:
  from vlkg.data import world as world_lib
  from vlkg.data.world import build
  world = {k: v for k, v in world_lib.settings(config).to_dict().items()
           if k not in _NOT_FINGERPRINTED and _ADDED_KEYS.get(k, _NO_DEFAULT) != v}
  parts = {"world": world, "text_len": config.input.text_len,
           "format": records.FORMAT_VERSION, "generator": build.GENERATOR_VERSION}
  return _fingerprint(parts, config)


def _file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with files.open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def tokenizer_source(config, log: bool = False) -> tuple[dict | None, str]:
  """(description, directory its relative paths are in) of the tokenizer a real
  corpus is tokenised with, or (None, "") to train a sentencepiece model on it.

  ``input.tokenizer`` is a JSON file with a tokenizer description
  (``vlkg.data.tokenizer.from_description``), or a run or import directory (or its
  ``params.npz``) whose ``config.json`` has a ``"tokenizer"`` key. When it is empty
  and ``model_init`` is set, model_init's tokenizer is used: its weights were
  trained with it, and its token embedding has its vocabulary.
  """
  spec, origin = config.input.tokenizer, "config.input.tokenizer"
  if not spec and config.model_init:
    spec, origin = config.model_init, "config.model_init"
  if not spec:
    return None, ""
  path = files.abspath(spec)
  if files.isdir(path):
    path = os.path.join(path, "config.json")
  elif path.endswith(".npz"):
    path = os.path.join(os.path.dirname(path), "config.json")
  if not files.isfile(path):
    raise FileNotFoundError(f"{origin}={spec!r}: no tokenizer description at {path}; "
                            "set config.input.tokenizer to a tokenizer JSON or a run dir")
  from vlkg.files import read_json
  data = read_json(path)
  desc = data.get("tokenizer", data) if isinstance(data, dict) else None
  if not isinstance(desc, dict) or "type" not in desc:
    raise ValueError(f"{path} ({origin}) has no tokenizer description: expected a "
                     "'tokenizer' key or a description with a 'type' key")
  if log:
    logging.info("tokenizer: %s from %s (%s)", desc["type"], path,
                 "model_init's, since config.input.tokenizer is empty"
                 if origin == "config.model_init" else origin)
  return desc, os.path.dirname(path)


def corpus_fingerprint(config) -> str:
  from vlkg.data import corpora
  from vlkg.data.corpora import build
  options = corpora.Options.from_config(config)
  annotations = []
  for path in corpora.load(config.input.data).annotation_files(options):
    st = os.stat(path) if os.path.exists(path) else None
    annotations.append([path, st.st_size if st else None, st.st_mtime_ns if st else None])
  desc, base_dir = tokenizer_source(config)
  if desc is None:
    tokenizer = {"train": "sentencepiece", "vocab_size": config.input.vocab_size}
  else:
    tokenizer = dict(desc)
    for key, value in desc.items():
      if key.endswith("_path") and isinstance(value, str) and value:
        src = files.under(base_dir, value)
        tokenizer[key] = _file_sha256(src) if files.isfile(src) else f"missing:{src}"
  parts = {"corpus": config.input.data, "options": dataclasses.asdict(options),
           "files": annotations, "max_items": config.input.max_items,
           "captions_per_image": config.input.captions_per_image,
           "image_size": config.model.image_size, "text_len": config.input.text_len,
           "seed": config.seed, "tokenizer": tokenizer,
           "format": records.FORMAT_VERSION, "builder": build.CORPUS_VERSION}
  return _fingerprint(parts, config)


def run_dataset_dir(run: str) -> str:
  """The dataset a run was trained on, from its ``config.json`` (``run`` a workdir or
  a ``params.npz`` beside one)."""
  from vlkg import config as config_lib
  return dataset_dir(config_lib.load_run_config(run))


def dataset_dir(config) -> str:
  data = config.input.data
  if is_world(data):
    # Corpus options on the world would be ignored; more likely input.data was forgotten.
    # (.get: the config.json of a run from before these keys existed has none.)
    for key in ("path", "images", "tokenizer"):
      if config.input.get(key):
        raise ValueError(f"config.input.{key}={config.input[key]!r} applies to real "
                         "corpora only, but config.input.data='world'")
    return os.path.join(data_root(config), f"world-{world_fingerprint(config)}")
  from vlkg.data import corpora
  corpora.load(data)  # an unknown name is an error that lists the known ones
  if not config.input.path and data != "tfds_coco":
    raise ValueError(f"config.input.data={data!r} needs config.input.path (the "
                     "annotation file or folder; see docs/data.md, Real corpora)")
  return os.path.join(data_root(config), f"{data}-{corpus_fingerprint(config)}")


def ensure_prepared(config) -> str:
  """The dataset directory of ``config``, built first if missing or incomplete."""
  directory = dataset_dir(config)
  if files.exists(os.path.join(directory, records.MANIFEST)):
    return _ensure_tfds(config, directory)
  if files.exists(directory):
    logging.warning("%s has no manifest (an interrupted prepare?); rebuilding it", directory)
    files.rmtree(directory)
  files.makedirs(os.path.dirname(directory))
  logging.info("preparing %s into %s", config.input.data, directory)
  if is_world(config.input.data):
    from vlkg.data.world import build
    info = records.build_atomically(directory, lambda tmp: build.build(tmp, config))
  else:
    from vlkg.data.corpora import build
    source = tokenizer_source(config, log=True)
    info = records.build_atomically(directory,
                                    lambda tmp: build.build(tmp, config, source))
  logging.info("prepared %s in %.1fs", directory, info["build_seconds"])
  return _ensure_tfds(config, directory)


def _ensure_tfds(config, directory: str) -> str:
  """For ``input.data="tfds:vlkg_world"``: the TFDS dataset of the prepared world,
  built inside its directory if missing; the directory is returned either way."""
  if config.input.data == TFDS_WORLD:
    from vlkg.data.world import tfds_builder
    logging.info("TFDS %s: %s", tfds_builder.NAME, tfds_builder.ensure_built(directory))
  return directory
