"""MosaiCLIP (Singh et al., EMNLP 2023): scene-graph decomposition,
coarse-to-fine contrastive learning, graph-space negatives and a curriculum.

    python -m vlkg.main --config configs/mosaiclip.py --workdir /tmp/vlkg_mosaiclip

The default trains on the built-in world with the same model, steps and seed as
``configs/clip.py``. ``vit_b32`` carries the paper's fine-tuning settings (batch
256, lr 1e-5, cosine schedule, 50 warm-up steps, 5 epochs of COCO's ~118k images),
to be combined with ``model_init`` pointing at imported CLIP weights. Model
selection uses the ``val`` split (``select_metric``), never ``test``.

``config.mosaiclip`` (curriculum and slots) is
``vlkg.methods.mosaiclip.default_config``, unchanged.
"""

from vlkg import config as config_lib


def get_config(arg=None):
  preset, overrides = config_lib.parse_arg(arg)
  config = config_lib.base_config(preset, "mosaiclip")
  config.evals.world.splits = ("val", "test", "test_comp")
  config.select_metric = "world_val/attribute_swap"
  if preset == "vit_b32":
    config.input.batch_size = 256
    config.optim.update(lr=1e-5, warmup_steps=50)
    config.update(total_steps=None, total_epochs=5)
  return config_lib.finalize(config, overrides)
