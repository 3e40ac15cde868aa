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

The same analysis runs on the ``relation_swap`` suite (ARO VG-Relation: the two
arguments of a relation exchanged), per relation, and on the ``replace_att`` suite
(SugarCrepe), per kind of the replaced word. ``replace_att`` is split too by whether
another object of the scene has the replacing attribute: those items ask for
binding, the others only for seeing the attribute.
"""

from __future__ import annotations

import collections
import os

import numpy as np

from vlkg import files
from vlkg.data.benchmarks import aro, sugarcrepe
from vlkg.data.world import ontology
from vlkg.evaluators import binary_choice
from vlkg.evaluators.encoder import Encoder

_ARTICLES = ("a", "an", "the")


def attribute_kind(item: aro.AroItem) -> str:
  """The kind of the two swapped attributes ("color", "size", "texture"), or
  "mixed" when they differ (world items always swap one kind)."""
  kinds = {ontology.KIND_OF_VALUE.get(a, "other") for a in item.attributes}
  return kinds.pop() if len(kinds) == 1 else "mixed"


def replaced_word(caption: str, negative: str) -> tuple[str, str] | None:
  """The first (word, replacement) where a SugarCrepe negative differs from its
  caption, articles aside ("a red" -> "an orange" replaces "red"); ``None`` when
  the two differ in length or only in articles."""
  a, b = caption.split(), negative.split()
  if len(a) != len(b):
    return None
  return next(((x, y) for x, y in zip(a, b) if x != y and x not in _ARTICLES), None)


def replace_kinds(items) -> tuple[list[str], np.ndarray]:
  """Each SugarCrepe item's replaced kind ("color", "size", "texture" or "other")
  and whether its replacing word occurs elsewhere in the true caption."""
  kinds, named = [], []
  for it in items:
    pair = replaced_word(it.caption, it.negative_caption)
    kinds.append(ontology.KIND_OF_VALUE.get(pair[0], "other") if pair else "other")
    named.append(bool(pair) and pair[1] in it.caption.split())
  return kinds, np.asarray(named, bool)


def replacing_value_in_scene(items, scenes) -> np.ndarray:
  """[N] bool: the replacing attribute of each SugarCrepe item is one that another
  object of its scene has ("a small red circle" -> "a large red circle" beside a
  large square). Telling such a negative from the caption needs the attribute
  bound to its object; the others need it seen anywhere in the image.

  Args:
    items: SugarCrepe items of one world split.
    scenes: their scenes, item k's scene k.
  """
  lexicon = ontology.lexicon()
  out = []
  for it, scene in zip(items, scenes):
    pair = replaced_word(it.caption, it.negative_caption)
    value = lexicon.get(pair[1]) if pair else None
    kind = ontology.KIND_OF_VALUE.get(value)
    out.append(kind is not None and any(getattr(o, kind) == value for o in scene.objects))
  return np.asarray(out, bool)


def _scenes_of(dataset_dir: str, split: str, items) -> list | None:
  """The scene of each SugarCrepe item of a world split, from the split's records;
  None where they are not there to read."""
  from vlkg.data.world import knowledge_benchmarks, suites
  try:
    scenes = knowledge_benchmarks.split_scenes(dataset_dir, split)
  except (OSError, KeyError, ValueError):
    return None
  by_index = {s.index: s for s in scenes}
  return [by_index[suites.scene_index_of(it.filename)] for it in items]


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


def relation_kind(item: aro.AroItem) -> str:
  """A relation item's relation as a metric name ("left of" -> "left_of")."""
  return (item.relation_name or "other").replace(" ", "_")


def _aro_analysis(encoder: Encoder, root: str, items, kinds: list[str],
                  prefix: str) -> dict[str, float]:
  """`blind_analysis` of ARO items, each image cropped to its box."""
  images = np.stack([aro.crop_to_bbox(binary_choice.load_image(
      os.path.join(root, it.image_path)), it.bbox) for it in items])
  return blind_analysis(np.asarray(encoder.encode_images(images)),
                        _embed(encoder, [it.true_caption for it in items]),
                        _embed(encoder, [it.false_caption for it in items]), kinds, prefix)


def _embed(encoder: Encoder, texts: list[str]) -> np.ndarray:
  return np.asarray(encoder.encode_texts(texts))


def evaluate(encoder: Encoder, dataset_dir: str,
             splits: tuple[str, ...] = ("test", "test_comp")) -> dict[str, float]:
  """``text_prior/<split>/...`` for the ``attribute_swap`` suite of a prepared world,
  ``text_prior/<split>/relation_swap/...`` (per relation) for its ``relation_swap``
  suite and ``text_prior/<split>/replace_att/...`` for its ``replace_att`` suite."""
  from vlkg.evaluators import world
  out = {}
  root = os.path.join(dataset_dir, "benchmarks")
  for split in splits:
    items = aro.read_aro(world.suite_path(dataset_dir, split, "attribute_swap"),
                         "attribution")
    out.update(_aro_analysis(encoder, root, items, [attribute_kind(it) for it in items],
                             f"text_prior/{split}"))
    path = world.suite_path(dataset_dir, split, "relation_swap")
    if files.exists(path):
      items = aro.read_aro(path, "relation")
      out.update(_aro_analysis(encoder, root, items, [relation_kind(it) for it in items],
                               f"text_prior/{split}/relation_swap"))
    path = world.suite_path(dataset_dir, split, "replace_att")
    if not files.exists(path):
      continue
    items = sugarcrepe.read_sugarcrepe_file(path)
    kinds, named = replace_kinds(items)
    prefix = f"text_prior/{split}/replace_att"
    images = np.stack([binary_choice.load_image(os.path.join(root, it.filename))
                       for it in items])
    image_emb = np.asarray(encoder.encode_images(images))
    true_emb = _embed(encoder, [it.caption for it in items])
    false_emb = _embed(encoder, [it.negative_caption for it in items])
    out.update(blind_analysis(image_emb, true_emb, false_emb, kinds, prefix))
    sighted = aro_correct(image_emb, true_emb, false_emb)
    splits_of_items = [("replacing_word_in_caption", named),
                       ("replacing_word_not_in_caption", ~named)]
    scenes = _scenes_of(dataset_dir, split, items)
    if scenes is not None:
      in_scene = replacing_value_in_scene(items, scenes)
      splits_of_items += [("replacing_value_in_scene", in_scene),
                          ("replacing_value_not_in_scene", ~in_scene)]
      kind_of_item = np.asarray(kinds)
      for kind in sorted(set(kinds)):
        of_kind = kind_of_item == kind
        splits_of_items += [(f"{kind}/replacing_value_in_scene", of_kind & in_scene),
                            (f"{kind}/replacing_value_not_in_scene", of_kind & ~in_scene)]
    for name, mask in splits_of_items:
      if mask.any():
        out[f"{prefix}/{name}"] = float(sighted[mask].mean())
        out[f"{prefix}/{name}_n_items"] = float(mask.sum())
  return out
