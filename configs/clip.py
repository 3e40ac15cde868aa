"""CLIP baseline: symmetric InfoNCE with a learnable temperature (Radford et al. 2021).

    python -m vlkg.main --config configs/clip.py --workdir /tmp/vlkg_clip
    python -m vlkg.main --config configs/clip.py:smoke --workdir /tmp/vlkg_smoke
"""

from vlkg import config as config_lib


def get_config(arg=None):
  preset, overrides = config_lib.parse_arg(arg)
  config = config_lib.base_config(preset, "clip")
  if preset == "finetune":  # the baseline of REAVL's knowledge-VQA comparisons
    config_lib.add_vqa_head(config)
  return config_lib.finalize(config, overrides)
