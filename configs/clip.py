"""CLIP baseline: symmetric InfoNCE with a learnable temperature (Radford et al. 2021).

    python -m vlkg.main --config configs/clip.py --workdir /tmp/vlkg_clip
    python -m vlkg.main --config configs/clip.py:smoke --workdir /tmp/vlkg_smoke
"""

from configs import common


def get_config(arg=None):
  preset, overrides = common.parse_arg(arg)
  config = common.base_config(preset)
  config.method = "clip"
  return common.finalize(config, overrides)
