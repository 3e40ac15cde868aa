"""SigLIP: pairwise sigmoid loss with a learned temperature and bias (Zhai et al. 2023).

    python -m vlkg.main --config configs/siglip.py --workdir /tmp/vlkg_siglip
"""

import math

from configs import common


def get_config(arg=None):
  preset, overrides = common.parse_arg(arg)
  config = common.base_config(preset)
  config.method = "siglip"
  # SigLIP §3: t' = log 10, b = -10, so training starts at the prior of rare positives.
  config.model.init_logit_scale = math.log(10.0)
  config.model.init_logit_bias = -10.0
  return common.finalize(config, overrides)
