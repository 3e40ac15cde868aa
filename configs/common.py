"""Shared pieces of every vlkg config: the world, the input, the dual encoder, training.

Configs are code (big_vision style): each ``configs/<method>.py`` has
``get_config(arg=None)`` where ``arg`` is ``"preset,key=value,..."``. The presets are

  * ``default``: the built-in world on CPU; what a new user trains first;
  * ``smoke``: a tiny end-to-end run in well under a minute;
  * ``vit_b32``: CLIP ViT-B/32 shapes for fine-tuning imported weights.

The returned ConfigDict is locked, so ``--config.no_such_key=1`` is an error.
"""

from __future__ import annotations

import ast

import ml_collections

PRESETS = ("default", "smoke", "vit_b32")


def parse_arg(arg: str | None) -> tuple[str, dict]:
  """``"smoke,total_steps=10"`` -> ("smoke", {"total_steps": 10})."""
  preset, overrides = "default", {}
  for part in filter(None, _split_top_level(arg or "")):
    if "=" in part:
      key, value = part.split("=", 1)
      try:
        overrides[key.strip()] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        overrides[key.strip()] = value
    else:
      preset = part.strip()
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r} in config arg {arg!r}; "
                     f"expected one of {PRESETS}")
  return preset, overrides


def _split_top_level(text: str) -> list[str]:
  """Splits on commas outside brackets and quotes: ``"a=(1,2),b=3"`` -> 2 parts."""
  parts, depth, quote, current = [], 0, None, []
  for ch in text:
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      parts.append("".join(current))
      current = []
      continue
    current.append(ch)
  parts.append("".join(current))
  return parts


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
  """Sets dotted keys; an unknown key raises an error that names it."""
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      if p not in node:
        raise KeyError(f"unknown config key {dotted!r}")
      node = node[p]
    if leaf not in node:
      raise KeyError(f"unknown config key {dotted!r}")
    node[leaf] = value


def base_config(preset: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "clip"
  c.seed = 0
  # Where prepared datasets live. Empty: $VLKG_DATA_DIR, else ~/.cache/vlkg/data.
  c.data_dir = ""

  c.world = dict(
      seed=0,
      image_size=64,
      min_objects=1,
      max_objects=4,
      test_comp_fraction=0.12,  # share of color-shape pairs held out of training
      num_train=50_000,
      num_val=1_000,
      num_test=1_000,
      num_test_comp=1_000,
      captions_per_image=3,
      max_clauses=3,
      num_shards=16,
      vocab_size=512,
      # BPE learns the world's words whole; unigram at this corpus size splits
      # common words into characters ("there" -> "the" "re").
      tokenizer_type="bpe",
      workers=2,  # processes used by prepare
  )

  c.input = dict(
      # "world" (built in), or a real corpus (docs/data.md, Real corpora): "coco",
      # "karpathy", "visual_genome", "captions" (.tsv / .jsonl), "tfds_coco".
      data="world",
      batch_size=128,  # global batch
      text_len=32,
      shuffle_buffer=20_000,
      prefetch=2,
      threads=0,  # tf.data threads; 0 = one per core
      # Real corpora only (prepared once into data_dir, like the world):
      path="",  # the annotation file or folder (tfds_coco: the TFDS data_dir)
      images="",  # image root; "" = the corpus's own layout beside the annotations
      image_size=0,  # 0 = world.image_size, the size the model reads
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
      embed_dim=128,
      image=dict(width=128, depth=3, heads=4, patch_size=8, mlp_ratio=4, act="gelu",
                 stem="patch", pool_type="cls"),
      text=dict(width=128, depth=2, heads=4, vocab_size=0, context_length=32,
                mlp_ratio=4, act="gelu", causal=True, pool="eot", pad_id=0, eot_id=3,
                mask_pad=True),
      dtype="float32",
  )

  c.optim = dict(
      lr=1e-3,
      warmup_steps=100,
      end_lr_factor=0.0,
      b1=0.9,
      b2=0.98,
      eps=1e-6,
      weight_decay=0.1,
      no_decay=r"(bias|scale|embedding|class_embedding|logit_scale|logit_bias)$",
      grad_clip_norm=1.0,
      frozen=(),  # regexes of parameter paths kept fixed (LiT-style)
  )

  # Sized so that the default run (prepare, train, three evals) takes <= 15 minutes
  # on a 2-core CPU; see docs/results.md for the measured time.
  c.total_steps = 900
  c.log_every = 25
  c.eval_every = 450
  c.checkpoint_every = 250
  c.keep = 2
  c.keep_every = 0
  c.resume = ""
  c.model_init = ""  # params.npz (or a run dir) to start from, e.g. imported CLIP
  # Regex of parameter paths that model_init does not have and that keep their fresh
  # init (e.g. "^kee/" for Structure-CLIP from CLIP weights); "" = all must match.
  c.model_init_new = ""

  # Evaluators by module path: {"name": {"type": <vlkg.evaluators module>, **kwargs}}.
  c.evals = ml_collections.ConfigDict({
      "world": {"type": "world", "splits": ("test", "test_comp"), "max_items": 0}})

  # Keep params_best.npz at the best value of this eval metric ("" = off). Use a
  # val metric (world_val/...): selecting on test is selecting on the answer.
  c.select_metric = ""

  c.mesh = [("data", -1)]
  c.sharding_rules = []  # [(regex over param path, PartitionSpec tuple)]

  if preset == "smoke":
    c.world.update(num_train=512, num_val=64, num_test=64, num_test_comp=64,
                   num_shards=2, vocab_size=256)
    c.input.update(batch_size=32, shuffle_buffer=512)
    c.model.image.update(width=32, depth=1, heads=2)
    c.model.text.update(width=32, depth=1, heads=2)
    c.model.embed_dim = 32
    c.total_steps = 20
    c.log_every = 5
    c.eval_every = 10
    c.checkpoint_every = 10
  elif preset == "vit_b32":
    c.world.image_size = 224
    c.input.text_len = 77
    # OpenAI's ViT-B/32 exactly (QuickGELU; CLIP BPE ids, EOT 49407; pad keys not
    # masked, as pad id 0 is also the BPE symbol "!"), so that weights imported with
    # `python -m vlkg.tools.import_clip` compute what they computed in CLIP.
    from vlkg.models import clip_archs
    c.model = clip_archs.model_config("ViT-B-32-quickgelu")
  return c


def finalize(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  apply_overrides(config, overrides)
  # A real corpus has no world suites: evaluate retrieval on its held-out split.
  # (``vlkg.data.prepare`` does the same for --config.input.data=..., which is set
  # after this function has run.)
  from vlkg.data import prepare
  prepare.corpus_evals(config)
  config.lock()
  return config
