"""A tiny prepared world for method tests: (resolved config, dataset directory)."""

from vlkg import train
from vlkg.data import prepare

TINY = ("smoke,world.num_train=64,world.num_val=16,world.num_test=16,"
        "world.num_test_comp=16,world.num_shards=2,world.workers=1")


def prepared(config_module, root, extra: str = ""):
  """Prepares the world for ``config_module.get_config`` under ``root``."""
  config = config_module.get_config(TINY + f",data_dir='{root}'" + extra)
  directory = prepare.ensure_prepared(config)
  return train.resolve_config(config, directory), directory
