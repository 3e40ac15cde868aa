"""The settings every run shares: the world, the input, the dual encoder, training.

Presets:

  * ``default``: the built-in world on CPU; what a new user trains first;
  * ``smoke``: a tiny end-to-end run in well under a minute;
  * ``vit_b32``: CLIP ViT-B/32 shapes for fine-tuning imported weights;
  * ``base``: the world base model that every method is fine-tuned from;
  * ``finetune``: a fine-tune from ``--config.model_init=BASE_WORKDIR``, with the
    same steps, batch and learning-rate schedule for every method
    (``python -m vlkg.tools.results`` runs both).

``base_config(preset, method)`` also gives the method its own section,
``config.<method>``, from ``vlkg.methods.<method>.default_config()`` when the method
module defines it, so that a method's defaults are written once, in the method.
"""

from __future__ import annotations


import ml_collections

from vlkg.config import durations
from vlkg.errors import ConfigError

PRESETS = ("default", "smoke", "vit_b32", "base", "finetune")
# The finetune preset's model_init until the caller sets it: training fails on it
# with a message that names the flag, rather than silently starting from scratch.
MODEL_INIT_REQUIRED = "<required: --config.model_init=BASE_WORKDIR>"


def method_section(method: str):
  """``vlkg.methods.<method>.default_config()``, or None when it has none."""
  from vlkg import methods
  make = getattr(methods.load(method), "default_config", None)
  return None if make is None else make()


