"""The optimizer from ``config.optim``: AdamW, warmup + cosine, clipping, masks.

  * learning rate: linear warmup to ``lr`` over the warm-up (``optim.warmup_steps``,
    ``_examples`` or ``_epochs``), then cosine decay to ``lr * end_lr_factor`` at the
    end of training (``total_*``; `vlkg.config.durations`; Loshchilov & Hutter 2017);
  * weight decay applies to every parameter whose path does not match ``no_decay``
    (biases, norms, embeddings, temperature), as in CLIP's training recipe;
  * ``frozen`` regexes keep matching parameters fixed (LiT, Zhai et al. 2022):
    they get zero updates and no optimizer moments are stored for them.
"""

from __future__ import annotations

import re

import jax
import optax

from vlkg.config import durations
from vlkg.sharding import path_str


def schedule(config) -> optax.Schedule:
  """The learning rate by step; durations in examples or epochs need a resolved
  config (``vlkg.train.resolve_config``)."""
  o = config.optim
  total = durations.steps(config, "total")
  warmup = min(durations.steps(config, "optim.warmup"), max(total - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=o.lr, warmup_steps=warmup,
      decay_steps=max(total, warmup + 1), end_value=o.lr * o.end_lr_factor)


def _labels(params, predicate):
  return jax.tree_util.tree_map_with_path(lambda p, _: predicate(path_str(p)), params)


def is_frozen(name: str, patterns) -> bool:
  return any(re.search(p, name) for p in patterns)


def make_optimizer(config, params) -> optax.GradientTransformation:
  o = config.optim
  decay_mask = _labels(params, lambda name: not re.search(o.no_decay, name))
  tx = optax.chain(
      optax.clip_by_global_norm(o.grad_clip_norm) if o.grad_clip_norm else optax.identity(),
      optax.adamw(schedule(config), b1=o.b1, b2=o.b2, eps=o.eps,
                  weight_decay=o.weight_decay, mask=decay_mask))
  if not o.frozen:
    return tx
  labels = _labels(params, lambda name: "frozen" if is_frozen(name, o.frozen) else "train")
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
