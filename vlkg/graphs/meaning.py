"""What makes two scene graphs say the same thing, and when one is a negative.

Structure-CLIP (Huang et al., "Structure-CLIP: Towards Scene Graph Knowledge to
Enhance Multi-modal Structured Representations", AAAI 2024, semantic negative
sampling) and MosaiCLIP (Singh et al., "Coarse-to-Fine Contrastive Learning in
Image-Text-Graph Space for Improved Vision-Language Compositionality", EMNLP 2023,
negatives in graph space) both require that a negative never equals the positive. Equality here is stronger than
`SceneGraph.canonical`: synonyms map to one word, a relation and its converse
("left of" / "right of") are written one way, and the direction of a symmetric
relation does not count. A candidate is also refused when the positive implies it:
its clauses (object descriptions and relation facts, read existentially as the
world's captions are, see ``vlkg.data.world.captions.caption_value``) are all
clauses of the positive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vlkg.graphs.scene_graph import SceneGraph

# Relations whose subject and object can trade places without changing the meaning.
# Structure-CLIP (AAAI 2024) skips them when swapping; so do ARO's VG-Relation
# numbers. A default for English captions; pass your own set to override it.
SYMMETRIC_RELATIONS: frozenset[str] = frozenset({
    "next to", "near", "near to", "nearby", "beside", "by", "with", "close to",
    "across from", "opposite", "opposite to", "opposite of", "adjacent to",
    "alongside", "touching", "in contact with", "side by side with",
})

Synonyms = Mapping[str, Iterable[str]]


def _representatives(synonyms: Synonyms | None) -> dict[str, str]:
  """Word -> one word of its synonym class (the smallest), closed transitively.

  A union-find, so that a table that lists "big" -> {"large"} but not the reverse,
  or chains of synonyms, still puts every word of a class on one representative.
  """
  parent: dict[str, str] = {}

  def find(w: str) -> str:
    parent.setdefault(w, w)
    while parent[w] != w:
      parent[w] = parent[parent[w]]
      w = parent[w]
    return w

  for word, others in (synonyms or {}).items():
    for other in others:
      a, b = find(word), find(other)
      if a != b:
        # Rooting at the smaller word keeps each root the minimum of its class.
        parent[max(a, b)] = min(a, b)
  return {w: find(w) for w in list(parent)}


class Meaning:
  """What makes two graphs say the same thing: synonyms, converses, symmetry."""

  def __init__(self, synonyms: Synonyms | None, converse: Mapping[str, str] | None,
               symmetric: Iterable[str]):
    self._rep = _representatives(synonyms)
    conv = {self.word(k): self.word(v) for k, v in (converse or {}).items()}
    # Two-way, so that a table naming only "left of" -> "right of" still reads
    # "b right of a" as "a left of b".
    conv.update({v: k for k, v in conv.items() if v not in conv})
    self.converse = conv
    self.symmetric = frozenset(self.word(p) for p in symmetric)

  def word(self, w: str) -> str:
    return self._rep.get(w, w)

  def same(self, a: str, b: str) -> bool:
    return self.word(a) == self.word(b)

  def descriptions(self, g: SceneGraph) -> list[tuple[str, tuple[str, ...]]]:
    # A set of attributes: "a red red circle" says no more than "a red circle".
    return [(self.word(name), tuple(sorted({self.word(a) for a in g.attributes_of(i)})))
            for i, name in enumerate(g.objects)]

  def fact(self, ds: Any, p: str, do: Any) -> tuple:
    p = self.word(p)
    if p in self.symmetric:
      return (min(ds, do), p, max(ds, do))
    q = self.converse.get(p)
    if q is not None:
      return min((ds, p, do), (do, q, ds))
    return (ds, p, do)

  def key(self, g: SceneGraph) -> tuple:
    descs = self.descriptions(g)
    facts = [self.fact(descs[s], p, descs[o]) for s, p, o in g.relations]
    return (tuple(sorted(descs)), tuple(sorted(facts)))

  def is_negative(self, neg: SceneGraph, pos: SceneGraph) -> bool:
    if neg.canonical() == pos.canonical():
      return False
    kn, kp = self.key(neg), self.key(pos)
    if kn == kp:
      return False
    implied = set(kn[0]) <= set(kp[0]) and set(kn[1]) <= set(kp[1])
    return not implied


def graph_key(g: SceneGraph, *, synonyms: Synonyms | None = None,
              converse: Mapping[str, str] | None = None,
              symmetric: Iterable[str] = SYMMETRIC_RELATIONS) -> tuple:
  """A key equal for graphs that say the same thing (a negative must never equal
  the positive: Structure-CLIP, AAAI 2024).

  Extends `SceneGraph.canonical`: words are mapped to one word of their synonym
  class, an object's attributes are a set, a relation with a converse is written in
  one fixed direction, and a symmetric relation in one fixed order.

  Args:
    g: The graph.
    synonyms: Word -> its synonyms; None for none.
    converse: Relation -> its converse, e.g. ``ontology.CONVERSE``; None for none.
    symmetric: Relations whose direction does not matter.

  Returns:
    A hashable, comparable key.
  """
  return Meaning(synonyms, converse, symmetric).key(g)


def equivalent(a: SceneGraph, b: SceneGraph, **meaning: Any) -> bool:
  """Whether two graphs have the same `graph_key` (same keyword arguments)."""
  return graph_key(a, **meaning) == graph_key(b, **meaning)


def is_negative_of(neg: SceneGraph, pos: SceneGraph, *, synonyms: Synonyms | None = None,
                   converse: Mapping[str, str] | None = None,
                   symmetric: Iterable[str] = SYMMETRIC_RELATIONS) -> bool:
  """Whether ``neg`` is neither equivalent to nor implied by ``pos``.

  Implied means every object description and every relation fact of ``neg`` (after
  `graph_key`'s normalisation) is one of ``pos``: read existentially, ``neg`` is then
  true of every image of which ``pos`` is true.
  """
  return Meaning(synonyms, converse, symmetric).is_negative(neg, pos)



def synonym_sets(groups: Synonyms | Iterable[Iterable[str]]) -> dict[str, frozenset[str]]:
  """Normalises synonyms to word -> every other word of its (transitive) class.

  Args:
    groups: Either a mapping word -> synonyms, or an iterable of groups of words
      that mean the same (``[("large", "big"), ("small", "little", "tiny")]``).

  Returns:
    A dict with an entry for every word named.
  """
  if isinstance(groups, Mapping):
    table = groups
  else:
    table = {}
    for group in groups:
      group = list(group)
      for w in group:
        table.setdefault(w, set()).update(group)
  rep = _representatives(table)
  classes: dict[str, set[str]] = {}
  for w, r in rep.items():
    classes.setdefault(r, set()).add(w)
  return {w: frozenset(classes[r] - {w}) for w, r in rep.items()}

