"""What a command shows on the console: no library noise, user errors in one line.

Every command (``python -m vlkg.main``, ``python -m vlkg.tools.<tool>``) starts with
`run` in place of ``absl.app.run``. It

  * keeps the start-up messages of the libraries off the console
    (`quiet_native_logs`, `install_log_filters`), while their warnings still show;
  * checks ``--config.a.b=value`` keys before ml_collections applies them
    (`check_config_overrides`), so that a typo names the closest key as the
    ``--config FILE:a.b=value`` syntax does;
  * ends a user's mistake (`vlkg.errors.user_message`) with one line,
    ``error: <message>``, and exit status 2; a bug keeps its traceback.

``--verbosity=1`` (absl's flag, ``-v 1``) turns all of this off: every library
message, and the traceback of a user error, come back.

Where each message comes from, and how it is silenced:

  * ``oneDNN custom operations are on`` (once per TensorFlow library, in every
    process that imports TensorFlow, at every log level) and the
    ``All log messages before absl::InitializeLog()`` line that C++ logging prints
    before its first message: TensorFlow's oneDNN kernels announce themselves at
    import. vlkg runs no TensorFlow math (tf.data, TFRecords and summaries only;
    the model runs in XLA, which does not read this variable), so
    ``TF_ENABLE_ONEDNN_OPTS=0`` removes the kernels and their message.
  * Other C++ INFO lines of TensorFlow (the CPU feature guard) and of XLA:
    ``TF_CPP_MIN_LOG_LEVEL=1`` keeps their warnings and errors.
  * ``Unable to initialize backend 'tpu'``: JAX's backend discovery logs each
    platform it cannot start at INFO (``jax._src.xla_bridge``). Only that record
    is dropped; ``JAX_PLATFORMS`` is left alone, so a GPU or TPU is still found,
    and JAX's warning when an accelerator is present but unusable still shows.
  * ``Given directory is read only``: orbax warns whenever a checkpoint manager is
    opened read-only, which vlkg does on purpose to look for a run's latest step.
    That record, and orbax's INFO account of every save, are dropped.

Environment variables are only set where the user has not set them, before any
TensorFlow import, and are inherited by the processes that ``prepare`` starts.
"""

from __future__ import annotations

import logging
import os
import sys

from vlkg import errors

VERBOSE = 1  # absl --verbosity at which library messages and tracebacks return
# Set before TensorFlow is imported, unless already set (see the module docstring).
ALWAYS_ENV = {"TF_ENABLE_ONEDNN_OPTS": "0"}
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "1"}
EXIT_USER_ERROR = 2


def argv_verbosity(argv) -> int:
  """absl's ``--verbosity`` (``-v``, ``--v``) as given in ``argv``; 0 when absent.

  Read from the command line itself, because the environment of native libraries
  must be set before the flags are parsed."""
  value, argv = 0, list(argv)
  for i, arg in enumerate(argv):
    name, eq, given = arg.partition("=")
    if name not in ("--verbosity", "-verbosity", "--v", "-v"):
      continue
    given = given if eq else (argv[i + 1] if i + 1 < len(argv) else "")
    try:
      value = int(given)
    except ValueError:
      pass
  return value


def quiet_native_logs(environ=None, argv=None) -> dict:
  """Sets the environment that keeps C++ start-up messages off the console.

  Args:
    environ: The environment to change; default ``os.environ``.
    argv: The command line; default ``sys.argv``. From ``--verbosity=1`` on, only
      `ALWAYS_ENV` is set.

  Returns:
    The variables that were set (those the user had set are left alone).
  """
  environ = os.environ if environ is None else environ
  argv = sys.argv if argv is None else argv
  wanted = dict(ALWAYS_ENV)
  if argv_verbosity(argv) < VERBOSE:
    wanted.update(QUIET_ENV)
  set_ = {k: v for k, v in wanted.items() if k not in environ}
  environ.update(set_)
  return set_


def _verbosity() -> int:
  """absl's verbosity, once the flags are parsed."""
  from absl import logging as absl_logging
  return absl_logging.get_verbosity()


def _verbose() -> bool:
  return _verbosity() >= VERBOSE


