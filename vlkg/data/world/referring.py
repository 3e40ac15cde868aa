"""Referring expressions: words that pick out exactly one object of a world scene.

The knowledge suites ask about one object ("how many corners does *the red shape*
have?", "is *the shape left of the star* a warm color?"), so its description must
name it alone, and must not say what the question asks (a question about corners
must not name the shape). Descriptions use the canonical words of the world's
realiser (`vlkg.data.world.captions`), as the other suites do.
"""

from __future__ import annotations

import numpy as np

from vlkg.data.world import captions as cap
from vlkg.data.world.scene import AMBIGUOUS, TRUE, Scene

# Attribute kinds tried after the main one, fewest words first.
_EXTRA_KINDS = ((), ("size",), ("texture",), ("size", "texture"))


def matching(scene: Scene, np_: cap.NounPhrase) -> list[int]:
  """The objects ``np_`` is true of."""
  return [k for k, o in enumerate(scene.objects) if np_.matches(o)]


def unique_np(scene: Scene, i: int, hide: str | None) -> cap.NounPhrase | None:
  """The shortest noun phrase that is true of object ``i`` alone.

  Args:
    scene: The scene.
    i: The object.
    hide: ``"shape"`` (say its color, the noun is "shape"), ``"color"`` (say its
      shape, no color), or None (shape, then color and shape).

  Returns:
    The phrase, or None when the allowed words cannot single ``i`` out.
  """
  obj = scene.objects[i]
  if hide == "shape":
    heads = [(None, ("color",))]
  elif hide == "color":
    heads = [(obj.shape, ())]
  else:
    heads = [(obj.shape, ()), (obj.shape, ("color",))]
  for shape, kinds in heads:
    for extra in _EXTRA_KINDS:
      used = set(kinds) | set(extra)
      attrs = tuple((k, obj.attribute(k)) for k in cap.ATTRIBUTE_ORDER if k in used)
      np_ = cap.NounPhrase(shape, attrs)
      if matching(scene, np_) == [i]:
        return np_
  return None


def relational(scene: Scene, i: int, rng: np.random.Generator) -> str | None:
  """"the shape <relation> <other>": object ``i`` named only through a clear
  relation to an object that is named alone, or None.

  The relation must hold (TRUE) for ``i`` and clearly fail for every other object,
  so that no object is even ambiguously described.
  """
  options = []
  for s, pred, j in scene.true_relations():
    if s != i:
      continue
    others = [scene.relation_value(k, pred, j) for k in range(len(scene.objects))
              if k not in (i, j)]
    if TRUE in others or AMBIGUOUS in others:
      continue
    other = unique_np(scene, j, None)
    if other is not None:
      options.append(f"the shape {pred} {cap.realise_np(other, definite=True)}")
  return str(options[int(rng.integers(len(options)))]) if options else None


def describe(scene: Scene, i: int, hide: str, rng: np.random.Generator,
             p_relational: float = 0.4) -> str | None:
  """A definite description of object ``i`` alone that does not say ``hide``:
  by a relation with probability ``p_relational`` when one exists, else by its
  attributes ("the large red shape"); None if neither singles it out."""
  by_relation = relational(scene, i, rng) if rng.random() < p_relational else None
  if by_relation is not None:
    return by_relation
  np_ = unique_np(scene, i, hide)
  if np_ is not None:
    return cap.realise_np(np_, definite=True)
  return relational(scene, i, rng)
