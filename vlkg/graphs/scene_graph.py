"""The scene graph of a caption or an image: objects, their attributes, relations.

This is the shared structure behind Structure-CLIP's negatives and triple encoder
(Structure-CLIP, Huang et al., AAAI 2024), MosaiCLIP's decomposition (Singh et al., EMNLP 2023) and LOUPE's phrases (Li et al.,
NeurIPS 2022).

JSON form (the ``vlkg.tools.parse`` contract)::

    {"objects": ["man", "horse"],
     "attributes": [[0, "tall"], [1, "brown"]],
     "relations": [[0, "riding", 1]]}

``triples()`` gives (head, relation, tail) strings; an attribute is written as
``(object, "is", attribute)``, as Structure-CLIP's knowledge-enhanced encoder reads it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import networkx as nx


@dataclasses.dataclass(frozen=True)
class SceneGraph:
  objects: tuple[str, ...] = ()
  attributes: tuple[tuple[int, str], ...] = ()  # (object index, attribute)
  relations: tuple[tuple[int, str, int], ...] = ()  # (subject index, predicate, object index)

  def __post_init__(self):
    n = len(self.objects)
    for i, _ in self.attributes:
      if not 0 <= i < n:
        raise ValueError(f"attribute on object {i}, but the graph has {n} objects")
    for s, _, o in self.relations:
      if not (0 <= s < n and 0 <= o < n):
        raise ValueError(f"relation ({s}, {o}) out of range for {n} objects")

  # ---------------------------------------------------------------- views

  def attributes_of(self, i: int) -> tuple[str, ...]:
    return tuple(a for j, a in self.attributes if j == i)

  def triples(self) -> list[tuple[str, str, str]]:
    """Attribute triples (object, "is", attribute) first, then relations."""
    out = [(self.objects[i], "is", a) for i, a in self.attributes]
    out += [(self.objects[s], p, self.objects[o]) for s, p, o in self.relations]
    return out

  def is_empty(self) -> bool:
    return not self.objects

  def canonical(self) -> tuple:
    """A key that is equal for graphs that differ only in object order.

    Objects are described by (name, sorted attributes); relations by the described
    subject and object. Two graphs with equal keys say the same thing.
    """
    desc = [(name, tuple(sorted(self.attributes_of(i)))) for i, name in enumerate(self.objects)]
    rels = sorted((desc[s], p, desc[o]) for s, p, o in self.relations)
    return (tuple(sorted(desc)), tuple(rels))

  # ---------------------------------------------------------- conversions

  def to_json(self) -> dict[str, Any]:
    return {"objects": list(self.objects),
            "attributes": [[i, a] for i, a in self.attributes],
            "relations": [[s, p, o] for s, p, o in self.relations]}

  @classmethod
  def from_json(cls, data: dict[str, Any] | str) -> "SceneGraph":
    if isinstance(data, str):
      data = json.loads(data)
    for key in ("objects", "attributes", "relations"):
      if key not in data:
        raise ValueError(f"scene graph JSON is missing field {key!r}")
    return cls(tuple(data["objects"]),
               tuple((int(i), str(a)) for i, a in data["attributes"]),
               tuple((int(s), str(p), int(o)) for s, p, o in data["relations"]))

  def to_networkx(self) -> nx.MultiDiGraph:
    g = nx.MultiDiGraph()
    for i, name in enumerate(self.objects):
      g.add_node(i, name=name, attributes=list(self.attributes_of(i)))
    for s, p, o in self.relations:
      g.add_edge(s, o, predicate=p)
    return g

  @classmethod
  def from_networkx(cls, g: nx.MultiDiGraph) -> "SceneGraph":
    order = sorted(g.nodes)
    index = {n: k for k, n in enumerate(order)}
    objects = tuple(g.nodes[n]["name"] for n in order)
    attributes = tuple((index[n], a) for n in order for a in g.nodes[n].get("attributes", ()))
    relations = tuple((index[s], d["predicate"], index[o]) for s, o, d in g.edges(data=True))
    return cls(objects, attributes, relations)
