"""Questions to the world's knowledge graph: what a word names, and what is known.

The graph (`vlkg.data.world.knowledge`) is the only place where knowledge-only
aliases meet the concepts they name. These functions read it, and only it: a
corrupted graph gives corrupted answers, which is what knowledge ablations want.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

import networkx as nx

from vlkg.data.world.knowledge import (
    ALIAS_OF, CONCEPT_KINDS, CONVERSE_OF, CONVEX, HAS, IS, IS_A, KINDS, NON_CONVEX,
    OPPOSITE_OF, POLYGON, ROUND_SHAPE, SYNONYM_OF, KnowledgeGraphError)


# Relations along which membership propagates: "red" is a "warm color" is a "color",
# "square" has "four corners", "square" is "convex".
_MEMBERSHIP_RELATIONS = frozenset({IS_A, HAS, IS})


def _kind(graph: nx.MultiDiGraph, node: str) -> str | None:
  if node not in graph:
    return None
  return graph.nodes[node].get("kind")


def _tails(graph: nx.MultiDiGraph, node: str, relation: str) -> list[str]:
  return sorted(t for _, t, d in graph.out_edges(node, data=True)
                if d.get("relation") == relation)


def _heads(graph: nx.MultiDiGraph, node: str, relation: str) -> list[str]:
  return sorted(h for h, _, d in graph.in_edges(node, data=True)
                if d.get("relation") == relation)


def resolve(graph: nx.MultiDiGraph, word: str) -> str | None:
  """The canonical concept that ``word`` names, or ``None``.

  A canonical concept resolves to itself; a training synonym or knowledge alias to
  its concept ("disc" -> "circle", "scarlet" -> "red", "to the left of" -> "left of").
  Matching is exact: the world's words are lowercase and are not normalised here.
  Category, family and corner nodes ("polygon", "warm color") are not concepts and
  give ``None``, as do unknown words.
  """
  kind = _kind(graph, word)
  if kind in CONCEPT_KINDS:
    return word
  if kind is None:
    return None
  targets = _tails(graph, word, SYNONYM_OF) + _tails(graph, word, ALIAS_OF)
  concepts = sorted({t for t in targets if _kind(graph, t) in CONCEPT_KINDS})
  if len(concepts) > 1:
    raise KnowledgeGraphError(f"word {word!r} names several concepts: {concepts}")
  return concepts[0] if concepts else None


def _require_concept(graph: nx.MultiDiGraph, canonical: str) -> str:
  kind = _kind(graph, canonical)
  if kind in CONCEPT_KINDS:
    return kind
  hint = ""
  target = resolve(graph, canonical) if canonical in graph else None
  if target is not None:
    hint = f"; it is a synonym/alias of {target!r} (use resolve() first)"
  raise KeyError(
      f"{canonical!r} is not a canonical concept of the knowledge graph{hint}")


def aliases(graph: nx.MultiDiGraph, canonical: str) -> tuple[str, ...]:
  """The knowledge-only aliases of a canonical concept, sorted ("red" -> ("scarlet",)).

  Raises:
    KeyError: if ``canonical`` is not a canonical concept in ``graph``.
  """
  _require_concept(graph, canonical)
  return tuple(_heads(graph, canonical, ALIAS_OF))


def synonyms(graph: nx.MultiDiGraph, canonical: str) -> tuple[str, ...]:
  """The training synonyms of a canonical concept, sorted ("circle" -> ("disc",)).

  Raises:
    KeyError: if ``canonical`` is not a canonical concept in ``graph``.
  """
  _require_concept(graph, canonical)
  return tuple(_heads(graph, canonical, SYNONYM_OF))


def _single(values: list[str], what: str, canonical: str) -> str | None:
  if len(values) > 1:
    raise KnowledgeGraphError(f"{canonical!r} has several {what}: {values}")
  return values[0] if values else None


def concepts_of(graph: nx.MultiDiGraph, canonical: str) -> dict:
  """What the graph knows about one canonical concept, as a small dict.

  Keys by kind (values read from ``graph``, so a corrupted graph gives corrupted
  answers, which is what knowledge ablations want):

    * color: ``family`` ("warm color" / "cool color"), ``aliases``;
    * shape: ``corners`` (e.g. "four corners"), ``round`` (is a "round shape"),
      ``polygon`` (is a "polygon"), ``convex`` (True / False / None if unstated),
      ``aliases``;
    * size: ``opposite`` (e.g. "large"), ``aliases``;
    * texture: ``aliases``;
    * relation: ``converse`` (e.g. "right of"), ``aliases``.

  For example ``concepts_of(g, "red") == {"family": "warm color", "aliases":
  ("scarlet",)}``.

  Raises:
    KeyError: if ``canonical`` is not a canonical concept in ``graph``.
  """
  kind = _require_concept(graph, canonical)
  is_a = _tails(graph, canonical, IS_A)
  out: dict = {}
  if kind == "color":
    families = [t for t in is_a if _kind(graph, t) == "family"]
    out["family"] = _single(families, "color families", canonical)
  elif kind == "shape":
    corners = [t for t in _tails(graph, canonical, HAS) if _kind(graph, t) == "corners"]
    out["corners"] = _single(corners, "corner counts", canonical)
    out["round"] = ROUND_SHAPE in is_a
    out["polygon"] = POLYGON in is_a
    convexity = [t for t in _tails(graph, canonical, IS) if t in (CONVEX, NON_CONVEX)]
    convexity_node = _single(convexity, "convexities", canonical)
    out["convex"] = None if convexity_node is None else convexity_node == CONVEX
  elif kind == "size":
    out["opposite"] = _single(
        _tails(graph, canonical, OPPOSITE_OF), "opposites", canonical)
  elif kind == "relation":
    out["converse"] = _single(
        _tails(graph, canonical, CONVERSE_OF), "converses", canonical)
  out["aliases"] = aliases(graph, canonical)
  return out


def members(graph: nx.MultiDiGraph, category: str) -> set[str]:
  """The canonical concepts that belong to ``category``.

  Membership follows "is a", "has" and "is" edges backwards, transitively through
  non-concept nodes: ``members(g, "warm color") == {"red", "orange", "yellow",
  "pink"}``, ``members(g, "color")`` is every color (directly and via the families),
  ``members(g, "four corners") == {"square", "diamond"}``, ``members(g, "convex")`` is
  every convex shape. A canonical concept has no members.

  Raises:
    KeyError: if ``category`` is not a node of ``graph``.
  """
  if category not in graph:
    raise KeyError(f"{category!r} is not a node of the knowledge graph")
  found: set[str] = set()
  seen = {category}
  queue = collections.deque([category])
  while queue:
    node = queue.popleft()
    for head, _, data in graph.in_edges(node, data=True):
      if data.get("relation") not in _MEMBERSHIP_RELATIONS or head in seen:
        continue
      seen.add(head)
      if _kind(graph, head) in CONCEPT_KINDS:
        found.add(head)  # concepts are leaves: nothing is a member of "red"
      else:
        queue.append(head)
  return found


def nodes_of_kind(graph: nx.MultiDiGraph, kinds: str | Iterable[str]) -> list[str]:
  """The nodes whose ``kind`` is one of ``kinds``, sorted."""
  wanted = {kinds} if isinstance(kinds, str) else set(kinds)
  unknown = wanted - set(KINDS)
  if unknown:
    raise ValueError(f"unknown node kinds {sorted(unknown)}; expected some of {KINDS}")
  return sorted(n for n, k in graph.nodes(data="kind") if k in wanted)
