"""What counts as a user's mistake, and its one-line message.

A command that fails because of what the user asked for (a config key that does
not exist, a preset, a workdir of another model, a dataset or benchmark file that
is missing or malformed) ends with one line, ``error: <message>``, and a non-zero
exit (`vlkg.console.run`). A traceback there points into vlkg's code, where
nothing is wrong, and buries the one sentence that says what to change. Anything
else is a bug, and keeps its traceback. ``--verbosity=1`` shows the traceback of a
user error too.

`user_message` decides. A user error is:

  * a `UserError` (raised where vlkg checks what the user gave it);
  * one of `USER_ERROR_TYPES`, the error types that vlkg's readers raise for a bad
    file, named by import path so that this module imports none of them;
  * a missing or unreadable path (`FileNotFoundError` and its kin);
  * an absl flag error or usage error (a misspelt flag, a missing ``--workdir``);
  * a ``ValueError`` or ``KeyError`` whose message starts with the key or flag it
    is about (``config.x=...``, ``--data ...``): vlkg's convention for an error
    about a value the user gave ("Fail loudly and early": errors name the key).
"""

from __future__ import annotations

import re


class UserError(Exception):
  """A mistake in what the user asked for; shown as one line, without traceback."""


class ConfigError(UserError, ValueError):
  """A config value, preset or workdir that cannot be used as given."""


class UnknownConfigKey(UserError, KeyError):
  """A config key that does not exist; the message names the closest one."""


# Error types raised for bad user input by vlkg's readers and checks, by import
# path (module.qualname). tests/test_errors.py checks that each one exists.
USER_ERROR_TYPES = (
    "vlkg.checkpoint.ParamsMismatchError",
    "vlkg.convert.open_clip.StateDictMismatchError",
    "vlkg.convert.readers.CheckpointFormatError",
    "vlkg.data.benchmarks.errors.BenchmarkFormatError",
    "vlkg.data.corpora.CorpusError",
    "vlkg.data.records.DataError",
    "vlkg.data.world.knowledge.KnowledgeGraphError",
    "vlkg.data.world.scene.WorldSpecError",
    "vlkg.evaluators.binary_choice.ImageLoadError",
    "vlkg.graphs.kg.KGFormatError",
    "vlkg.train.NonFiniteError",
    "absl.flags._exceptions.Error",
    "absl.app.UsageError",
)
_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                PermissionError)
# The start of a message about a value the user gave: a config key or a flag.
_NAMES_USER_VALUE = re.compile(r"^['\"]?(config\.|--)")


def _type_names(exc: BaseException) -> set[str]:
  return {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}


def _message(exc: BaseException) -> str:
  text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
  return text or type(exc).__name__


def is_user_error(exc: BaseException) -> bool:
  """Whether ``exc`` itself (not what it was raised from) is a user's mistake."""
  if isinstance(exc, (UserError, *_PATH_ERRORS)):
    return True
  if _type_names(exc) & set(USER_ERROR_TYPES):
    return True
  return (isinstance(exc, (ValueError, KeyError))
          and bool(_NAMES_USER_VALUE.match(_message(exc))))


def _chain(exc: BaseException) -> list[BaseException]:
  """``exc``, then what it was raised from or while handling; innermost last."""
  out, seen = [], set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    out.append(exc)
    exc = exc.__cause__ or exc.__context__
  return out


def _read_config_file(exc: BaseException) -> bool:
  """ml_collections re-raises an error from a config file's ``get_config`` as
  ``Error whilst parsing config file:`` with the traceback in the message."""
  return str(exc).startswith("Error whilst parsing config file")


def user_message(exc: BaseException) -> str | None:
  """The one-line message of ``exc`` if it is a user's mistake, else None (a bug).

  An error raised by a config file (``--config FILE:ARG``) reaches the command as
  an absl flag error that folds its traceback into the message; there the error
  the config file raised decides, and its own message is the one shown. An error
  raised while handling a user error is a bug, and is not excused by it.
  """
  if not is_user_error(exc):
    return None
  chain = _chain(exc)
  if any(_read_config_file(e) for e in chain):
    origin = chain[-1]
    if not is_user_error(origin) or _read_config_file(origin):
      return None
    exc = origin
  return " ".join(_message(exc).split())
