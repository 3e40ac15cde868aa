"""Knowledge-CLIP (Pan et al., "Contrastive Language-Image Pre-Training with
Knowledge Graphs", NeurIPS 2022): CLIP trained on knowledge-graph triplets with
image and text entities, a fusion encoder, and the E2E, E2R, G2E and KD objectives.

    python -m vlkg.main --config configs/knowledge_clip.py --workdir /tmp/vlkg_kclip

The default trains on the built-in world, whose prepared dataset carries the
world's triplets (concept facts, concept images, region pairs, captions), with the
same model, steps and seed as ``configs/clip.py``; from scratch there is no
teacher, so no KD term. The paper continues from a pre-trained CLIP, as
``finetune`` does from the world base model:

    python -m vlkg.main --config configs/knowledge_clip.py:finetune \
        --config.model_init=BASE_WORKDIR --workdir RUN

``vit_b32`` has ViT-B/32's shapes (the paper's ablation model) for imported CLIP
weights (``--config.model_init``), with wider fusion and graph heads and more
triplets per step. Model selection uses the ``val`` split's knowledge suite
(``select_metric``), never ``test``.

``config.knowledge_clip`` holds every option, from
``vlkg.methods.knowledge_clip.default_config``.
"""

from vlkg import config as config_lib


def get_config(arg=None):
  preset, overrides = config_lib.parse_arg(arg)
  config = config_lib.base_config(preset, "knowledge_clip")
  config.evals.world.splits = ("val", "test", "test_comp")
  config.select_metric = "world_val/knowledge"
  # Starting from CLIP weights, only the fusion encoder and the graph transformer
  # are new.
  config.model_init_new = "^(kfusion|g2e)/"
  if preset == "vit_b32":
    config.input.batch_size = 256
    config.optim.update(lr=1e-5, warmup_steps=50)
    config.update(total_steps=None, total_epochs=5)
    # ViT-B/32's 7 x 7 patch grid enters the fusion encoder whole.
    config.knowledge_clip.update(fusion_heads=8, g2e_heads=8, kg_text_text=32,
                                 kg_mixed=32, kg_image_image=16, fusion_image_pool=1)
  return config_lib.finalize(config, overrides)
