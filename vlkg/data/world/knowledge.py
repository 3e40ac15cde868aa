"""The synthetic world's knowledge graph: what every word of the world means.

The graph is built from ``ontology`` alone, so it can never disagree with the sampler,
the renderer or the caption realiser. It is the only place where the knowledge-only
aliases (``ontology.Shape.aliases`` and ``ontology.Color.aliases``) are connected to
the concepts they name; a model can learn them only through this graph.

Nodes are strings. Each node has an attribute ``kind``:

  * ``"color"``, ``"shape"``, ``"size"``, ``"texture"``, ``"relation"``: the canonical
    concepts of the world ("red", "square", "small", "striped", "left of");
  * ``"category"``: the five base categories ("color", "shape", "size", "texture",
    "relation") and the shape classes "round shape", "polygon", "convex",
    "non-convex";
  * ``"family"``: the color families "warm color" and "cool color";
  * ``"corners"``: corner counts as captions say them ("no corners", "four corners",
    "twelve corners"); these nodes also carry ``count`` (an int);
  * ``"word"``: training synonyms and knowledge-only aliases ("disc", "scarlet").

Edges are directed ``head -> tail`` and carry ``relation`` (also used as the edge key,
so adding the same fact twice is a no-op). The relations are (``RELATIONS``):

  ==============  ==================================================================
  "is a"          concept -> base category ("red" is a "color"), color -> family
                  ("red" is a "warm color"), shape -> shape class ("circle" is a
                  "round shape", "square" is a "polygon"), and class -> base category
                  ("warm color" is a "color", "polygon" is a "shape").
  "has"           shape -> corner count ("square" has "four corners", "circle" has
                  "no corners").
  "is"            shape -> convexity ("square" is "convex", "star" is "non-convex").
                  Kept apart from "is a" because convexity is a property of the
                  outline, not a kind of shape that captions name.
  "synonym of"    training synonym -> canonical ("disc" synonym of "circle"; relation
                  phrases too: "to the left of" synonym of "left of").
  "alias of"      knowledge-only alias -> canonical ("scarlet" alias of "red").
  "opposite of"   symmetric, stored in both directions: "warm color" <-> "cool color",
                  "small" <-> "large", "convex" <-> "non-convex".
  "converse of"   symmetric, stored in both directions for every pair in
                  ``ontology.CONVERSE`` ("left of" <-> "right of").
  ==============  ==================================================================

Every shape with at least three corners is a "polygon", including the non-convex star
and cross; shapes with no corners are "round shape".

The graph round-trips through a header-less UTF-8 TSV of ``head<TAB>relation<TAB>tail``
lines (``write_triples_tsv`` / ``read_triples_tsv``); node kinds are re-derived on
reading, so the TSV stays a plain list of facts that other tools can consume. What the
graph says about a word (``resolve``, ``members``, ``concepts_of``, ...) is asked
through `vlkg.data.world.knowledge_queries`.
"""

from __future__ import annotations

from collections.abc import Collection
import functools
import os
import pathlib

import networkx as nx

from vlkg.data.world import ontology
from vlkg.files import atomic_write

IS_A = "is a"
HAS = "has"
IS = "is"
SYNONYM_OF = "synonym of"
ALIAS_OF = "alias of"
OPPOSITE_OF = "opposite of"
CONVERSE_OF = "converse of"
RELATIONS: tuple[str, ...] = (
    IS_A, HAS, IS, SYNONYM_OF, ALIAS_OF, OPPOSITE_OF, CONVERSE_OF)

CONCEPT_KINDS: tuple[str, ...] = ("color", "shape", "size", "texture", "relation")
KINDS: tuple[str, ...] = (*CONCEPT_KINDS, "category", "family", "corners", "word")

WARM_COLOR = "warm color"
COOL_COLOR = "cool color"
ROUND_SHAPE = "round shape"
POLYGON = "polygon"
CONVEX = "convex"
NON_CONVEX = "non-convex"
_FAMILY_NODE = {"warm": WARM_COLOR, "cool": COOL_COLOR}

