"""Binary-choice benchmark suites made from the world.

Each suite mirrors a real benchmark so that the same evaluators read both:
  * ``attribute_swap``: VG-Attribution (Yuksekgonul et al. 2023, ARO §3);
  * ``relation_swap``: VG-Relation, subject and object swapped (ARO §3);
  * ``order``: COCO-Order's four word-order perturbations (ARO §3);
  * ``replace_att``, ``replace_obj``, ``replace_rel``, ``swap_att``, ``swap_obj``,
    ``add_att``: SugarCrepe's categories (Hsieh et al. 2023 §3);
  * ``knowledge``: objects named only through knowledge-graph concepts.

An item is an image, its true caption and its false captions. Every false caption
except the order perturbations is a logical form that is checked FALSE against the
scene graph; candidates that come out TRUE or AMBIGUOUS are discarded, so an item is
never wrong by construction. Each suite makes at most one item per scene; ``focus``
names the object an item must be about (the held-out object on ``test_comp``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from vlkg.data.benchmarks import order as order_lib
from vlkg.data.world import captions as cap
from vlkg.data.world import ontology
from vlkg.data.world.scene import FALSE, TRUE, Scene

SUITES = ("attribute_swap", "relation_swap", "order", "replace_att", "replace_obj",
          "replace_rel", "swap_att", "swap_obj", "add_att", "knowledge")
ARO_SUITES = ("attribute_swap", "relation_swap")
SUGARCREPE_SUITES = ("replace_att", "replace_obj", "replace_rel", "swap_att",
                     "swap_obj", "add_att", "knowledge")
_TRIES = 12

_LEXICON = ontology.lexicon()
_NOUNS = frozenset(w for form, c in _LEXICON.items() if c in ontology.SHAPE_BY_NAME
                   for w in form.split()) | {"shape", "picture", "image"}
_ADJECTIVES = frozenset(w for form, c in _LEXICON.items() if c in ontology.KIND_OF_VALUE
                        for w in form.split())


def world_tag(word: str) -> str | bool:
  """The world's exact part-of-speech tagger for the order perturbations.

  ARO shuffles nouns among nouns and adjectives among adjectives, so the tagger
  says which of the two a word is (False for every other word).
  """
  return "noun" if word in _NOUNS else "adj" if word in _ADJECTIVES else False


def image_name(scene_index: int) -> str:
  """The file name of a scene's image under ``benchmarks/images/<split>/``."""
  return f"{scene_index:06d}.png"


def image_path(split: str, scene_index: int) -> str:
  """A scene's image relative to ``benchmarks/``, as the suite files name it."""
  return f"images/{split}/{image_name(scene_index)}"


def scene_index_of(path: str) -> int:
  """The scene index of a suite image path (`image_path`'s inverse)."""
  return int(os.path.splitext(os.path.basename(path))[0])


@dataclasses.dataclass(frozen=True)
class SuiteItem:
  scene_index: int
  true_caption: str
  false_captions: tuple[str, ...]
  relation_name: str | None = None
  attributes: tuple[str, str] | None = None


def _false(caption: cap.Caption, scene: Scene) -> bool:
  return cap.caption_value(caption, scene) == FALSE


def _focus_np(scene: Scene, i: int, rng, focus: bool) -> cap.NounPhrase:
  np_ = cap.describe(scene.objects[i], rng)
  if focus:  # a held-out pair is a color-shape pair: the color must be said
    np_ = np_.with_attribute("color", scene.objects[i].color)
  return np_


def caption_about(scene: Scene, i: int, rng, focus: bool) -> cap.Caption:
  """A true caption that mentions object ``i``, with a relation when there is one."""
  relations = [r for r in scene.true_relations() if i in (r[0], r[2])]
  if relations and rng.random() < 0.6:
    s, pred, o = relations[int(rng.integers(len(relations)))]
    subj = _focus_np(scene, s, rng, focus and s == i)
    obj = _focus_np(scene, o, rng, focus and o == i)
    return (cap.Relation(subj, pred, obj),)
  clauses = [_focus_np(scene, i, rng, focus)]
  others = [j for j in range(len(scene.objects)) if j != i]
  if others and rng.random() < 0.5:
    clauses.append(cap.describe(scene.objects[int(rng.choice(others))], rng))
  return tuple(clauses)


def _noun_phrases(caption: cap.Caption) -> list[tuple[int, str | None]]:
  """Addresses of every noun phrase: (clause index, None | "subject" | "object")."""
  out = []
  for k, c in enumerate(caption):
    out += [(k, None)] if isinstance(c, cap.NounPhrase) else [(k, "subject"), (k, "object")]
  return out


