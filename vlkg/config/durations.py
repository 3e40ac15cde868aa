"""Durations in steps, examples or epochs, as big_vision gives them.

Every duration of a run is a group of three keys, of which exactly one is set (the
others are None):

=====================  ==============================================================
group                  keys
=====================  ==============================================================
``total``              ``total_steps`` | ``total_examples`` | ``total_epochs``
``optim.warmup``       ``optim.warmup_steps`` | ``optim.warmup_examples`` | ``optim.warmup_epochs``
``log_every``          ``log_every_steps`` | ``log_every_examples`` | ``log_every_epochs``
``eval_every``         ``eval_every_steps`` | ``eval_every_examples`` | ``eval_every_epochs``
``checkpoint_every``   ``checkpoint_every_steps`` | ``checkpoint_every_examples`` | ``checkpoint_every_epochs``
=====================  ==============================================================

To change the unit, clear the one a preset set: ``--config.total_steps=None
--config.total_epochs=2`` (or ``:total_steps=None,total_epochs=2``). Examples are
training examples (images, one caption each) and an epoch is one pass over the
``train`` split, so epochs need the prepared dataset's size: ``resolve`` runs once
the dataset is prepared (``vlkg.train.resolve_config``) and leaves every group in
steps, which is what the trainer, the optimizer's schedule and the methods read
(``steps(config, "total")``). Conversion follows big_vision's ``utils.steps``
(Beyer et al., github.com/google-research/big_vision): the nearest whole number of
steps, at least one unless the duration is 0. A period of 0 steps means "only at
the end of training".
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from vlkg.errors import ConfigError

GROUPS = ("total", "optim.warmup", "log_every", "eval_every", "checkpoint_every")
UNITS = ("steps", "examples", "epochs")


def duration(value=None) -> config_dict.FieldReference:
  """A duration key of a locked config: any number, or None (not this unit).

  Typed ``object`` so that ``--config.total_steps=None`` parses (ml_collections
  parses an ``int`` field's flag with ``int()``, which refuses ``None``).
  """
  return config_dict.FieldReference(value, field_type=object)


def durations(**values) -> dict:
  """The three keys of each group named by ``values`` (``total=900`` ->
  ``total_steps=900, total_examples=None, total_epochs=None``); the value is in
  steps."""
  out = {}
  for name, value in values.items():
    for unit in UNITS:
      out[f"{name}_{unit}"] = duration(value if unit == "steps" else None)
  return out


def _section(config, name: str):
  *parents, leaf = name.split(".")
  node = config
  for p in parents:
    node = node[p]
  return node, leaf


def keys(name: str) -> tuple[str, ...]:
  """The dotted keys of group ``name``: ``keys("optim.warmup")`` ->
  ``("optim.warmup_steps", "optim.warmup_examples", "optim.warmup_epochs")``."""
  return tuple(f"{name}_{unit}" for unit in UNITS)


def given(config, name: str) -> tuple[str, float]:
  """The one key of group ``name`` that is set, and its value.

  Raises:
    ConfigError: (a ValueError) if none or several of the group's keys are set,
      or the value is not a number >= 0 (a whole number for steps and examples);
      the message names the keys.
  """
  node, leaf = _section(config, name)
  set_ = [(f"{name}_{u}", node.get(f"{leaf}_{u}", None)) for u in UNITS]
  set_ = [(k, v) for k, v in set_ if v is not None]
  group = ", ".join(keys(name))
  if not set_:
    raise ConfigError(f"config sets none of {group}: set exactly one")
  if len(set_) > 1:
    raise ConfigError(
        "config sets " + " and ".join(f"{k}={v!r}" for k, v in set_) + "; set "
        f"exactly one of {group} (clear the rest, e.g. --config.{set_[0][0]}=None)")
  key, value = set_[0]
  whole = not key.endswith("_epochs")
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
      or (whole and value != int(value))):
    raise ConfigError(f"config.{key}={value!r}: expected a "
                     f"{'whole ' if whole else ''}number >= 0")
  return key, value


def check(config) -> None:
  """Checks every group of ``config`` (``given``); before a dataset is prepared, so
  that a bad duration fails before a long prepare."""
  for name in GROUPS:
    given(config, name)


def _to_steps(x: float) -> int:
  return max(1, round(x)) if x else 0


def steps(config, name: str, num_train_examples: int | None = None,
          batch_size: int | None = None) -> int:
  """Group ``name`` of ``config`` in steps.

  Args:
    config: A run config.
    name: One of `GROUPS`.
    num_train_examples: Records in the ``train`` split (the manifest's
      ``num_examples``); needed for ``_epochs``.
    batch_size: The global batch; default ``config.input.batch_size``.

  Raises:
    ValueError: As `given`, or for ``_epochs`` without ``num_train_examples``.
  """
  key, value = given(config, name)
  if key.endswith("_steps"):
    return int(value)
  batch = batch_size or config.input.batch_size
  if key.endswith("_examples"):
    return _to_steps(value / batch)
  if not num_train_examples:
    raise ValueError(f"config.{key}={value} is in epochs, which need the size of the "
                     "train split: resolve the config after the dataset is prepared "
                     "(vlkg.train.resolve_config)")
  return _to_steps(value * num_train_examples / batch)


def resolve(config: ml_collections.ConfigDict, num_train_examples: int,
            batch_size: int | None = None) -> dict[str, int]:
  """Rewrites every group of ``config`` (unlocked) in steps; returns them by group."""
  out = {}
  for name in GROUPS:
    n = steps(config, name, num_train_examples, batch_size)
    node, leaf = _section(config, name)
    for unit in UNITS:
      node[f"{leaf}_{unit}"] = n if unit == "steps" else None
    out[name] = n
  return out