# The ontology records corner counts but not convexity, and convexity cannot be
# derived from the count (a 10-corner star is not a decagon), so it is stated here.
# Every shape must be listed; ``build_knowledge_graph`` fails on a new shape that is
# not, rather than silently calling it convex.
_NON_CONVEX_SHAPES = frozenset({"star", "cross"})
_CONVEX_SHAPES = frozenset({
    "circle", "ellipse", "triangle", "square", "diamond", "pentagon", "hexagon"})

_NUMBER_WORDS = (
    "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty")


class KnowledgeGraphError(ValueError):
  """A malformed knowledge graph or triples file; the message says where."""


def number_word(n: int) -> str:
  """The word captions use for a count: 0 -> "no", 3 -> "three", 12 -> "twelve".

  Args:
    n: a count in [0, 20].

  Returns:
    The spelled-out number; zero is "no" so that "no corners" reads naturally.

  Raises:
    ValueError: if ``n`` is outside [0, 20] or not an int.
  """
  if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < len(_NUMBER_WORDS):
    raise ValueError(
        f"number_word needs an int in [0, {len(_NUMBER_WORDS) - 1}], got {n!r}")
  return _NUMBER_WORDS[n]


def corners_phrase(n: int) -> str:
  """The corner-count node for ``n`` corners, as captions say it ("four corners")."""
  return f"{number_word(n)} {'corner' if n == 1 else 'corners'}"


@functools.cache
def _corner_counts() -> dict[str, int]:
  return {corners_phrase(n): n for n in range(len(_NUMBER_WORDS))}


@functools.cache
def _ontology_kinds() -> dict[str, str]:
  """Node -> kind for every node the ontology implies.

  Used both when building and when reading a TSV, so a round trip gives the same
  kinds. Raises if one string would need two kinds, because then the graph could not
  tell the two meanings apart.
  """
  kinds: dict[str, str] = {}

  def put(node: str, kind: str) -> None:
    old = kinds.setdefault(node, kind)
    if old != kind:
      raise KnowledgeGraphError(
          f"world word {node!r} would be both a {old!r} node and a {kind!r} node; "
          "rename one of them in ontology.py")

  for shape in ontology.SHAPES:
    put(shape.name, "shape")
  for color in ontology.COLORS:
    put(color.name, "color")
  for size in ontology.SIZES:
    put(size, "size")
  for texture in ontology.TEXTURES:
    put(texture, "texture")
  for relation in ontology.RELATIONS:
    put(relation, "relation")
  for node in ("color", "shape", "size", "texture", "relation",
               ROUND_SHAPE, POLYGON, CONVEX, NON_CONVEX):
    put(node, "category")
  for node in (WARM_COLOR, COOL_COLOR):
    put(node, "family")
  for shape in ontology.SHAPES:
    put(corners_phrase(shape.corners), "corners")
  for canonical, forms in _synonyms_by_concept().items():
    for form in forms:
      put(form, "word")
  for canonical, forms in _aliases_by_concept().items():
    for form in forms:
      put(form, "word")
  return kinds


def _synonyms_by_concept() -> dict[str, tuple[str, ...]]:
  """Canonical concept -> its training synonyms (surface forms other than itself)."""
  out = {}
  for concept in (*ontology.SHAPE_BY_NAME, *ontology.COLOR_BY_NAME, *ontology.SIZES,
                  *ontology.TEXTURES, *ontology.RELATIONS):
    out[concept] = tuple(f for f in ontology.surface_forms(concept) if f != concept)
  return out


def _aliases_by_concept() -> dict[str, tuple[str, ...]]:
  out = {s.name: s.aliases for s in ontology.SHAPES}
  out.update({c.name: c.aliases for c in ontology.COLORS})
  return out


def _add_fact(graph: nx.MultiDiGraph, head: str, relation: str, tail: str) -> None:
  graph.add_edge(head, tail, key=relation, relation=relation)