def _get(caption, address) -> cap.NounPhrase:
  k, role = address
  return caption[k] if role is None else getattr(caption[k], role)


def _set(caption, address, np_) -> cap.Caption:
  k, role = address
  clause = np_ if role is None else dataclasses.replace(caption[k], **{role: np_})
  return caption[:k] + (clause,) + caption[k + 1:]


# ----------------------------------------------------------------- edit functions
# Each takes a true caption and returns an edited caption, or None if it cannot.


def _replace_att(caption, scene, rng):
  slots = [(a, k) for a in _noun_phrases(caption) for k, _ in _get(caption, a).attributes]
  if not slots:
    return None
  address, kind = slots[int(rng.integers(len(slots)))]
  np_ = _get(caption, address)
  values = [v for v in ontology.VALUES_OF_KIND[kind] if v != np_.attribute(kind)]
  return _set(caption, address, np_.with_attribute(kind, str(rng.choice(values))))


def _replace_obj(caption, scene, rng):
  addresses = _noun_phrases(caption)
  address = addresses[int(rng.integers(len(addresses)))]
  np_ = _get(caption, address)
  shapes = [s.name for s in ontology.SHAPES if s.name != np_.shape]
  return _set(caption, address, dataclasses.replace(np_, shape=str(rng.choice(shapes))))


def _replace_rel(caption, scene, rng):
  ks = [k for k, c in enumerate(caption) if isinstance(c, cap.Relation)]
  if not ks:
    return None
  k = ks[int(rng.integers(len(ks)))]
  preds = [p for p in ontology.RELATIONS if p != caption[k].predicate]
  new = dataclasses.replace(caption[k], predicate=str(rng.choice(preds)))
  return caption[:k] + (new,) + caption[k + 1:]


def _two_noun_phrases(caption, rng, differ: Callable):
  addresses = _noun_phrases(caption)
  pairs = [(a, b) for x, a in enumerate(addresses) for b in addresses[x + 1:]
           if differ(_get(caption, a), _get(caption, b))]
  return pairs[int(rng.integers(len(pairs)))] if pairs else None


def _swap_att(caption, scene, rng):
  kinds = list(ontology.ATTRIBUTE_KINDS)
  rng.shuffle(kinds)
  for kind in kinds:
    pair = _two_noun_phrases(
        caption, rng, lambda x, y: None not in (x.attribute(kind), y.attribute(kind))
        and x.attribute(kind) != y.attribute(kind))
    if pair:
      a, b = (_get(caption, p) for p in pair)
      out = _set(caption, pair[0], a.with_attribute(kind, b.attribute(kind)))
      return _set(out, pair[1], b.with_attribute(kind, a.attribute(kind)))
  return None


def _swap_obj(caption, scene, rng):
  pair = _two_noun_phrases(caption, rng, lambda x, y: x.shape != y.shape)
  if not pair:
    return None
  a, b = (_get(caption, p) for p in pair)
  out = _set(caption, pair[0], dataclasses.replace(a, shape=b.shape))
  return _set(out, pair[1], dataclasses.replace(b, shape=a.shape))


def _add_att(caption, scene, rng):
  slots = [(a, k) for a in _noun_phrases(caption) for k in ontology.ATTRIBUTE_KINDS
           if _get(caption, a).attribute(k) is None]
  if not slots:
    return None
  address, kind = slots[int(rng.integers(len(slots)))]
  value = str(rng.choice(ontology.VALUES_OF_KIND[kind]))
  return _set(caption, address, _get(caption, address).with_attribute(kind, value))


_EDITS = {"replace_att": _replace_att, "replace_obj": _replace_obj,
          "replace_rel": _replace_rel, "swap_att": _swap_att, "swap_obj": _swap_obj,
          "add_att": _add_att}


# ------------------------------------------------------------------------ suites


def _edit_item(name, scene, focus, rng, is_focus) -> SuiteItem | None:
  for _ in range(_TRIES):
    caption = caption_about(scene, focus, rng, is_focus)
    edited = _EDITS[name](caption, scene, rng)
    if edited is not None and edited != caption and _false(edited, scene):
      return SuiteItem(scene.index, cap.realise(caption), (cap.realise(edited),))
  return None


