"""Why a contrastive image tower on the world does or does not learn shape.

    python -m vlkg.tools.shape_diagnosis confusers [--batch_size 128 --batches 5]
    python -m vlkg.tools.shape_diagnosis supervised [--stem conv --image_size 64 ...]
    python -m vlkg.tools.shape_diagnosis words --workdir RUN

Each prints one JSON object.

Two measurements that separate the candidate causes (docs/results.md, "Why the
world's CLIP learns no shape"):

* ``batch_confusers``: the shortcut question. For each caption of a random training
  batch, how many *other* images of the batch the caption would also describe if one
  attribute kind (shape, color, size or texture) were dropped from it, while the full
  caption is false of them. If dropping shape left almost no confusers, colour, size
  and count would already tell the pairs of a batch apart, and InfoNCE (Radford et
  al. 2021, §2.3) would have no reason to learn shape.
* ``supervised_shape``: the learnability question. A ViT of the run's shape
  (Dosovitskiy et al. 2021, §3.1; or the convolutional stem of Xiao et al. 2021,
  "Early Convolutions Help Transformers See Better", §3) trained with cross-entropy
  to name the shape of one-object world images, scored on held-out scenes, split by
  object size. If even a supervised tower could not learn shape at the world's
  resolution, no contrastive objective could.
* ``word_separation``: the text side. A trained run's text embeddings of one-noun
  captions that differ only in the shape word ("a circle", "a square", ...), or only
  in the color word ("a red circle", "a blue circle", ...): the mean cosine between
  distinct captions of a set. Near 1 means the text tower does not tell those words
  apart, so InfoNCE gives the image tower no direction towards them.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from vlkg.data.world import captions as cap
from vlkg.data.world import ontology, render, scene as scene_lib

KINDS = ("shape", "color", "size", "texture")


def drop_kind(caption: cap.Caption, kind: str) -> cap.Caption:
  """The caption with every mention of one attribute kind removed (a shape becomes
  the generic noun "shape")."""

  def noun_phrase(np_: cap.NounPhrase) -> cap.NounPhrase:
    if kind == "shape":
      return dataclasses.replace(np_, shape=None)
    return dataclasses.replace(
        np_, attributes=tuple((k, v) for k, v in np_.attributes if k != kind))

  return tuple(
      noun_phrase(c) if isinstance(c, cap.NounPhrase)
      else cap.Relation(noun_phrase(c.subject), c.predicate, noun_phrase(c.object))
      for c in caption)


def confusers(captions: list[cap.Caption], scenes: list[scene_lib.Scene],
              kind: str) -> np.ndarray:
  """For each pair i, the number of other scenes j of which caption i without
  ``kind`` is not FALSE while caption i itself is FALSE: the pairs that only
  ``kind`` tells apart."""
  out = np.zeros(len(captions), np.int64)
  for i, caption in enumerate(captions):
    blind = drop_kind(caption, kind)
    out[i] = sum(
        1 for j, scene in enumerate(scenes)
        if j != i and cap.caption_value(caption, scene) == scene_lib.FALSE
        and cap.caption_value(blind, scene) != scene_lib.FALSE)
  return out


def batch_confusers(spec: scene_lib.WorldSpec, batch_size: int = 128,
                    num_batches: int = 5, seed: int = 0,
                    num_train: int = 50_000) -> dict[str, float]:
  """``confusers/<kind>/needed`` (share of captions with at least one confuser) and
  ``confusers/<kind>/mean`` over random training batches, for every kind."""
  rng = np.random.default_rng(seed)
  counts = {kind: [] for kind in KINDS}
  for _ in range(num_batches):
    scenes = [scene_lib.sample_scene(spec, "train", int(i))
              for i in rng.integers(0, num_train, batch_size)]
    captions = [cap.sample_caption(s, rng) for s in scenes]
    for kind in KINDS:
      counts[kind].append(confusers(captions, scenes, kind))
  out = {}
  for kind, parts in counts.items():
    c = np.concatenate(parts)
    out[f"confusers/{kind}/needed"] = float(np.mean(c > 0))
    out[f"confusers/{kind}/mean"] = float(np.mean(c))
  return out


def one_object_images(spec: scene_lib.WorldSpec, split: str, n: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(uint8 images [n, S, S, 3], shape ids [n], is-small [n]) of one-object scenes."""
  spec = dataclasses.replace(spec, min_objects=1, max_objects=1)
  scenes = [scene_lib.sample_scene(spec, split, i) for i in range(n)]
  names = [s.name for s in ontology.SHAPES]
  shapes = np.array([names.index(s.objects[0].shape) for s in scenes])
  small = np.array([s.objects[0].size == "small" for s in scenes])
  return render.render_many(scenes), shapes, small


