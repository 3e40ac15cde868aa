"""The small world that the trainer's tests (tests/test_train.py,
tests/test_interruptions.py) run on: 256 scenes, batch 16, 12 steps."""

from configs import clip
from vlkg.data import prepare

SMOKE = ("smoke,world.num_train=256,world.num_val=16,world.num_test=16,"
         "world.num_test_comp=16,world.workers=1,input.batch_size=16,total_steps=12,"
         "log_every_steps=2,checkpoint_every_steps=4,eval_every_steps=1000")


def config(data_dir, extra=""):
  return clip.get_config(SMOKE + f",data_dir='{data_dir}'" + extra)


def prepared(tmp_path_factory) -> str:
  """A data folder with the world prepared (for a module-scoped fixture)."""
  root = str(tmp_path_factory.mktemp("data"))
  prepare.ensure_prepared(config(root))
  return root
