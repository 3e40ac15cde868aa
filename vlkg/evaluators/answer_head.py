"""A closed-answer classifier fitted on a frozen model's features.

Knowledge VQA is answered by classification over the benchmark's answer vocabulary
(OK-VQA, Marino et al., CVPR 2019; REAVL, Rao et al., ACM MM 2023, §4.2, fine-tune
their models on the train questions). `vlkg.evaluators.vqa_head` fits this head on
the frozen model's features of (image, question) instead, so that every model is
read by the same head trained on the same questions, and a question the features
cannot answer stays unanswered however the head is tuned.

The head is one hidden layer (GELU) over the features standardised with the fit
set's mean and standard deviation, trained with AdamW on the softmax cross-entropy
of the answers; every ``select_every`` steps it is scored on a held-out selection
set, and the best head is kept. Everything is seeded, so a fit is reproducible.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


class HeadConfig(NamedTuple):
  """The head's settings (the ``vqa_head`` evaluator's keys)."""

  hidden: int = 1024
  steps: int = 6000
  batch_size: int = 256
  lr: float = 1e-3
  weight_decay: float = 1e-4
  select_every: int = 500
  seed: int = 0


class _MLP(nn.Module):
  hidden: int
  classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.classes)(nn.gelu(nn.Dense(self.hidden)(x)))


class AnswerHead(NamedTuple):
  """A fitted head: ``logits(features)`` [N, A], and the selection score it won with."""

  mean: np.ndarray
  scale: np.ndarray
  params: dict
  hidden: int
  classes: int
  selected_score: float
  selected_step: int

  def logits(self, features: np.ndarray) -> np.ndarray:
    x = (np.asarray(features, np.float32) - self.mean) / self.scale
    return np.asarray(_logits(self.hidden, self.classes, self.params, x))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _logits(hidden: int, classes: int, params, x):
  return _MLP(hidden, classes).apply({"params": params}, x)


def fit(features: np.ndarray, labels: np.ndarray, classes: int,
        select: Callable[[Callable[[np.ndarray], np.ndarray]], float],
        config: HeadConfig = HeadConfig()) -> AnswerHead:
  """Fits the head.

  Args:
    features: [N, F] the fit set's features.
    labels: [N] int answer ids in [0, classes).
    classes: The vocabulary's size.
    select: Scores a candidate head, given as ``logits_fn(features) -> [M, A]``, on
      the selection set (higher is better); the best head is returned.
    config: `HeadConfig`.

  Returns:
    The `AnswerHead` with the best selection score (the earliest on a tie).
  """
  x = np.asarray(features, np.float32)
  y = np.asarray(labels, np.int32)
  if x.ndim != 2 or len(x) != len(y) or not len(x):
    raise ValueError(f"features {x.shape} and labels {y.shape}: expected [N, F] and "
                     "[N] with N > 0")
  if y.min() < 0 or y.max() >= classes:
    raise ValueError(f"labels must lie in [0, {classes}); got {y.min()}..{y.max()}")
  mean = x.mean(0)
  scale = x.std(0) + 1e-6
  xs = jnp.asarray((x - mean) / scale)
  ys = jnp.asarray(y)
  model = _MLP(config.hidden, classes)
  init_key, data_key = jax.random.split(jax.random.key(config.seed))
  params = jax.jit(model.init)(init_key, xs[:1])["params"]
  optimizer = optax.adamw(config.lr, weight_decay=config.weight_decay)
  state = jax.jit(optimizer.init)(params)

  def loss(p, rows):
    logits = model.apply({"params": p}, xs[rows])
    return optax.softmax_cross_entropy_with_integer_labels(logits, ys[rows]).mean()

  @jax.jit
  def train(p, s, first):
    def step(carry, i):
      p, s = carry
      rows = jax.random.randint(jax.random.fold_in(data_key, i), (config.batch_size,),
                                0, xs.shape[0])
      updates, s = optimizer.update(jax.grad(loss)(p, rows), s, p)
      return (optax.apply_updates(p, updates), s), None
    (p, s), _ = jax.lax.scan(step, (p, s), first + jnp.arange(config.select_every))
    return p, s

  def head(p, score=float("nan"), at=0):
    return AnswerHead(mean, scale, jax.tree.map(np.asarray, p), config.hidden, classes,
                      score, at)

  best = None
  for start in range(0, max(config.steps, 1), config.select_every):
    params, state = train(params, state, start)
    candidate = head(params)
    score = float(select(candidate.logits))
    if best is None or score > best.selected_score:
      best = head(params, score, start + config.select_every)
  return best
