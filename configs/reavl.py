"""REAVL (Rao et al., "Retrieval-based Knowledge Augmented Vision Language
Pre-training", ACM MM 2023): CLIP with a knowledge retriever over the knowledge
graph's entities, a gated knowledge-augmented fusion encoder, and masked language
modelling, masked entity modelling, image-text-knowledge matching and link
prediction.

    python -m vlkg.main --config configs/reavl.py --workdir /tmp/vlkg_reavl

The default trains on the built-in world, whose prepared dataset carries its
knowledge graph's table (the index's entities) and each caption's gold entities,
with the same model, steps and seed as ``configs/clip.py``. ``finetune``
continues from the world base model, as every method does:

    python -m vlkg.main --config configs/reavl.py:finetune \\
        --config.model_init=BASE_WORKDIR --workdir RUN

``vit_b32`` has ViT-B/32's shapes for imported CLIP weights (``--config.model_init``),
with a wider fusion encoder and the whole 7 x 7 patch grid. The index's
embeddings are sharded over the mesh's devices along the entities
(``sharding_rules``). Model selection uses the ``val`` split's knowledge suite.

``config.reavl`` holds every option, from ``vlkg.methods.reavl.default_config``.
"""

from vlkg import config as config_lib


def get_config(arg=None):
  preset, overrides = config_lib.parse_arg(arg)
  config = config_lib.base_config(preset, "reavl")
  config.evals.world.splits = ("val", "test", "test_comp")
  config.evals.knowledge_recall = {"type": "knowledge_recall", "split": "test"}
  config.evals.question_recall = {"type": "question_recall", "split": "test"}
  config.select_metric = "world_val/knowledge"
  # Starting from CLIP weights, only REAVL's query, gate, fusion and heads are new.
  config.model_init_new = "^reavl/"
  # The index's embeddings (the train state's memory) split over the devices.
  config.sharding_rules = [(r"^memory/(keys|triples)$", ("data",))]
  if preset == "finetune":  # knowledge VQA through a trained answer head
    config_lib.add_vqa_head(config)
  if preset == "vit_b32":
    config.input.batch_size = 256
    config.optim.update(lr=1e-5, warmup_steps=50)
    config.update(total_steps=None, total_epochs=5)
    config.reavl.update(fusion_heads=8, fusion_image_pool=1)
  return config_lib.finalize(config, overrides)
