"""vlkg.console: the quiet environment and log filters, ``--config.`` keys checked
before ml_collections applies them, and one-line user errors from the commands."""

import logging
import os
import subprocess
import sys

import pytest
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from vlkg import config as config_lib, console, errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("argv, level", [
    (["prog"], 0),
    (["prog", "--verbosity=1"], 1),
    (["prog", "--verbosity", "2"], 2),
    (["prog", "-v", "1"], 1),
    (["prog", "--v=-1"], -1),
    (["prog", "--verbosity=x"], 0),
])
def test_argv_verbosity(argv, level):
  assert console.argv_verbosity(argv) == level


def test_quiet_native_logs_sets_only_what_the_user_has_not():
  env = {"TF_ENABLE_ONEDNN_OPTS": "1"}
  assert console.quiet_native_logs(env, ["prog"]) == {"TF_CPP_MIN_LOG_LEVEL": "1"}
  assert env == {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "1"}
  env = {}
  console.quiet_native_logs(env, ["prog", "--verbosity=1"])
  assert env == {"TF_ENABLE_ONEDNN_OPTS": "0"}  # C++ INFO lines come back
  # Never the platform list: an accelerator must still be found.
  assert "JAX_PLATFORMS" not in console.ALWAYS_ENV and "JAX_PLATFORMS" not in console.QUIET_ENV


def _record(name, level, msg, pathname="x.py"):
  return logging.LogRecord(name, level, pathname, 1, msg, (), None)


@pytest.fixture
def verbosity():
  """absl_logging.set_verbosity, undone after the test (the logger's own level: a
  verbosity read back and set again would pin a level it did not have)."""
  logger = logging.getLogger("absl")
  before = logger.level
  yield absl_logging.set_verbosity
  logger.setLevel(before)


def test_log_filters_drop_only_the_start_up_notices(verbosity):
  verbosity(0)
  probe = console._FILTERS["jax._src.xla_bridge"]
  orbax = console._FILTERS["absl"]
  tpu = _record("jax._src.xla_bridge", logging.INFO,
                "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so")
  assert not probe.filter(tpu)
  assert probe.filter(_record("jax._src.xla_bridge", logging.WARNING,
                              "An NVIDIA GPU may be present on this machine, but a "
                              "CUDA-enabled jaxlib is not installed."))
  path = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
  assert not orbax.filter(_record("absl", logging.WARNING,
                                  "Given directory is read only=%s", path))
  assert not orbax.filter(_record("absl", logging.INFO, "Finished saving", path))
  assert orbax.filter(_record("absl", logging.WARNING, "Save failed", path))
  assert orbax.filter(_record("absl", logging.INFO, "saving checkpoint", "/vlkg/train.py"))
  verbosity(1)  # --verbosity=1: everything
  assert probe.filter(tpu)
  assert orbax.filter(_record("absl", logging.WARNING, "Given directory is read only=%s",
                              path))


def test_install_log_filters_once():
  console.install_log_filters()
  console.install_log_filters()
  logger = logging.getLogger("jax._src.xla_bridge")
  assert logger.filters.count(console._FILTERS["jax._src.xla_bridge"]) == 1


def test_config_override_keys():
  argv = ["prog", "--config=configs/clip.py:smoke", "--config.total_steps=5",
          "--config.model.image.width", "48", "--noconfig.flag", "--workdir=x"]
  assert console.config_override_keys(argv) == ["total_steps", "model.image.width", "flag"]


def _flag_values():
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  return values


def test_check_config_overrides_names_the_closest_key():
  values = _flag_values()
  config = os.path.join(ROOT, "configs", "clip.py")
  console.check_config_overrides(["prog", f"--config={config}:smoke",
                                  "--config.model.image.width=48"], values)
  with pytest.raises(errors.UnknownConfigKey, match="did you mean 'model.image.width'"):
    console.check_config_overrides(["prog", "--config", f"{config}:smoke",
                                    "--config.model.imag.width=48"], values)
  with pytest.raises(errors.ConfigError, match="unknown preset 'smok'"):
    console.check_config_overrides(["prog", f"--config={config}:smok",
                                    "--config.total_steps=5"], values)
  with pytest.raises(errors.UserError, match="no such config file 'configs/nope.py'"):
    console.check_config_overrides(["prog", "--config=configs/nope.py"], values)


def test_exit_if_user_error(capsys):
  with pytest.raises(SystemExit) as e:
    console.exit_if_user_error(errors.UnknownConfigKey("unknown config key 'x'"))
  assert e.value.code == console.EXIT_USER_ERROR
  assert capsys.readouterr().err == "error: unknown config key 'x'\n"
  # A bug, or a user error at --verbosity=1, is left to raise with its traceback.
  assert console.exit_if_user_error(ValueError("shapes differ")) is None
  assert console.exit_if_user_error(errors.UserError("x"), verbosity=1) is None
  assert capsys.readouterr().err == ""


def _main(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", "vlkg.main", *args, "--workdir",
                         "/nonexistent/never_written"], cwd=cwd, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/clip.py:smoke", "--config.total_step=5"],
     "error: unknown config key 'total_step'; did you mean 'total_steps'?"),
    (["--config", "configs/clip.py:smoke,total_step=5"],
     "error: unknown config key 'total_step'; did you mean 'total_steps'?"),
    (["--config", "configs/clip.py:smok"],
     "error: unknown preset 'smok' in config arg 'smok'; expected one of "
     f"{config_lib.PRESETS}"),
])
def test_config_mistakes_end_with_one_line(args, message):
  out = _main(*args)
  assert out.returncode == console.EXIT_USER_ERROR
  assert out.stdout == ""
  assert out.stderr.splitlines() == [message]


def test_verbosity_shows_the_traceback_of_a_user_error():
  out = _main("--config", "configs/clip.py:smoke", "--config.total_step=5", "--verbosity=1")
  assert out.returncode != 0
  assert "Traceback" in out.stderr and "did you mean 'total_steps'" in out.stderr
