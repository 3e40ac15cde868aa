"""vlkg.config: presets and overrides in both syntaxes, errors that suggest a key, the
method's own section, durations in steps / examples / epochs, old config.json files,
and dependencies that point one way (configs/ -> vlkg/)."""

import os
import re
import types

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs import clip, mosaiclip, structure_clip
from vlkg import config as config_lib
from vlkg import errors, methods, optim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flag_config(arg: str, *overrides: str) -> ml_collections.ConfigDict:
  """``--config configs/clip.py:arg --config.a=b ...`` parsed as vlkg.main parses it."""
  argv = ["prog", f"--config={os.path.join(ROOT, 'configs', 'clip.py')}:{arg}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                  lock_config=True, sys_argv=argv)
  values(argv)
  return values.config


# ---------------------------------------------------------------- overrides


def test_parse_arg_reads_the_preset_and_literal_values():
  preset, overrides = config_lib.parse_arg("smoke,total_steps=10,optim.frozen=('^img/', 'x'),"
                                           "input.data=coco,total_epochs=None")
  assert preset == "smoke"
  assert overrides == {"total_steps": 10, "optim.frozen": ("^img/", "x"),
                       "input.data": "coco", "total_epochs": None}
  assert config_lib.parse_arg(None) == ("default", {})
  with pytest.raises(ValueError, match="unknown preset 'smok'"):
    config_lib.parse_arg("smok")


def test_overrides_apply_and_the_config_is_locked():
  config = clip.get_config("smoke,total_steps=7,model.image.width=48")
  assert config.total_steps == 7 and config.model.image.width == 48
  assert config.input.batch_size == 32  # the smoke preset's
  with pytest.raises(AttributeError):
    config.no_such_key = 1


@pytest.mark.parametrize("key, hint", [
    ("total_step", "did you mean 'total_steps'?"),
    ("optim.warmup_step", "did you mean 'optim.warmup_steps'?"),
    ("model.imag.width", "did you mean 'model.image.width'?"),
    ("log_every", "it is now 'log_every_steps'"),
    ("world.image_size", "it is now 'model.image_size'"),
])
def test_unknown_key_suggests_the_closest_one(key, hint):
  with pytest.raises(KeyError, match=re.escape(f"unknown config key {key!r}; {hint}")):
    clip.get_config(f"smoke,{key}=3")


def test_unknown_key_without_a_close_one_says_so():
  with pytest.raises(KeyError) as e:
    clip.get_config("smoke,zzzzzz=3")
  assert str(e.value) == "\"unknown config key 'zzzzzz'\""


def test_check_keys_names_the_closest_key_of_either_syntax():
  """vlkg.console checks --config.a.b keys with check_keys before ml_collections
  applies them, so both syntaxes give the same error."""
  config = clip.get_config("smoke")
  config_lib.overrides.check_keys(config, ["total_steps", "model.image.width", "evals"])
  with pytest.raises(errors.UnknownConfigKey) as e:
    config_lib.overrides.check_keys(config, ["total_steps", "total_step"])
  assert e.value.args[0] == "unknown config key 'total_step'; did you mean 'total_steps'?"
  with pytest.raises(errors.UnknownConfigKey, match="did you mean 'model.image.width'"):
    config_lib.overrides.check_keys(config, ["model.imag.width"])
  with pytest.raises(errors.UnknownConfigKey, match="unknown config key 'seed.x'"):
    config_lib.overrides.check_keys(config, ["seed.x"])  # below a leaf


def test_command_line_overrides_and_their_suggestions():
  config = flag_config("smoke", "--config.total_steps=None", "--config.total_epochs=2",
                       "--config.model.image_size=32")
  assert config.total_steps is None and config.total_epochs == 2
  assert config.model.image_size == 32
  with pytest.raises(AttributeError, match='Did you mean "total_steps"'):
    flag_config("smoke", "--config.total_step=3")


def test_method_section_comes_from_the_method_module(monkeypatch):
  """base_config(preset, M) gives config.M = methods.load(M).default_config()."""
  fake = types.SimpleNamespace(default_config=lambda: {"lam": 0.5, "depth": 2})
  real_load = methods.load
  monkeypatch.setattr(methods, "load",
                      lambda name: fake if name == "toy" else real_load(name))
  config = config_lib.base_config("smoke", "toy")
  assert config.method == "toy" and config.toy.to_dict() == {"lam": 0.5, "depth": 2}
  config = config_lib.finalize(config, {"toy.lam": 0.25})
  assert config.toy.lam == 0.25
  with pytest.raises(KeyError, match="did you mean 'toy.lam'"):
    config_lib.apply_overrides(config, {"toy.lamb": 1.0})
  # A method module without default_config gets no section of its own.
  monkeypatch.setattr(methods, "load", lambda name: types.SimpleNamespace())
  assert "plain" not in config_lib.base_config("default", "plain")


def test_get_config_is_the_shared_config_of_a_method():
  assert (config_lib.get_config("clip", "smoke,total_steps=3").to_dict()
          == clip.get_config("smoke,total_steps=3").to_dict())
  assert config_lib.get_config("siglip").method == "siglip"


def test_vlkg_never_imports_configs():
  """Dependencies point one way: configs/ imports vlkg, never the reverse."""
  pattern = re.compile(r"^\s*(from|import)\s+configs\b")
  offenders = []
  for dirpath, _, files in os.walk(os.path.join(ROOT, "vlkg")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(dirpath, name)
        with open(path) as f:
          offenders += [f"{os.path.relpath(path, ROOT)}:{i}" for i, line in enumerate(f, 1)
                        if pattern.match(line)]
  assert not offenders


# ---------------------------------------------------------------- durations


def test_steps_from_steps_examples_and_epochs():
  base = "smoke,input.batch_size=32,total_steps=None"
  assert config_lib.steps(clip.get_config("smoke,total_steps=40"), "total") == 40
  # 1000 examples / 32 = 31.25 -> 31 steps (nearest), as big_vision rounds.
  assert config_lib.steps(clip.get_config(base + ",total_examples=1000"), "total") == 31
  # 2.5 epochs of 100 examples at batch 32: 7.8 -> 8 steps.
  config = clip.get_config(base + ",total_epochs=2.5")
  assert config_lib.steps(config, "total", num_train_examples=100) == 8
  assert config_lib.steps(config, "total", num_train_examples=100, batch_size=10) == 25
  # A duration that rounds to 0 steps is still one step; 0 itself is 0.
  assert config_lib.steps(clip.get_config(base + ",total_examples=3"), "total") == 1
  assert config_lib.steps(clip.get_config(base + ",total_examples=0"), "total") == 0
  warmup = clip.get_config("smoke,optim.warmup_steps=None,optim.warmup_epochs=0.5")
  assert config_lib.steps(warmup, "optim.warmup", num_train_examples=640) == 10
  with pytest.raises(ValueError, match="total_epochs=2.5 is in epochs, which need"):
    config_lib.steps(config, "total")


def test_a_duration_group_takes_exactly_one_key():
  both = clip.get_config("smoke,total_epochs=3")
  with pytest.raises(ValueError, match=re.escape(
      "config sets total_steps=20 and total_epochs=3; set exactly one of total_steps, "
      "total_examples, total_epochs (clear the rest, e.g. --config.total_steps=None)")):
    config_lib.durations.check(both)
  none = clip.get_config("smoke,eval_every_steps=None")
  with pytest.raises(ValueError, match="none of eval_every_steps, eval_every_examples, "
                                       "eval_every_epochs"):
    config_lib.durations.check(none)
  with pytest.raises(ValueError, match=r"log_every_steps=2.5: expected a whole number"):
    config_lib.durations.check(clip.get_config("smoke,log_every_steps=2.5"))
  with pytest.raises(ValueError, match=r"warmup_epochs=-1: expected a number >= 0"):
    config_lib.durations.check(
        clip.get_config("smoke,optim.warmup_steps=None,optim.warmup_epochs=-1"))
  config_lib.durations.check(clip.get_config("smoke"))  # every preset is valid
  config_lib.durations.check(structure_clip.get_config("vit_b32"))


def test_resolve_puts_every_group_in_steps_and_the_schedule_reads_it():
  config = clip.get_config("smoke,input.batch_size=10,total_steps=None,total_epochs=2,"
                           "optim.warmup_steps=None,optim.warmup_examples=50,"
                           "log_every_steps=None,log_every_epochs=0.5")
  resolved = ml_collections.ConfigDict(config.to_dict())
  got = config_lib.durations.resolve(resolved, num_train_examples=100)
  assert got == {"total": 20, "optim.warmup": 5, "log_every": 5, "eval_every": 10,
                 "checkpoint_every": 10}
  assert resolved.total_steps == 20 and resolved.total_epochs is None
  assert resolved.optim.warmup_steps == 5 and resolved.optim.warmup_examples is None
  assert resolved.log_every_steps == 5 and resolved.log_every_epochs is None
  schedule = optim.schedule(resolved)
  assert float(schedule(5)) == pytest.approx(resolved.optim.lr)  # warm-up over at 5
  assert float(schedule(20)) == pytest.approx(0.0)  # the cosine ends at total_steps
  with pytest.raises(ValueError, match="need the size of the train split"):
    optim.schedule(config)


def test_presets_give_fine_tuning_lengths_in_epochs():
  sc = structure_clip.get_config("vit_b32")
  assert sc.total_steps is None and sc.total_epochs == 10 and sc.optim.warmup_steps == 0
  mc = mosaiclip.get_config("vit_b32")
  assert mc.total_steps is None and mc.total_epochs == 5 and mc.optim.warmup_steps == 50
  # 5 epochs of COCO's 118,287 training images at batch 256.
  assert config_lib.steps(mc, "total", num_train_examples=118_287) == 2310


# ----------------------------------------------------------- old config.json


def test_upgrade_reads_the_keys_of_older_runs():
  old = {"log_every": 25, "eval_every": 450, "checkpoint_every": 250, "total_steps": 900,
         "world": {"image_size": 64, "seed": 0}, "input": {"image_size": 0, "data": "world"},
         "model": {"embed_dim": 32}}
  new = config_lib.upgrade(old)
  assert new == {"log_every_steps": 25, "eval_every_steps": 450,
                 "checkpoint_every_steps": 250, "total_steps": 900,
                 "world": {"seed": 0, "plain_attribute_rate": 0.5, "position_rate": 0.0,
                           "plain_every": 0, "train_attribute_rate": 0.5,
                           "train_texture_rate": None},
                 "input": {"data": "world", "train_fraction": 1.0},
                 "model": {"embed_dim": 32, "image_size": 64,
                           # keys added since (legacy.ADDED), as they behaved before
                           "attention": "xla", "dtype": "float32",
                           "max_logit_scale": 100.0, "min_logit_scale": None}}
  assert "image_size" in old["world"]  # the argument is not changed
  # A real corpus's input size, and an imported model's own, win over the world's.
  assert config_lib.upgrade({"world": {"image_size": 64}, "input": {"image_size": 224},
                             "model": {}})["model"]["image_size"] == 224
  assert config_lib.upgrade({"world": {"image_size": 224},
                             "model": {"image_size": 336}})["model"]["image_size"] == 336
  # Today's keys pass through unchanged.
  current = clip.get_config("smoke").to_dict()
  assert config_lib.upgrade(current) == current


def test_upgrade_fills_in_keys_added_since_a_run(monkeypatch):
  from vlkg.config import legacy
  monkeypatch.setattr(legacy, "ADDED", {"model.attention": "xla",
                                        "knowledge_clip.mode": "fusion"})
  old = {"model": {"embed_dim": 32}}
  assert config_lib.upgrade(old) == {"model": {"embed_dim": 32, "attention": "xla"}}
  # A method's section only where the run has it; a value the run set stays.
  assert config_lib.upgrade({"model": {"attention": "cudnn"}, "knowledge_clip": {}}) == {
      "model": {"attention": "cudnn"}, "knowledge_clip": {"mode": "fusion"}}
  # So a results stage trained before the key existed is not stale.
  from vlkg.results import workdir
  assert workdir.config_changes(old, {"model": {"embed_dim": 32, "attention": "xla"}}) == []
  assert workdir.config_changes(old, {"model": {"embed_dim": 32, "attention": "cudnn"}}) == [
      "model.attention: 'xla' -> 'cudnn'"]


def test_attention_and_dtype_keys_read_old_runs_as_before():
  # Every preset has both keys (vit_b32 builds its own model section).
  for preset in ("default", "vit_b32"):
    model = clip.get_config(preset).model
    assert (model.attention, model.dtype) == ("xla", "float32"), preset
  assert flag_config("smoke", "--config.model.attention=cudnn").model.attention == "cudnn"
  # A run written before the keys existed reads at the values that behave as before,
  # and is the same run as one that has them.
  old = clip.get_config("smoke").to_dict()
  del old["model"]["attention"], old["model"]["dtype"]
  assert config_lib.upgrade(old) == clip.get_config("smoke").to_dict()
  from vlkg.results import workdir
  assert workdir.config_changes(old, clip.get_config("smoke").to_dict()) == []
