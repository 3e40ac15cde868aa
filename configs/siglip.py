"""SigLIP: pairwise sigmoid loss with a learned temperature and bias (Zhai et al. 2023).

    python -m vlkg.main --config configs/siglip.py --workdir /tmp/vlkg_siglip

``config.siglip`` holds the initial temperature and bias (SigLIP §3.2: t' = log 10,
b = -10), from ``vlkg.methods.siglip.default_config``.
"""

from configs import common
from vlkg.methods import siglip


def get_config(arg=None):
  preset, overrides = common.parse_arg(arg)
  config = common.base_config(preset)
  config.method = "siglip"
  config.siglip = siglip.default_config()
  return common.finalize(config, overrides)