def _attribute_swap(scene, focus, rng, is_focus) -> SuiteItem | None:
  objs = scene.objects
  for _ in range(_TRIES):
    others = [j for j in range(len(objs)) if j != focus]
    if not others:
      return None
    j = int(rng.choice(others))
    kind = "color" if rng.random() < 0.6 else str(rng.choice(["size", "texture"]))
    a0, a1 = objs[focus].attribute(kind), objs[j].attribute(kind)
    if a0 == a1:
      continue
    true_np = (cap.NounPhrase(objs[focus].shape, ((kind, a0),)),
               cap.NounPhrase(objs[j].shape, ((kind, a1),)))
    false_np = (true_np[0].with_attribute(kind, a1), true_np[1].with_attribute(kind, a0))
    if is_focus and kind != "color":  # the held-out pair must be what is tested
      true_np = tuple(n.with_attribute("color", o.color)
                      for n, o in zip(true_np, (objs[focus], objs[j])))
      false_np = tuple(n.with_attribute("color", o.color)
                       for n, o in zip(false_np, (objs[focus], objs[j])))
    if _false(false_np, scene):
      text = lambda nps: " and ".join(cap.realise_np(n, definite=True) for n in nps)
      return SuiteItem(scene.index, text(true_np), (text(false_np),),
                       attributes=(a0, a1))
  return None


def _relation_swap(scene, focus, rng, is_focus) -> SuiteItem | None:
  relations = [r for r in scene.true_relations() if focus in (r[0], r[2])]
  rng.shuffle(relations)
  for s, pred, o in relations[:_TRIES]:
    subj = cap.full_np(scene.objects[s])
    obj = cap.full_np(scene.objects[o])
    true_rel, false_rel = cap.Relation(subj, pred, obj), cap.Relation(obj, pred, subj)
    if _false((false_rel,), scene):
      return SuiteItem(
          scene.index, cap.realise_clause(true_rel, definite=True, copula=True),
          (cap.realise_clause(false_rel, definite=True, copula=True),),
          relation_name=pred)
  return None


def _order(scene, focus, rng, is_focus) -> SuiteItem | None:
  for _ in range(_TRIES):
    text = order_lib.clean_caption(cap.realise(caption_about(scene, focus, rng, is_focus), rng))
    options = order_lib.order_options(text, world_tag, rng)
    if all(o != options[0] for o in options[1:]):
      return SuiteItem(scene.index, options[0], tuple(options[1:]))
  return None


def _knowledge(scene, focus, rng, is_focus) -> SuiteItem | None:
  objs = scene.objects
  for _ in range(_TRIES):
    true_np = cap.knowledge_np(objs[focus], rng)
    false_np = _perturb_concept(true_np, rng)
    relations = [r for r in scene.true_relations() if r[0] == focus]
    if relations and rng.random() < 0.5:
      _, pred, o = relations[int(rng.integers(len(relations)))]
      other = cap.knowledge_np(objs[o], rng)
      true_c, false_c = (cap.Relation(true_np, pred, other),), (cap.Relation(false_np, pred, other),)
    else:
      true_c, false_c = (true_np,), (false_np,)
    if cap.caption_value(true_c, scene) == TRUE and _false(false_c, scene):
      return SuiteItem(scene.index, cap.realise(true_c, rng, prefix=False),
                       (cap.realise(false_c, rng, prefix=False),))
  return None


def _perturb_concept(np_: cap.NounPhrase, rng) -> cap.NounPhrase:
  """Change one knowledge concept of a noun phrase to another value of its kind."""
  concepts = dict(np_.concepts)
  options = list(concepts) + [k for k in np_.alias_kinds]
  kind = options[int(rng.integers(len(options)))]
  if kind == "family":
    concepts["family"] = "cool" if concepts["family"] == "warm" else "warm"
  elif kind == "form":
    concepts["form"] = "polygon" if concepts["form"] == "round" else "round"
  elif kind == "corners":
    counts = sorted({s.corners for s in ontology.SHAPES} - {int(concepts["corners"])})
    concepts["corners"] = str(rng.choice(counts))
  elif kind == "color":
    colors = [c.name for c in ontology.COLORS if c.name != np_.attribute("color")]
    return np_.with_attribute("color", str(rng.choice(colors)))
  else:
    shapes = [s.name for s in ontology.SHAPES if s.name != np_.shape]
    return dataclasses.replace(np_, shape=str(rng.choice(shapes)))
  return dataclasses.replace(np_, concepts=tuple(concepts.items()))


_MAKERS = {"attribute_swap": _attribute_swap, "relation_swap": _relation_swap,
           "order": _order, "knowledge": _knowledge,
           **{name: (lambda name: lambda *a: _edit_item(name, *a))(name) for name in _EDITS}}


def make_item(suite: str, scene: Scene, rng: np.random.Generator,
              focus: int | None = None) -> SuiteItem | None:
  """One item of ``suite`` for ``scene``, or None when the scene allows none.

  ``focus`` is the object the item must be about; by default a random one.
  """
  if not scene.objects:
    return None
  is_focus = focus is not None
  if focus is None:
    focus = int(rng.integers(len(scene.objects)))
  return _MAKERS[suite](scene, focus, rng, is_focus)
