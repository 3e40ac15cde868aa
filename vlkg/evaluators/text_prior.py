"""How much of an attribute-swap score a caption prior explains (a blind baseline).

An attribute-swap item (ARO VG-Attribution, Yuksekgonul et al. 2023 §3; the world's
``attribute_swap`` suite) asks which of two captions with the same words fits the
image: "the red circle and the blue star" or "the blue circle and the red star".
Only a model that binds each color to its shape can answer from the image. A model
can also score above or below chance from the captions alone: if its text tower
prefers color-shape pairs it saw in training, it leans towards the false caption on
``test_comp``, whose true caption holds a held-out pair.

This module scores each item twice: with the item's image (sighted), and with the
mean image embedding of the suite (blind: every item sees the same image, so only
the captions differ). It reports both accuracies, how often the two choices agree,
and the sighted accuracy per swapped attribute kind (color, size, texture). A gain
that the blind score shows too is a change of caption prior, not of binding.
"""

from __future__ import annotations

import collections
import os

import numpy as np

from vlkg.data.benchmarks import aro
from vlkg.data.world import ontology
from vlkg.evaluators import binary_choice
from vlkg.evaluators.encoder import Encoder


def attribute_kind(item: aro.AroItem) -> str:
  """The kind of the two swapped attributes ("color", "size", "texture"), or
  "mixed" when they differ (world items always swap one kind)."""
  kinds = {ontology.KIND_OF_VALUE.get(a, "other") for a in item.attributes}
  return kinds.pop() if len(kinds) == 1 else "mixed"


def blind_analysis(image_emb: np.ndarray, true_emb: np.ndarray, false_emb: np.ndarray,
                   kinds: list[str], prefix: str) -> dict[str, float]:
  """Sighted, blind and per-kind accuracies from unit embeddings of N items.

  Args:
    image_emb: [N, D] the items' (cropped) image embeddings.
    true_emb: [N, D] their true captions' embeddings.
    false_emb: [N, D] their false captions' embeddings.
    kinds: N attribute kinds.
    prefix: metric name prefix.

  Returns:
    ``<prefix>/sighted``, ``/blind``, ``/agreement``, ``/<kind>`` and
    ``/<kind>_n_items``. As in ARO, a tie is wrong.
  """
  sighted = aro_correct(image_emb, true_emb, false_emb)
  blind_image = np.broadcast_to(image_emb.mean(0, keepdims=True), image_emb.shape)
  blind = aro_correct(blind_image, true_emb, false_emb)
  out = {f"{prefix}/sighted": float(sighted.mean()),
         f"{prefix}/blind": float(blind.mean()),
         f"{prefix}/agreement": float(np.mean(sighted == blind))}
  by_kind = collections.defaultdict(list)
  for kind, correct in zip(kinds, sighted):
    by_kind[kind].append(correct)
  for kind, values in sorted(by_kind.items()):
    out[f"{prefix}/{kind}"] = float(np.mean(values))
    out[f"{prefix}/{kind}_n_items"] = float(len(values))
  return out


def aro_correct(image_emb: np.ndarray, true_emb: np.ndarray,
                false_emb: np.ndarray) -> np.ndarray:
  """[N] bool: ARO's rule (a tie is wrong) on the dot products of the images with
  their [false, true] captions."""
  return binary_choice.aro_correct(np.stack(
      [np.sum(image_emb * false_emb, -1), np.sum(image_emb * true_emb, -1)], axis=-1))


def evaluate(encoder: Encoder, dataset_dir: str,
             splits: tuple[str, ...] = ("test", "test_comp")) -> dict[str, float]:
  """``text_prior/<split>/...`` for the ``attribute_swap`` suite of a prepared world."""
  from vlkg.evaluators import world
  out = {}
  for split in splits:
    path = world.suite_path(dataset_dir, split, "attribute_swap")
    items = aro.read_aro(path, "attribution")
    root = os.path.join(dataset_dir, "benchmarks")
    images = np.stack([aro.crop_to_bbox(binary_choice.load_image(
        os.path.join(root, it.image_path)), it.bbox) for it in items])
    out.update(blind_analysis(
        np.asarray(encoder.encode_images(images)),
        np.asarray(encoder.encode_texts([it.true_caption for it in items])),
        np.asarray(encoder.encode_texts([it.false_caption for it in items])),
        [attribute_kind(it) for it in items], f"text_prior/{split}"))
  return out
