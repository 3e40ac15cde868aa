"""Which splits a training run reads, and when (``input_pipeline.staged_train_iterator``).

On the built-in world a run can read its plain scenes first (``world.plain_steps``)
and, after that, again every ``world.plain_every``-th step (docs/results.md, "Why
the world's CLIP learns no shape"); every other run reads "train" throughout.
"""

from __future__ import annotations

from vlkg import errors
from vlkg.data import prepare


def _reads_plain(config, key: str) -> int:
  """``world.<key>`` when it makes a world run read its plain scenes, else 0; a
  world without plain scenes is an error that names the key."""
  value = config.world.get(key, 0)
  if not value or not prepare.is_world(config.input.data):
    return 0
  if not config.world.get("num_plain", 0):
    raise errors.ConfigError(f"world.{key}={value} reads the plain scenes, but "
                             "world.num_plain is 0: set world.num_plain (e.g. 20000) "
                             f"or world.{key}=0")
  return value


def stages(config) -> list[tuple[str, int | None]]:
  """The splits a run reads, in turn: on the world, its plain scenes for
  ``world.plain_steps`` steps, then "train"."""
  plain_steps = _reads_plain(config, "plain_steps")
  return [("plain", plain_steps), ("train", None)] if plain_steps else [("train", None)]


def review(config) -> tuple[str, int] | None:
  """``("plain", world.plain_every)``: after the plain stage, every so many steps
  read a batch of plain scenes again (the iterator's ``review``), so that what only
  their captions say is not forgotten; None when ``plain_every`` is 0."""
  every = _reads_plain(config, "plain_every")
  return ("plain", every) if every else None
