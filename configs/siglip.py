"""SigLIP: pairwise sigmoid loss with a learned temperature and bias (Zhai et al. 2023).

    python -m vlkg.main --config configs/siglip.py --workdir /tmp/vlkg_siglip

``config.siglip`` holds the initial temperature and bias (SigLIP §3.2: t' = log 10,
b = -10), from ``vlkg.methods.siglip.default_config``.
"""

from vlkg import config as config_lib


def get_config(arg=None):
  preset, overrides = config_lib.parse_arg(arg)
  config = config_lib.base_config(preset, "siglip")
  return config_lib.finalize(config, overrides)
