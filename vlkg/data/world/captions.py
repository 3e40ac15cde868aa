"""Captions of the synthetic world: logical forms, their truth, and their realisation.

A caption is first built as a *logical form* (a tuple of clauses, each a noun phrase
or a relation between two noun phrases) and only then realised as text with
templates and synonyms. Keeping the logical form lets every caption and every false
caption be checked against the scene graph (``caption_value``), so "every caption is
true of its image" is a tested property, not a hope.

Truth is existential and three-valued, like the scene's relations: a noun phrase is
true if some object matches it; a relation is TRUE if some pair of distinct matching
objects satisfies it clearly, FALSE if every matching pair clearly violates it, and
AMBIGUOUS otherwise. A caption is the conjunction of its clauses.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Union

import numpy as np

from vlkg.data.world import ontology
from vlkg.data.world.scene import (AMBIGUOUS, FALSE, RELATION_MARGIN, TRUE, Scene,
                                   WorldObject)

ATTRIBUTE_ORDER = ("size", "color", "texture")  # English adjective order
PREFIXES = ("", "", "there is ", "a picture of ", "an image of ")
CORNER_WORDS = {0: "no", 3: "three", 4: "four", 5: "five", 6: "six", 10: "ten",
                12: "twelve"}


@dataclasses.dataclass(frozen=True)
class NounPhrase:
  """An object description.

  ``shape`` is a canonical shape, or None for the generic noun "shape". ``attributes``
  are (kind, canonical value) pairs. ``concepts`` are knowledge-graph constraints:
  ("family", "warm"|"cool"), ("corners", "4"), ("form", "round"|"polygon").
  ``alias_kinds`` names the kinds ("color", "shape") said through a knowledge alias.
  """
  shape: str | None
  attributes: tuple[tuple[str, str], ...] = ()
  concepts: tuple[tuple[str, str], ...] = ()
  alias_kinds: tuple[str, ...] = ()

  def attribute(self, kind: str) -> str | None:
    return dict(self.attributes).get(kind)

  def with_attribute(self, kind: str, value: str | None) -> "NounPhrase":
    attrs = {k: v for k, v in self.attributes if k != kind}
    if value is not None:
      attrs[kind] = value
    return dataclasses.replace(
        self, attributes=tuple((k, attrs[k]) for k in ATTRIBUTE_ORDER if k in attrs))

  def matches(self, obj: WorldObject) -> bool:
    if self.shape is not None and obj.shape != self.shape:
      return False
    if any(obj.attribute(k) != v for k, v in self.attributes):
      return False
    return all(_concept_holds(obj, k, v) for k, v in self.concepts)


@dataclasses.dataclass(frozen=True)
class Relation:
  subject: NounPhrase
  predicate: str
  object: NounPhrase


Clause = Union[NounPhrase, Relation]
Caption = tuple[Clause, ...]


def _concept_holds(obj: WorldObject, kind: str, value: str) -> bool:
  if kind == "family":
    return ontology.COLOR_BY_NAME[obj.color].family == value
  corners = ontology.SHAPE_BY_NAME[obj.shape].corners
  if kind == "corners":
    return corners == int(value)
  if kind == "form":
    return (corners == 0) == (value == "round")
  raise ValueError(f"unknown knowledge concept {kind!r}")


# --------------------------------------------------------------------------- truth


def clause_value(clause: Clause, scene: Scene) -> int:
  objs = scene.objects
  if isinstance(clause, NounPhrase):
    return TRUE if any(clause.matches(o) for o in objs) else FALSE
  values = [scene.relation_value(i, clause.predicate, j)
            for i, a in enumerate(objs) if clause.subject.matches(a)
            for j, b in enumerate(objs) if j != i and clause.object.matches(b)]
  if TRUE in values:
    return TRUE
  return AMBIGUOUS if AMBIGUOUS in values else FALSE


def caption_value(caption: Caption, scene: Scene) -> int:
  """TRUE if every clause is TRUE; FALSE if some clause is FALSE; else AMBIGUOUS."""
  values = [clause_value(c, scene) for c in caption]
  if FALSE in values:
    return FALSE
  return AMBIGUOUS if AMBIGUOUS in values else TRUE


# ------------------------------------------------------------------- realisation


def _pick(rng: np.random.Generator | None, options):
  return options[0] if rng is None else options[int(rng.integers(len(options)))]


def article(next_word: str) -> str:
  return "an" if next_word[0] in "aeiou" else "a"


def realise_np(np_: NounPhrase, rng=None, definite: bool = False) -> str:
  """Text for a noun phrase; ``rng=None`` gives the canonical wording."""
  words = []
  for kind in ATTRIBUTE_ORDER:
    value = np_.attribute(kind)
    if value is None:
      continue
    if kind == "color" and "color" in np_.alias_kinds:
      words.append(_pick(rng, ontology.COLOR_BY_NAME[value].aliases))
    else:
      words.append(_pick(rng, ontology.surface_forms(value)))
  concepts = dict(np_.concepts)
  if "family" in concepts:
    words.insert(0, f"{concepts['family']}-colored")
  if "form" in concepts:
    words.insert(0, "round" if concepts["form"] == "round" else "polygonal")
  if np_.shape is None:
    words.append("shape")
  elif "shape" in np_.alias_kinds:
    words.append(_pick(rng, ontology.SHAPE_BY_NAME[np_.shape].aliases))
  else:
    words.append(_pick(rng, ontology.surface_forms(np_.shape)))
  if "corners" in concepts:
    n = int(concepts["corners"])
    words += ["with", CORNER_WORDS[n], "corner" if n == 1 else "corners"]
  text = " ".join(words)
  return f"the {text}" if definite else f"{article(text)} {text}"


def realise_clause(clause: Clause, rng=None, definite: bool = False,
                   copula: bool = False) -> str:
  if isinstance(clause, NounPhrase):
    return realise_np(clause, rng, definite)
  subject = realise_np(clause.subject, rng, definite)
  rel = _pick(rng, ontology.surface_forms(clause.predicate))
  is_ = "is " if copula else ""
  return f"{subject} {is_}{rel} {realise_np(clause.object, rng, definite)}"


def realise(caption: Caption, rng=None, prefix: bool = True) -> str:
  """Clauses joined by commas and a final "and", with an optional lead-in."""
  parts = [realise_clause(c, rng) for c in caption]
  text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
  lead = _pick(rng, PREFIXES) if (prefix and rng is not None) else ""
  return lead + text


# --------------------------------------------------------------------- sampling


def describe(obj: WorldObject, rng: np.random.Generator, p_size=0.5,
             p_texture=0.5, p_color=0.9) -> NounPhrase:
  """A noun phrase that is true of ``obj``; color is said with probability
  ``p_color`` (most of the time by default), size and texture less often, and
  "solid", the texture English seldom says, at a quarter of ``p_texture``. Each
  chance is drawn whatever its value, so changing one leaves the other draws of
  ``rng`` where they were."""
  attrs = []
  if rng.random() < p_size:
    attrs.append(("size", obj.size))
  if rng.random() < p_color:
    attrs.append(("color", obj.color))
  if rng.random() < (p_texture if obj.texture != "solid" else p_texture / 4):
    attrs.append(("texture", obj.texture))
  return NounPhrase(obj.shape, tuple(attrs))


# Where an object is in the image (`position_phrase`), by the halves its centre lies
# in: both, one, or neither (the centre within the relations' margin of the middle).
POSITION_PHRASES = {
    "corner": ("at the {v} {h}", "in the {v} {h} corner"),
    "side": ("on the {h}", "on the {h} side"),
    "edge": ("at the {v}", "near the {v}"),
    "middle": ("in the middle", "in the centre"),
}


def position_phrase(obj: WorldObject, image_size: int, rng=None) -> str:
  """Where ``obj`` is: "at the top left", "on the right", "at the bottom", "in the
  middle". A half is named when the centre lies more than the relations' margin
  (``RELATION_MARGIN`` of the image side) beyond the middle line, so no phrase is
  borderline; ``rng=None`` gives the first wording."""
  margin, middle = RELATION_MARGIN * image_size, image_size / 2
  side = lambda c, low, high: (low if c < middle - margin else
                               high if c > middle + margin else None)
  h, v = side(obj.cx, "left", "right"), side(obj.cy, "top", "bottom")
  kind = ("corner" if h and v else "side" if h else "edge" if v else "middle")
  return _pick(rng, POSITION_PHRASES[kind]).format(h=h, v=v)


def full_np(obj: WorldObject, kinds=("color",)) -> NounPhrase:
  return NounPhrase(obj.shape, tuple((k, obj.attribute(k)) for k in ATTRIBUTE_ORDER
                                     if k in kinds))


def sample_caption(scene: Scene, rng: np.random.Generator, max_clauses: int = 3,
                   p_color: float = 0.9, p_size: float = 0.5,
                   p_texture: float = 0.5) -> Caption:
  """A true caption: one object, two objects and a relation, or several clauses.

  ``p_color``, ``p_size`` and ``p_texture`` are the chances that a noun phrase
  names its object's color, size and texture (`describe`).
  """
  describe_ = functools.partial(describe, p_size=p_size, p_texture=p_texture,
                                p_color=p_color)
  objs = scene.objects
  relations = scene.true_relations()
  kind = rng.choice(["object", "relation", "clauses"], p=[0.3, 0.4, 0.3])
  if kind == "relation" and relations:
    return (_relation_clause(scene, relations[int(rng.integers(len(relations)))], rng,
                             describe_),)
  if kind == "clauses" and len(objs) > 1:
    order = rng.permutation(len(objs))
    clauses, used = [], set()
    for i in order:
      if len(clauses) == max_clauses or i in used:
        continue
      partners = [r for r in relations if r[0] == i and r[2] not in used]
      if partners and rng.random() < 0.5:
        r = partners[int(rng.integers(len(partners)))]
        clauses.append(_relation_clause(scene, r, rng, describe_))
        used.update((r[0], r[2]))
      else:
        clauses.append(describe_(objs[i], rng))
        used.add(i)
    return tuple(clauses)
  return (describe_(objs[int(rng.integers(len(objs)))], rng),)


def _relation_clause(scene, relation, rng, describe_=describe) -> Relation:
  i, pred, j = relation
  return Relation(describe_(scene.objects[i], rng), pred, describe_(scene.objects[j], rng))


def sample_captions(scene: Scene, rng: np.random.Generator, k: int,
                    max_clauses: int = 3, p_color: float = 0.9, p_size: float = 0.5,
                    p_texture: float = 0.5) -> list[str]:
  """``k`` distinct true captions of the scene (fewer only if the scene is tiny)."""
  out: list[str] = []
  for _ in range(8 * k):
    text = realise(sample_caption(scene, rng, max_clauses, p_color, p_size, p_texture),
                   rng)
    if text not in out:
      out.append(text)
    if len(out) == k:
      break
  while len(out) < k:  # a one-object scene may have few distinct wordings
    out.append(out[len(out) % max(1, len(out))])
  return out


def knowledge_np(obj: WorldObject, rng: np.random.Generator) -> NounPhrase:
  """A true description of ``obj`` that names it only through knowledge-graph concepts.

  Color is said by family ("warm-colored") or by an alias ("scarlet"); shape by its
  corners ("with four corners"), its form ("round") or an alias ("quadrate").
  """
  color_way = rng.choice(["family", "alias"])
  shape_way = rng.choice(["corners", "form", "alias"])
  shape = ontology.SHAPE_BY_NAME[obj.shape]
  color = ontology.COLOR_BY_NAME[obj.color]
  attrs, concepts, alias_kinds = [], [], []
  if color_way == "family":
    concepts.append(("family", color.family))
  else:
    attrs.append(("color", obj.color))
    alias_kinds.append("color")
  np_shape = None
  if shape_way == "corners":
    concepts.append(("corners", str(shape.corners)))
  elif shape_way == "form":
    concepts.append(("form", "round" if shape.is_round else "polygon"))
  else:
    np_shape = obj.shape
    alias_kinds.append("shape")
  return NounPhrase(np_shape, tuple(attrs), tuple(concepts), tuple(alias_kinds))
