"""Every built-in method module is the whole method: fields, config defaults (which
its config file starts from, each settable from the command line), model, loss."""

from __future__ import annotations

import importlib

import pytest

from vlkg import methods

METHODS = ("clip", "siglip", "structure_clip", "mosaiclip", "loupe", "knowledge_clip")


@pytest.mark.parametrize("name", METHODS)
def test_module_interface_and_config_section(name):
  module = methods.load(name)
  for attr in ("fields", "default_config", "build_model", "make_loss_fn"):
    assert callable(getattr(module, attr)), attr
  config = importlib.import_module(f"configs.{name}").get_config("smoke")
  defaults = module.default_config()
  section = config.get(name)
  if not defaults:
    assert section is None  # nothing to set
    return
  # Written once: the config file's section is the module's defaults, bar the loss
  # that the world experiment changes (configs/structure_clip.py says why).
  changed = {k for k, v in section.to_dict().items() if v != defaults[k]}
  assert set(section) == set(defaults)
  assert changed == ({"loss"} if name == "structure_clip" else set())
  # Every option is settable by key.
  for key, value in defaults.items():
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      got = importlib.import_module(f"configs.{name}").get_config(
          f"smoke,{name}.{key}={value + 1}")
      assert got[name][key] == value + 1, key


def test_a_size_the_data_and_the_model_share_is_one_key():
  from configs import loupe, mosaiclip, structure_clip
  config = structure_clip.get_config("smoke,structure_clip.max_triples=8")
  triples = methods.fields(config)[0]
  assert triples.features[0].shape == (8, 3, 5)
  assert methods.build_model(config).max_triples == 8
  assert structure_clip.get_config("vit_b32").structure_clip.loss == "hinge"
  config = mosaiclip.get_config("smoke,mosaiclip.max_neg=2")
  assert methods.fields(config)[0].features[0].shape == (3 + 2 + 1, 32)
  config = loupe.get_config("smoke,loupe.max_phrases=2")
  assert methods.fields(config)[0].features[0].shape == (2, 2)
  assert "graph" not in config


def test_unknown_method_is_named():
  with pytest.raises(ValueError, match="no_such_method"):
    methods.load("no_such_method")