def base_config(preset: str = "default", method: str = "clip") -> ml_collections.ConfigDict:
  """An unlocked config of ``method`` at ``preset``; ``configs/<method>.py`` adds its
  own changes and calls `vlkg.config.finalize`."""
  if preset not in PRESETS:
    raise ConfigError(f"unknown preset {preset!r}; expected one of {PRESETS}")
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  # Where prepared datasets live. Empty: $VLKG_DATA_DIR, else ~/.cache/vlkg/data.
  c.data_dir = ""

  c.world = dict(
      seed=0,
      min_objects=1,
      max_objects=4,
      test_comp_fraction=0.12,  # share of color-shape pairs held out of training
      num_train=50_000,
      num_val=1_000,
      num_test=1_000,
      num_test_comp=1_000,
      captions_per_image=3,
      max_clauses=3,
      # Chance that a caption's noun phrase names its object's color. Lower values
      # leave more captions that only shape, size and texture tell apart.
      caption_color_rate=0.9,
      # Plain scenes: one object, captions that never name its color
      # (vlkg.data.world.build.scene_and_captions), in a split of their own that
      # the first plain_steps training steps read instead of "train".
      num_plain=0,
      plain_steps=0,
      # Chance that a plain caption names its object's size, and its texture
      # ("solid" at a quarter of it, as in every caption): 0.5 as elsewhere.
      plain_attribute_rate=0.5,
      # The same chances in the captions of the training split ("train"); the
      # evaluation splits keep 0.5, so their suites do not change with it.
      train_attribute_rate=0.5,
      # The texture chance of the training split's captions alone, where it differs
      # from train_attribute_rate (None: the same).
      train_texture_rate=None,
      # Chance that a caption of a one-object scene (every plain scene, and the
      # one-object scenes of the other splits) ends by saying where its object is
      # ("at the top left", "on the right", "in the middle"). No caption of a scene
      # with several objects says it, so relations still ask for binding.
      position_rate=0.0,
      # After the plain_steps, every plain_every-th step reads plain scenes again
      # (0: never), so that what only their captions say stays learned.
      plain_every=0,
      num_shards=16,
      vocab_size=512,
      # BPE learns the world's words whole; unigram at this corpus size splits
      # common words into characters ("there" -> "the" "re").
      tokenizer_type="bpe",
      workers=2,  # processes used by prepare; 0 = one per core
  )

  c.input = dict(
      # "world" (built in), or a real corpus (docs/data.md, Real corpora): "coco",
      # "karpathy", "visual_genome", "captions" (.tsv / .jsonl), "tfds_coco".
      data="world",
      batch_size=128,  # global batch
      text_len=32,
      shuffle_buffer=20_000,
      # The share of each training shard a run reads (its first records): 0.1
      # fine-tunes on 10% of the data (REAVL's sample-efficiency claim).
      train_fraction=1.0,
      prefetch=2,
      threads=0,  # tf.data threads; 0 = one per core
      # Real corpora only (prepared once into data_dir, like the world):
      path="",  # the annotation file or folder (tfds_coco: the TFDS data_dir)
      images="",  # image root; "" = the corpus's own layout beside the annotations
      train_split="",  # the corpus's split names; "" = its default (train2017,
      eval_split="",  # train+restval, ...) and held-out split (val2017, val, ...)
      val_size=1000,  # images held out of corpora without a split (captions, VG)
      max_items=0,  # images per split; 0 = all
      captions_per_image=5,
      # A tokenizer JSON, or a run / import dir whose config.json has "tokenizer".
      # "" = model_init's if that is set, else a sentencepiece trained on the corpus.
      tokenizer="",
      vocab_size=8192,  # of a tokenizer trained on the corpus
  )

  c.model = dict(
      # The side of the square images the model reads. Every dataset is prepared at
      # it (the world renders at it, corpora are resized to it) and vlkg.api
      # resizes its inputs to it.
      image_size=64,
      embed_dim=128,
      image=dict(width=128, depth=3, heads=4, patch_size=8, mlp_ratio=4, act="gelu",
                 stem="patch", pool_type="cls"),
      text=dict(width=128, depth=2, heads=4, vocab_size=0, context_length=32,
                mlp_ratio=4, act="gelu", causal=True, pool="eot", pad_id=0, eot_id=3,
                mask_pad=True),
      # Compute dtype: "bfloat16" is mixed precision (bf16 matmuls and convolutions;
      # float32 params, attention softmax, contrastive logits and loss).
      dtype="float32",
      # How attention is computed: "xla" (any backend) or "cudnn" (cuDNN's fused
      # attention; NVIDIA GPUs with dtype "bfloat16"). vlkg.models.layers.
      attention="xla",
      # The contrastive logit scale exp(logit_scale) is learned within
      # [min_logit_scale, max_logit_scale]; a floor (None: none, as CLIP) above the
      # learned value holds the temperature fixed at it.
      max_logit_scale=100.0,
      min_logit_scale=None,
  )

  c.optim = dict(
      lr=1e-3,
      end_lr_factor=0.0,
      b1=0.9,
      b2=0.98,
      eps=1e-6,
      weight_decay=0.1,
      no_decay=r"(bias|scale|embedding|class_embedding|logit_scale|logit_bias)$",
      grad_clip_norm=1.0,
      frozen=(),  # regexes of parameter paths kept fixed (LiT-style)
      **durations.durations(warmup=100),
  )

  # Durations in steps, examples or epochs: exactly one key of each group is set
  # (vlkg.config.durations). Sized so that the default run (prepare, train, three
  # evals) takes <= 15 minutes on a 2-core CPU; see docs/results.md for the time.
  c.update(durations.durations(total=900, log_every=25, eval_every=450,
                               checkpoint_every=250))
  c.keep = 2
  c.keep_every = 0
  c.resume = ""
  c.model_init = ""  # params.npz (or a run dir) to start from, e.g. imported CLIP
  # Regex of parameter paths that model_init does not have and that keep their fresh
  # init (e.g. "^kee/" for Structure-CLIP from CLIP weights); "" = all must match.
  c.model_init_new = ""

  # Evaluators by module path: {"name": {"type": <vlkg.evaluators module>, **kwargs}}.
  # Written for the world; on a real corpus, vlkg.evaluators.for_data runs retrieval
  # on its held-out split instead of the world's suites.
  # The knowledge-graph completion of vlkg.evaluators.kg runs for every method, so
  # that the methods compare on it (no metrics on data without a triplet table).
  c.evals = ml_collections.ConfigDict({
      "world": {"type": "world", "splits": ("test", "test_comp"), "max_items": 0},
      "kg": {"type": "kg"}})

  # Keep params_best.npz at the best value of this eval metric ("" = off). Use a
  # val metric (world_val/...): selecting on test is selecting on the answer.
  c.select_metric = ""

  # Weights & Biases beside TensorBoard (vlkg.wandb_writer): a project name, "" = off;
  # used only where the wandb package is installed.
  c.wandb = ml_collections.ConfigDict({"project": ""})

  c.mesh = [("data", -1)]
  c.sharding_rules = []  # [(regex over param path, PartitionSpec tuple)]

  section = method_section(method)
  if section:  # a method with no options (CLIP) has no section
    c[method] = section

  if preset == "smoke":
    c.world.update(num_train=512, num_val=64, num_test=64, num_test_comp=64,
                   num_shards=2, vocab_size=256)
    c.input.update(batch_size=32, shuffle_buffer=512)
    c.model.image.update(width=32, depth=1, heads=2)
    c.model.text.update(width=32, depth=1, heads=2)
    c.model.embed_dim = 32
    c.total_steps = 20
    c.log_every_steps = 5
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 10
  elif preset == "vit_b32":
    c.input.text_len = 77
    # OpenAI's ViT-B/32 exactly (QuickGELU; CLIP BPE ids, EOT 49407; pad keys not
    # masked, as pad id 0 is also the BPE symbol "!"), so that weights imported with
    # `python -m vlkg.tools.import_clip` compute what they computed in CLIP. Its
    # image_size is 224.
    from vlkg.models import clip_archs
    c.model = clip_archs.model_config("ViT-B-32-quickgelu")
  if preset in ("base", "finetune"):
    # Early convolutions (Xiao et al., "Early Convolutions Help Transformers See
    # Better", NeurIPS 2021, §3): the world's small shapes are learned much faster
    # than through a patch stem (docs/results.md, "Why the world's CLIP learns no
    # shape"). Fine-tunes share the base's towers.
    c.model.image.stem = "conv"
  if preset == "base":
    # The world base model: a CLIP that knows objects and fails at binding, the
    # regime the structure papers fine-tune in. Plain one-object scenes whose
    # captions never say colour make shape the first thing both towers agree on.
    c.world.update(num_plain=20_000, plain_steps=600)
    c.total_steps = 2800
    c.eval_every_steps = 700
    c.evals.probe = {"type": "probe"}
  if preset == "finetune":
    # Every method fine-tunes the base alike: equal steps, batch and schedule; the
    # one eval is at the end (eval_every_steps=0). 600 steps of 128 (1.5 epochs of
    # the world) at half the base's lr: 300 steps at lr 1e-4 (under one epoch) left
    # the hard-negative methods where CLIP is (docs/results.md, "Fine-tuned from
    # the base").
    c.model_init = MODEL_INIT_REQUIRED
    c.total_steps = 600
    c.optim.update(lr=5e-4, warmup_steps=30)
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 100
  return c


def add_vqa_head(c: ml_collections.ConfigDict) -> None:
  """Adds the ``vqa_head`` evaluator (`vlkg.evaluators.vqa_head`): knowledge VQA
  through an answer head fitted on the frozen model, read alike for every model
  that has it. It costs about two minutes of a fine-tune's final evaluation, so
  the presets whose claims read it (REAVL's) and their baseline's (CLIP's) add it."""
  c.evals.vqa_head = {"type": "vqa_head", "fit_scenes": 24_000, "hidden": 1024,
                      "steps": 6000, "select_every": 500, "seed": 0}
