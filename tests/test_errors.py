"""vlkg.errors: which exceptions are a user's mistake, and their one-line message."""

import importlib
import json

import pytest
from absl import flags

from configs import clip
from vlkg import config as config_lib, errors
from vlkg.data import records
from vlkg.data.benchmarks import aro
from vlkg.data.benchmarks.errors import BenchmarkFormatError


def _raised(fn, *args, **kwargs) -> BaseException:
  with pytest.raises(Exception) as e:
    fn(*args, **kwargs)
  return e.value


def test_config_mistakes_are_user_errors_with_the_suggestion():
  e = _raised(clip.get_config, "smoke,total_step=5")
  assert isinstance(e, errors.UnknownConfigKey) and isinstance(e, KeyError)
  assert errors.user_message(e) == "unknown config key 'total_step'; did you mean 'total_steps'?"
  e = _raised(clip.get_config, "smok")
  assert isinstance(e, ValueError)
  assert errors.user_message(e) == ("unknown preset 'smok' in config arg 'smok'; "
                                    f"expected one of {config_lib.PRESETS}")
  e = _raised(config_lib.durations.check, clip.get_config("smoke,total_steps=-3"))
  assert errors.user_message(e) == "config.total_steps=-3: expected a whole number >= 0"


def test_bad_files_and_missing_paths_are_user_errors(tmp_path):
  bad = tmp_path / "vg_relation.json"
  bad.write_text(json.dumps([{"bad": 1}]))
  e = _raised(aro.read_aro, str(bad), "relation")
  assert isinstance(e, BenchmarkFormatError)
  assert errors.user_message(e) == f"{bad}: item 0: missing field 'image_path'"
  e = _raised(records.read_manifest, str(tmp_path / "nowhere"))
  assert errors.user_message(e).startswith(f"{tmp_path / 'nowhere'}: no manifest.json;")
  e = _raised(open, str(tmp_path / "missing.txt"))
  assert errors.user_message(e) == (f"[Errno 2] No such file or directory: "
                                    f"'{tmp_path / 'missing.txt'}'")


def test_messages_that_name_a_key_or_flag_are_user_errors():
  assert errors.user_message(ValueError("config.input.data='x' is not known")) == (
      "config.input.data='x' is not known")
  assert errors.user_message(ValueError("--data x does not exist")) == "--data x does not exist"
  assert errors.user_message(KeyError("config.select_metric='x' is not among")) == (
      "config.select_metric='x' is not among")
  # Several lines become one.
  assert errors.user_message(errors.UserError("a\n  b")) == "a b"


def test_bugs_are_not_user_errors():
  assert errors.user_message(ValueError("operands could not be broadcast")) is None
  assert errors.user_message(KeyError("params")) is None
  assert errors.user_message(TypeError("config.x")) is None
  assert errors.user_message(AttributeError("'NoneType' object has no attribute 'x'")) is None
  # A bug raised while handling a user error is still a bug.
  try:
    try:
      raise errors.UserError("bad key")
    except errors.UserError:
      raise ZeroDivisionError("oops")
  except ZeroDivisionError as e:
    assert errors.user_message(e) is None


def _config_file_error(inner: BaseException) -> BaseException:
  """What absl raises when a config file's get_config raised ``inner``: ml_collections
  re-raises it with its traceback in the message, absl wraps that in a flag error."""
  try:
    try:
      try:
        raise inner
      except (TypeError, ValueError) as e:
        raise type(e)("Error whilst parsing config file:\n\nTraceback ...\n" + str(e))
    except (TypeError, ValueError) as e:
      raise flags.IllegalFlagValueError(f"flag --config=configs/clip.py:x: {e}")
  except flags.Error as e:
    return e


def test_a_config_file_error_reports_what_the_config_file_raised():
  wrapped = _config_file_error(errors.ConfigError("unknown preset 'smok'"))
  assert errors.user_message(wrapped) == "unknown preset 'smok'"
  # A bug in a config file keeps its traceback.
  assert errors.user_message(_config_file_error(TypeError("unhashable type"))) is None
  # A flag error of its own is a user error.
  assert errors.user_message(flags.UnrecognizedFlagError("workdri")) == (
      "Unknown command line flag 'workdri'")


def test_every_listed_user_error_type_exists():
  for name in errors.USER_ERROR_TYPES:
    module, _, qualname = name.rpartition(".")
    cls = getattr(importlib.import_module(module), qualname)
    assert issubclass(cls, BaseException), name
    assert errors.is_user_error(cls.__new__(cls)), name
