"""Reads the ``config.json`` of runs written before keys were renamed.

A run directory stays loadable (``vlkg.api.load``), resumable and findable
(``vlkg.data.prepare.run_dataset_dir``) after a rename, so every reader of a run's
``config.json`` goes through `upgrade`:

  * ``world.image_size`` and ``input.image_size`` -> ``model.image_size`` (the
    model's input size was a world key, though every corpus used it);
  * ``log_every``, ``eval_every``, ``checkpoint_every`` -> ``<name>_steps``
    (durations may be given in steps, examples or epochs, `vlkg.config.durations`);
  * a key added since the run was written (`ADDED`) gets the value that does what
    the code did before it existed, so an old run reads as the same run.
"""

from __future__ import annotations

import copy
import json
import os

import ml_collections

from vlkg import files

CONFIG_FILE = "config.json"
RENAMED = {"log_every": "log_every_steps", "eval_every": "eval_every_steps",
           "checkpoint_every": "checkpoint_every_steps"}
# Every key that moved, old -> new (for error messages).
MOVED = {**RENAMED, "world.image_size": "model.image_size",
         "input.image_size": "model.image_size"}


# Keys added to configs after runs were written (dotted), with the value that
# behaves as the code did before: a run without the key is read with it. A key of
# a method's own section applies to runs that have that section.
ADDED: dict[str, object] = {
    "model.attention": "xla",
    "model.dtype": "float32",
    "model.max_logit_scale": 100.0,
    "model.min_logit_scale": None,
    # Knowledge-CLIP's "CLIP + KG" ablation is a mode; before, there was the method.
    "knowledge_clip.mode": "fusion",
    "input.train_fraction": 1.0,
    "reavl.itm_negatives_per_pair": 2,
    "reavl.retriever_key_grad": False,
    "reavl.gold_hops": 0,
    "reavl.hop_ranking": "joint",
    "reavl.gate_weight": 0.0,
    "reavl.eval_link_scorer": "retriever",
    "world.plain_attribute_rate": 0.5,
    "world.position_rate": 0.0,
    "world.plain_every": 0,
    "world.train_attribute_rate": 0.5,
    "world.train_texture_rate": None,
}


def _fill_added(data: dict) -> None:
  for dotted, value in ADDED.items():
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
      node = node.get(p) if isinstance(node, dict) else None
      if node is None:
        break
    if isinstance(node, dict) and leaf not in node:
      node[leaf] = copy.deepcopy(value)


def upgrade(data: dict) -> dict:
  """A copy of a run's config (as JSON data) in today's keys."""
  data = copy.deepcopy(data)
  _fill_added(data)
  for old, new in RENAMED.items():
    if old in data and new not in data:
      data[new] = data.pop(old)
  model = data.get("model")
  world_size = (data.get("world") or {}).pop("image_size", None)
  input_size = (data.get("input") or {}).pop("image_size", None)
  if isinstance(model, dict) and not model.get("image_size"):
    # As vlkg.api read them: the model's own size, a real corpus's, else the world's.
    size = input_size or world_size
    if size:
      model["image_size"] = size
  return data


def run_config_path(run: str) -> str:
  """``run``'s config.json: ``run`` is a workdir, or a file (params.npz) in one."""
  workdir = run if files.isdir(run) else os.path.dirname(files.abspath(run))
  return os.path.join(workdir, CONFIG_FILE)


def load_run_config(run: str) -> ml_collections.ConfigDict:
  """The upgraded config of a run directory (or of the run a params.npz is in)."""
  with files.open(run_config_path(run)) as f:
    return ml_collections.ConfigDict(upgrade(json.load(f)))
