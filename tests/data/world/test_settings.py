"""The world renders at the model's input size, and its datasets keep their names."""

from configs import clip
from vlkg.data import prepare, world


def test_world_settings_take_the_image_size_of_the_model():
  config = clip.get_config("smoke,model.image_size=32")
  settings = world.settings(config)
  assert settings.image_size == 32
  assert {k: v for k, v in settings.items() if k != "image_size"} == config.world.to_dict()
  assert "image_size" not in config.world  # the config is not changed


def test_world_dataset_names_are_pinned():
  """A config refactor that leaves the bytes alone must leave the dataset's name
  alone too, so prepared worlds and old runs still find theirs (generator 2, records format 2,
  the input size read from config.model.image_size)."""
  assert prepare.world_fingerprint(clip.get_config()) == "84f408a5828c"
  assert prepare.world_fingerprint(clip.get_config("vit_b32")) == "4f31d9001336"
  assert (prepare.world_fingerprint(clip.get_config("model.image_size=32"))
          != "84f408a5828c")
