"""The world renders at the model's input size, and its datasets keep their names."""

from configs import clip
from vlkg.data import prepare, world


def test_world_settings_take_the_image_size_of_the_model():
  config = clip.get_config("smoke,model.image_size=32")
  settings = world.settings(config)
  assert settings.image_size == 32
  assert {k: v for k, v in settings.items() if k != "image_size"} == config.world.to_dict()
  assert "image_size" not in config.world  # the config is not changed


def test_world_dataset_names_are_what_they_were_before_the_key_moved():
  """config.world.image_size became config.model.image_size; the fingerprint of
  every world stays the same, so prepared worlds and old runs still find theirs."""
  assert prepare.world_fingerprint(clip.get_config()) == "62e6f9de3a9e"
  assert prepare.world_fingerprint(clip.get_config("vit_b32")) == "c767fe5f7517"
  assert (prepare.world_fingerprint(clip.get_config("model.image_size=32"))
          != "62e6f9de3a9e")