def supervised_shape(image_size: int = 64, patch_size: int = 8, stem: str = "patch",
                     width: int = 128, depth: int = 3, heads: int = 4,
                     steps: int = 600, lr: float = 1e-3, batch_size: int = 128,
                     num_train: int = 8192, num_test: int = 1000,
                     seed: int = 0) -> dict[str, float]:
  """Test accuracy of a supervised 9-way shape classifier on one-object images.

  AdamW (b2 0.98, weight decay 0.1) with a linear warm-up over a tenth of the steps
  (at most 100) and a cosine decay, as the contrastive runs use; batches are drawn
  with replacement from ``num_train`` rendered training scenes.

  Returns:
    ``accuracy``, ``accuracy_small`` and ``accuracy_large`` (by object size),
    ``chance`` (1/9), the final training ``loss`` and ``seconds``.
  """
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from vlkg import preprocess
  from vlkg.models.vit import VisionTransformer

  start = time.perf_counter()
  spec = scene_lib.WorldSpec(seed=seed, image_size=image_size)
  x_train, y_train, _ = one_object_images(spec, "train", num_train)
  x_test, y_test, small = one_object_images(spec, "test", num_test)

  class Classifier(nn.Module):

    @nn.compact
    def __call__(self, images):
      z = VisionTransformer(patch_size=patch_size, width=width, depth=depth,
                            heads=heads, embed_dim=width, stem=stem)(images)
      return nn.Dense(len(ontology.SHAPES))(z)

  model = Classifier()
  params = model.init(jax.random.key(seed),
                      jnp.zeros((1, image_size, image_size, 3)))["params"]
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, min(100, steps // 10), steps)
  tx = optax.adamw(schedule, b2=0.98, weight_decay=0.1)
  opt_state = tx.init(params)

  def logits(p, images):
    return model.apply({"params": p}, preprocess.normalize_images(images))

  @jax.jit
  def step(p, s, images, labels):
    def loss_fn(p):
      return optax.softmax_cross_entropy_with_integer_labels(
          logits(p, images), labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  predict = jax.jit(lambda p, images: jnp.argmax(logits(p, images), -1))
  rng = np.random.default_rng(seed)
  loss = jnp.nan
  for _ in range(steps):
    idx = rng.integers(0, num_train, batch_size)
    params, opt_state, loss = step(params, opt_state, x_train[idx], y_train[idx])
  predicted = np.concatenate([np.asarray(predict(params, x_test[i:i + 250]))
                              for i in range(0, num_test, 250)])
  correct = predicted == y_test
  return {"accuracy": float(correct.mean()),
          "accuracy_small": float(correct[small].mean()),
          "accuracy_large": float(correct[~small].mean()),
          "chance": 1 / len(ontology.SHAPES), "loss": float(loss),
          "seconds": round(time.perf_counter() - start, 1)}


def mean_offdiagonal_cosine(embeddings: np.ndarray) -> float:
  """Mean cosine between distinct rows (rows are L2-normalised first)."""
  x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  sims = x @ x.T
  n = len(x)
  return float((sims.sum() - np.trace(sims)) / (n * n - n))


def word_separation(encode_texts) -> dict[str, float]:
  """``words/shape`` (captions "a <shape>"), ``words/shape_after_color`` ("a red
  <shape>") and ``words/color`` ("a <color> circle"): mean cosines between distinct
  captions of each set, from ``encode_texts`` (list of str -> [N, D])."""
  shapes = [s.name for s in ontology.SHAPES]
  colors = [c.name for c in ontology.COLORS]
  sets = {"words/shape": [f"a {s}" for s in shapes],
          "words/shape_after_color": [f"a red {s}" for s in shapes],
          "words/color": [f"a {c} circle" for c in colors]}
  return {k: mean_offdiagonal_cosine(np.asarray(encode_texts(v), np.float64))
          for k, v in sets.items()}


def main(argv):
  import json
  from absl import app
  if len(argv) != 2 or argv[1] not in ("confusers", "supervised", "words"):
    raise app.UsageError("usage: python -m vlkg.tools.shape_diagnosis "
                         "{confusers|supervised|words} [flags]")
  f = _FLAGS
  if argv[1] == "words":
    if not f.workdir.value:
      raise app.UsageError("words needs --workdir RUN (a run with params.npz)")
    from vlkg import api
    result = word_separation(api.load(f.workdir.value).encode_texts)
  elif argv[1] == "confusers":
    spec = scene_lib.WorldSpec(seed=f.seed.value, image_size=f.image_size.value)
    result = batch_confusers(spec, f.batch_size.value, f.batches.value, f.seed.value)
  else:
    result = supervised_shape(
        image_size=f.image_size.value, patch_size=f.patch_size.value,
        stem=f.stem.value, steps=f.steps.value, lr=f.lr.value,
        batch_size=f.batch_size.value, seed=f.seed.value)
  print(json.dumps(result, sort_keys=True))


class _FLAGS:  # defined only when run as a program (flags are process-global)
  pass


if __name__ == "__main__":
  from absl import app, flags
  _FLAGS.seed = flags.DEFINE_integer("seed", 0, "World and training seed.")
  _FLAGS.workdir = flags.DEFINE_string("workdir", "", "words: the run to read.")
  _FLAGS.image_size = flags.DEFINE_integer("image_size", 64, "Image side.")
  _FLAGS.patch_size = flags.DEFINE_integer("patch_size", 8, "ViT patch side.")
  _FLAGS.stem = flags.DEFINE_enum("stem", "patch", ["patch", "conv"], "ViT stem.")
  _FLAGS.steps = flags.DEFINE_integer("steps", 600, "Supervised training steps.")
  _FLAGS.lr = flags.DEFINE_float("lr", 1e-3, "Peak learning rate.")
  _FLAGS.batch_size = flags.DEFINE_integer("batch_size", 128, "Batch size.")
  _FLAGS.batches = flags.DEFINE_integer("batches", 5, "Batches for `confusers`.")
  app.run(main)