class _BackendProbe(logging.Filter):
  """JAX's INFO line for each platform it could not start (no TPU here)."""

  def filter(self, record):
    return (record.levelno >= logging.WARNING or _verbose()
            or not str(record.msg).startswith("Unable to initialize backend"))


class _OrbaxChatter(logging.Filter):
  """orbax (through absl logging): its INFO lines, and the read-only notice."""

  def filter(self, record):
    if "/orbax/" not in record.pathname.replace(os.sep, "/") or _verbose():
      return True
    if record.levelno < logging.WARNING:
      return False
    return not str(record.msg).startswith("Given directory is read only")


_FILTERS = {"jax._src.xla_bridge": _BackendProbe(), "absl": _OrbaxChatter()}


def install_log_filters() -> None:
  """Adds the filters of the module docstring to their loggers (once)."""
  for name, f in _FILTERS.items():
    logger = logging.getLogger(name)
    if f not in logger.filters:
      logger.addFilter(f)


def config_override_keys(argv, flag: str = "config") -> list[str]:
  """The dotted keys of ``--config.a.b=value`` (and ``--noconfig.a.b``) in argv."""
  out = []
  for arg in argv:
    name = arg.split("=", 1)[0].lstrip("-")
    for prefix in (f"{flag}.", f"no{flag}."):
      if arg.startswith("-") and name.startswith(prefix) and len(name) > len(prefix):
        out.append(name[len(prefix):])
        break
  return out


def _config_arg(argv, flag: str) -> str | None:
  """The value of ``--config FILE[:ARG]`` (or ``--config=...``) in argv."""
  value = None
  for i, arg in enumerate(argv):
    name, eq, given = arg.partition("=")
    if name in (f"--{flag}", f"-{flag}"):
      value = given if eq else (argv[i + 1] if i + 1 < len(argv) else None)
  return value


def check_config_overrides(argv, flag_values, flag: str = "config") -> None:
  """Raises `vlkg.errors.UnknownConfigKey` for an unknown ``--config.`` key, and
  `vlkg.errors.UserError` for a ``--config`` file that does not exist.

  The config is read as ml_collections reads it (the ``--config`` file and its
  ``:arg``, else the flag's default), and each override key is looked up with
  `vlkg.config.overrides.check_keys`. Nothing happens without override flags.
  """
  source = _config_arg(argv, flag)
  path = None if source is None else source.split(":", 1)[0]
  if path is not None and flag in flag_values and not os.path.isfile(path):
    # ml_collections would report it only when the config is first read, as an
    # OSError from inside the program.
    raise errors.UserError(f"--{flag} {source}: no such config file {path!r}")
  keys = config_override_keys(argv, flag)
  if not keys or flag not in flag_values:
    return
  if source is None:
    config = flag_values[flag].default
  else:
    from ml_collections.config_flags import config_flags
    config = config_flags.ConfigFileFlagParser(name=flag).parse(source)
  import ml_collections
  if isinstance(config, ml_collections.ConfigDict):
    from vlkg.config import overrides
    overrides.check_keys(config, keys)


def exit_if_user_error(exc: BaseException, verbosity: int = 0) -> None:
  """Prints ``error: <message>`` and exits with `EXIT_USER_ERROR` if ``exc`` is a
  user's mistake (and ``verbosity`` is below `VERBOSE`); returns otherwise."""
  message = errors.user_message(exc)
  if message is None or verbosity >= VERBOSE:
    return
  for handler in logging.getLogger().handlers:  # what was logged comes first
    handler.flush()
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(EXIT_USER_ERROR)


def run(main, argv=None) -> None:
  """``absl.app.run(main)`` with the quiet console and one-line user errors."""
  from absl import app, flags
  argv = list(sys.argv if argv is None else argv)
  quiet_native_logs(os.environ, argv)
  install_log_filters()

  def parse_flags(args):
    try:
      check_config_overrides(args, flags.FLAGS)
      return flags.FLAGS(args)
    except Exception as e:  # noqa: BLE001 -- re-raised unless a user error
      exit_if_user_error(e, argv_verbosity(args))
      raise

  def guarded(args):
    try:
      return main(args)
    except Exception as e:  # noqa: BLE001 -- re-raised unless a user error
      exit_if_user_error(e, _verbosity())
      raise

  app.run(guarded, argv=argv, flags_parser=parse_flags)
