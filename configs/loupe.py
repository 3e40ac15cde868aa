"""LOUPE (Li et al., NeurIPS 2022): fine-grained region-phrase
alignment from Shapley interactions, with an uncertainty-aware neural estimator.

    python -m vlkg.main --config configs/loupe.py --workdir /tmp/vlkg_loupe

The default trains on the built-in world with the same model, steps and seed as
``configs/clip.py``; the phrases are each caption's object phrases (prebuilt token
spans). Every world evaluation reports ``grounding/*`` (pointing game, IoU >= 0.5).
``config.loupe`` is ``vlkg.methods.loupe.default_config``, unchanged (TSIM off:
``--config.loupe.tsim_weight=1.0`` turns it on).
"""

from vlkg import config as config_lib


def get_config(arg=None):
  preset, overrides = config_lib.parse_arg(arg)
  config = config_lib.base_config(preset, "loupe")
  # Starting from CLIP weights, only the estimator and the region head are new.
  config.model_init_new = "^(shapley|region_head)/"
  return config_lib.finalize(config, overrides)
