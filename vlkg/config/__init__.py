"""Run configs: the presets, ``preset,key=value`` overrides, durations, old runs.

Configs are code (big_vision style). ``configs/<method>.py`` holds
``get_config(arg=None)``, which reads as

    preset, overrides = config.parse_arg(arg)
    c = config.base_config(preset, "structure_clip")   # shared keys + config.<method>
    ...                                                # the method's own changes
    return config.finalize(c, overrides)               # overrides, then lock

``finalize`` is the last step: a config is finished there and nothing rewrites it
afterwards. What depends on the prepared dataset (the vocabulary size, durations in
epochs, the evaluators that apply to a real corpus) is worked out from it in one
place, ``vlkg.train.resolve_config``, into a new config that the run writes to its
``config.json``.

The returned ConfigDict is locked: ``--config.no_such_key=1`` and
``:no_such_key=1`` are errors that name the closest key. Dependencies point one
way: ``configs/`` imports ``vlkg.config``, never the reverse.
"""

from __future__ import annotations

import ml_collections

from vlkg.config import durations
from vlkg.config.base import PRESETS, add_vqa_head, base_config
from vlkg.config.durations import steps
from vlkg.config.legacy import load_run_config, upgrade
from vlkg.config.overrides import apply_overrides
from vlkg.config import overrides as _overrides

__all__ = ["PRESETS", "add_vqa_head", "apply_overrides", "base_config", "durations",
           "finalize", "get_config", "load_run_config", "parse_arg", "steps", "upgrade"]


def parse_arg(arg: str | None) -> tuple[str, dict]:
  """``"smoke,total_steps=10"`` -> ``("smoke", {"total_steps": 10})``; the preset
  defaults to ``"default"``."""
  return _overrides.parse_arg(arg, PRESETS)


def finalize(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """Applies ``overrides`` (dotted key -> value) and locks ``config``."""
  apply_overrides(config, overrides)
  config.lock()
  return config


def get_config(method: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The shared config of ``method`` (``base_config`` with the method's section) at
  the preset and overrides of ``arg``. Tools use it where a run's settings do not
  depend on ``configs/<method>.py``'s own changes (its evals, its model_init_new)."""
  preset, overrides = parse_arg(arg)
  return finalize(base_config(preset, method), overrides)
