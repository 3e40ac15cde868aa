"""``preset,key=value`` strings and dotted overrides, with errors that suggest a key.

``configs/<method>.py:get_config(arg)`` takes everything after the ``:`` of
``--config configs/<method>.py:smoke,total_steps=10``: at most one preset name and
any number of ``dotted.key=value`` pairs. Values are Python literals where they
parse as one (``10``, ``(1, 2)``, ``'x'``, ``None``) and strings otherwise. The
``--config.a.b=value`` flags of ml_collections are applied after ``get_config`` by
ml_collections itself; `check_keys` checks their keys first, so that a typo in
either syntax is the same one-line error (`vlkg.errors.UnknownConfigKey`) naming
the closest key.
"""

from __future__ import annotations

import ast
import difflib

import ml_collections

from vlkg.errors import ConfigError, UnknownConfigKey


def parse_arg(arg: str | None, presets: tuple[str, ...]) -> tuple[str, dict]:
  """``"smoke,total_steps=10"`` -> ``("smoke", {"total_steps": 10})``.

  Args:
    arg: The text after ``:`` in ``--config FILE:arg``, or None.
    presets: The preset names; the first is the default.

  Raises:
    ConfigError: (a ValueError) for a preset not in ``presets``.
  """
  preset, overrides = presets[0], {}
  for part in filter(None, _split_top_level(arg or "")):
    if "=" in part:
      key, value = part.split("=", 1)
      try:
        overrides[key.strip()] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        overrides[key.strip()] = value
    else:
      preset = part.strip()
  if preset not in presets:
    raise ConfigError(f"unknown preset {preset!r} in config arg {arg!r}; "
                     f"expected one of {presets}")
  return preset, overrides


def _split_top_level(text: str) -> list[str]:
  """Splits on commas outside brackets and quotes: ``"a=(1,2),b=3"`` -> 2 parts."""
  parts, depth, quote, current = [], 0, None, []
  for ch in text:
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      parts.append("".join(current))
      current = []
      continue
    current.append(ch)
  parts.append("".join(current))
  return parts


def leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every dotted key of ``config``: its leaves and its sub-configs."""
  out = []
  for key, value in config.items():
    out.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      out += leaf_keys(value, f"{prefix}{key}.")
  return out


def unknown_key_error(config: ml_collections.ConfigDict, dotted: str) -> UnknownConfigKey:
  """``unknown config key 'total_step'; did you mean 'total_steps'?``: a key that
  was renamed names its new name, any other the closest known key (difflib)."""
  from vlkg.config import legacy
  if dotted in legacy.MOVED:
    return UnknownConfigKey(
        f"unknown config key {dotted!r}; it is now {legacy.MOVED[dotted]!r}")
  close = difflib.get_close_matches(dotted, leaf_keys(config), n=1, cutoff=0.6)
  hint = f"; did you mean {close[0]!r}?" if close else ""
  return UnknownConfigKey(f"unknown config key {dotted!r}{hint}")


def _parent(config: ml_collections.ConfigDict, dotted: str):
  """(the ConfigDict that holds ``dotted``, its last part); an unknown key raises
  `unknown_key_error`."""
  node = config
  *parents, leaf = dotted.split(".")
  for p in parents:
    if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
      raise unknown_key_error(config, dotted)
    node = node[p]
  if leaf not in node:
    raise unknown_key_error(config, dotted)
  return node, leaf


def check_keys(config: ml_collections.ConfigDict, keys) -> None:
  """Raises `unknown_key_error` for the first dotted key of ``keys`` that
  ``config`` does not have: ``--config.a.b=value`` flags are checked with it
  before ml_collections applies them (`vlkg.console`), so that both override
  syntaxes give the same message."""
  for dotted in keys:
    _parent(config, dotted)


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
  """Sets dotted keys; an unknown key is an error that names the closest known one."""
  for dotted, value in overrides.items():
    node, leaf = _parent(config, dotted)
    node[leaf] = value