def _set_node_kinds(graph: nx.MultiDiGraph) -> None:
  """Sets ``kind`` (and ``count`` for corner nodes) on every node of ``graph``.

  Nodes the ontology does not know (e.g. from a hand-edited TSV) get a kind from
  their edges: heads of "synonym of"/"alias of" are words, tails of "has" are corner
  counts, anything else is a category.
  """
  known = _ontology_kinds()
  counts = _corner_counts()
  for node in graph.nodes:
    kind = known.get(node)
    if kind is None:
      out_relations = {d["relation"] for _, _, d in graph.out_edges(node, data=True)}
      in_relations = {d["relation"] for _, _, d in graph.in_edges(node, data=True)}
      if out_relations & {SYNONYM_OF, ALIAS_OF}:
        kind = "word"
      elif HAS in in_relations:
        kind = "corners"
      else:
        kind = "category"
    graph.nodes[node]["kind"] = kind
    if kind == "corners" and node in counts:
      graph.nodes[node]["count"] = counts[node]


def build_knowledge_graph() -> nx.MultiDiGraph:
  """Builds the world's knowledge graph from ``ontology``.

  Returns:
    A fresh ``nx.MultiDiGraph``; see the module docstring for nodes, kinds and
    relations. Callers may mutate it (e.g. to corrupt facts for an ablation).

  Raises:
    KnowledgeGraphError: if the ontology makes one word mean two kinds of thing, or
      a shape has no convexity entry here.
  """
  graph = nx.MultiDiGraph()

  for category in CONCEPT_KINDS:
    graph.add_node(category)
  for family_node in (WARM_COLOR, COOL_COLOR):
    _add_fact(graph, family_node, IS_A, "color")
  _add_fact(graph, WARM_COLOR, OPPOSITE_OF, COOL_COLOR)
  _add_fact(graph, COOL_COLOR, OPPOSITE_OF, WARM_COLOR)
  for shape_class in (ROUND_SHAPE, POLYGON):
    _add_fact(graph, shape_class, IS_A, "shape")
  _add_fact(graph, CONVEX, OPPOSITE_OF, NON_CONVEX)
  _add_fact(graph, NON_CONVEX, OPPOSITE_OF, CONVEX)

  for color in ontology.COLORS:
    if color.family not in _FAMILY_NODE:
      raise KnowledgeGraphError(
          f"color {color.name!r} has family {color.family!r}; expected one of "
          f"{sorted(_FAMILY_NODE)}")
    _add_fact(graph, color.name, IS_A, "color")
    _add_fact(graph, color.name, IS_A, _FAMILY_NODE[color.family])

  for shape in ontology.SHAPES:
    _add_fact(graph, shape.name, IS_A, "shape")
    _add_fact(graph, shape.name, HAS, corners_phrase(shape.corners))
    if shape.is_round:
      _add_fact(graph, shape.name, IS_A, ROUND_SHAPE)
    elif shape.corners >= 3:
      _add_fact(graph, shape.name, IS_A, POLYGON)
    if shape.name in _NON_CONVEX_SHAPES:
      _add_fact(graph, shape.name, IS, NON_CONVEX)
    elif shape.name in _CONVEX_SHAPES:
      _add_fact(graph, shape.name, IS, CONVEX)
    else:
      raise KnowledgeGraphError(
          f"shape {shape.name!r} has no convexity; add it to _CONVEX_SHAPES or "
          "_NON_CONVEX_SHAPES in vlkg/data/world/knowledge.py")

  for size in ontology.SIZES:
    _add_fact(graph, size, IS_A, "size")
  # The ontology orders sizes small -> large; two sizes are each other's opposite.
  if len(ontology.SIZES) == 2:
    small, large = ontology.SIZES
    _add_fact(graph, small, OPPOSITE_OF, large)
    _add_fact(graph, large, OPPOSITE_OF, small)

  for texture in ontology.TEXTURES:
    _add_fact(graph, texture, IS_A, "texture")

  for relation in ontology.RELATIONS:
    _add_fact(graph, relation, IS_A, "relation")
  for relation, converse in ontology.CONVERSE.items():
    _add_fact(graph, relation, CONVERSE_OF, converse)
    _add_fact(graph, converse, CONVERSE_OF, relation)

  for canonical, forms in _synonyms_by_concept().items():
    for form in forms:
      _add_fact(graph, form, SYNONYM_OF, canonical)
  for canonical, forms in _aliases_by_concept().items():
    for form in forms:
      _add_fact(graph, form, ALIAS_OF, canonical)

  _set_node_kinds(graph)
  return graph


