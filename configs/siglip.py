"""SigLIP: pairwise sigmoid loss with a learned temperature and bias (Zhai et al. 2023).

    python -m vlkg.main --config configs/siglip.py --workdir /tmp/vlkg_siglip
"""

import math

from vlkg import config as config_lib


def get_config(arg=None):
  preset, overrides = config_lib.parse_arg(arg)
  config = config_lib.base_config(preset, "siglip")
  # SigLIP §3: t' = log 10, b = -10, so training starts at the prior of rare positives.
  config.model.init_logit_scale = math.log(10.0)
  config.model.init_logit_bias = -10.0
  return config_lib.finalize(config, overrides)