def _relation_of(head: str, tail: str, key: object, data: dict) -> str:
  relation = data.get("relation", key if isinstance(key, str) else None)
  if not isinstance(relation, str):
    raise KnowledgeGraphError(
        f"edge {head!r} -> {tail!r} (key {key!r}) has no 'relation' attribute")
  return relation


def triples(graph: nx.MultiDiGraph) -> list[tuple[str, str, str]]:
  """All distinct ``(head, relation, tail)`` facts of ``graph``, sorted.

  Raises:
    KnowledgeGraphError: if an edge has no string ``relation`` (nor a string key).
  """
  facts = {
      (head, _relation_of(head, tail, key, data), tail)
      for head, tail, key, data in graph.edges(keys=True, data=True)}
  return sorted(facts)


def _check_field(value: object, what: str, where: str) -> str:
  if not isinstance(value, str) or not value or value != value.strip():
    raise KnowledgeGraphError(
        f"{where}: {what} {value!r} is empty or not a trimmed string")
  if any(ch in value for ch in "\t\n\r"):
    raise KnowledgeGraphError(f"{where}: {what} {value!r} contains a tab or newline")
  return value


def write_triples_tsv(graph: nx.MultiDiGraph, path: str | os.PathLike[str]) -> None:
  """Writes ``triples(graph)`` as header-less UTF-8 ``head\\trelation\\ttail`` lines.

  The file is written to a temporary name and renamed into place, so a reader never
  sees half a file. Parent directories are created.

  Raises:
    KnowledgeGraphError: if a field is empty, padded with whitespace, or contains a
      tab or newline (it could not be read back).
  """
  path = pathlib.Path(path)
  lines = []
  for head, relation, tail in triples(graph):
    where = f"writing {path}"
    _check_field(head, "head", where)
    _check_field(relation, "relation", where)
    _check_field(tail, "tail", where)
    lines.append(f"{head}\t{relation}\t{tail}\n")
  atomic_write(path, "".join(lines))


def read_triples_tsv(
    path: str | os.PathLike[str],
    known_relations: Collection[str] | None = RELATIONS,
) -> nx.MultiDiGraph:
  """Reads a triples TSV written by ``write_triples_tsv`` (or by hand).

  Args:
    path: the TSV file.
    known_relations: relations a line may use; an unknown one is an error, because it
      is far more often a typo ("is_a") than a new relation. ``None`` accepts any.

  Returns:
    A ``nx.MultiDiGraph`` with the same edges and node kinds as the graph that was
    written (kinds are re-derived, see ``_set_node_kinds``).

  Raises:
    FileNotFoundError: if ``path`` does not exist.
    KnowledgeGraphError: naming the file and 1-based line number of the first line
      that does not have exactly three non-empty, trimmed, tab-separated fields, or
      that uses an unknown relation.
  """
  path = pathlib.Path(path)
  graph = nx.MultiDiGraph()
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      where = f"{path}:{lineno}"
      fields = line.rstrip("\n").split("\t")
      if len(fields) != 3:
        raise KnowledgeGraphError(
            f"{where}: expected 3 tab-separated fields (head, relation, tail), got "
            f"{len(fields)}: {line.rstrip(chr(10))!r}")
      head, relation, tail = (
          _check_field(value, name, where)
          for value, name in zip(fields, ("head", "relation", "tail")))
      if known_relations is not None and relation not in known_relations:
        raise KnowledgeGraphError(
            f"{where}: unknown relation {relation!r}; expected one of "
            f"{sorted(known_relations)}")
      _add_fact(graph, head, relation, tail)
  _set_node_kinds(graph)
  return graph
