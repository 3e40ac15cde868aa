"""The world's entity-linking items: mentions in a caption, linked to graph nodes.

Multimodal entity linking (WikiDiverse, Wang et al., ACL 2022) maps a mention in an
image's caption to its entity in a knowledge base; the image is needed when the text
leaves several entities open. Here a caption names one object through knowledge
concepts, as the ``knowledge`` suite's captions do, and each concept word is a
mention of a node of the world's knowledge graph (`vlkg.data.world.knowledge`):

* a color mention, "warm-colored" (the graph: four warm colors; the image tells
  which) or an alias, "scarlet" (the graph alone: red), links to the object's color;
* a shape mention, "shape with four corners" (square or diamond), "round shape"
  (circle or ellipse), "polygonal shape" (seven shapes) or an alias, "quadrate"
  (square), links to the object's shape.

Ways are drawn per mention: an alias 10% of the time (`P_ALIAS`), else the concept:
the color family; for the shape, its corner count when another shape shares it
(half the time) or else its round/polygon class. So the words leave several
entities open (2 to 7) for nine mentions in ten.

The whole description is true of that object alone, so image and graph together
always decide. Each mention has ten candidates, hard ones first: the nodes of its
kind that share the gold's color family, or its corner count when another shape
shares it, else its round/polygon class (so the gold is never alone in the first
group and the first candidate is right no more often than a guess among the nodes
the words leave open), shuffled, then the other nodes of its kind, then category
nodes ("warm color", "polygon"). No mention is NIL. The entity
descriptions (`kb_descriptions`) are the graph's facts about each node in words.
"""

from __future__ import annotations

from typing import NamedTuple

import networkx as nx
import numpy as np

from vlkg.data.world import captions as cap
from vlkg.data.world import knowledge_queries as kq
from vlkg.data.world import ontology, referring
from vlkg.data.world.knowledge import (COOL_COLOR, POLYGON, ROUND_SHAPE, WARM_COLOR)
from vlkg.data.world.scene import Scene

NUM_CANDIDATES = 10
# Share of mentions said by a knowledge-only alias: the words alone then name the
# entity, so a text prior learns them; kept low so that the image must decide.
P_ALIAS = 0.1
_TRIES = 12


class LinkedMention(NamedTuple):
  """A mention of ``caption[start:end]``, its gold node and candidate nodes."""

  mention: str
  type: str
  start: int
  end: int
  entity: str
  candidates: tuple[str, ...]


def _color_part(obj, graph, rng) -> tuple[str, tuple, tuple, set[str]]:
  """(word, attributes, concepts, nodes the graph leaves open) of the color."""
  family = kq.concepts_of(graph, obj.color)["family"]
  aliases = kq.aliases(graph, obj.color)
  if aliases and rng.random() < P_ALIAS:
    return str(aliases[int(rng.integers(len(aliases)))]), (("color", obj.color),), (), {
        obj.color}
  word = family.split()[0]  # "warm color" -> "warm"
  return f"{word}-colored", (), (("family", word),), kq.members(graph, family)


def _shape_part(obj, graph, rng) -> tuple[str, str | None, tuple, set[str]]:
  """(words, shape said, concepts, nodes the graph leaves open) of the shape."""
  facts = kq.concepts_of(graph, obj.shape)
  aliases = kq.aliases(graph, obj.shape)
  way = rng.random()
  if aliases and way < P_ALIAS:
    return str(aliases[int(rng.integers(len(aliases)))]), obj.shape, (), {obj.shape}
  same_corners = kq.members(graph, facts["corners"])
  if way < (1 + P_ALIAS) / 2 and len(same_corners) > 1:
    n = int(graph.nodes[facts["corners"]]["count"])
    return (f"shape with {cap.CORNER_WORDS[n]} {'corner' if n == 1 else 'corners'}",
            None, (("corners", str(n)),), same_corners)
  form = "round" if facts["round"] else "polygon"
  node = ROUND_SHAPE if facts["round"] else POLYGON
  return (f"{'round' if facts['round'] else 'polygonal'} shape", None,
          (("form", form),), kq.members(graph, node))


def _candidates(gold: str, hard: set[str], kind: list[str], extra: list[str],
                rng) -> tuple[str, ...]:
  """Hard nodes (the gold among them), then the rest of its kind, then ``extra``,
  each group shuffled, cut to `NUM_CANDIDATES`."""
  out: list[str] = []
  for group in (sorted(hard | {gold}), sorted(set(kind) - hard - {gold}), extra):
    group = list(group)
    rng.shuffle(group)
    out += [g for g in group if g not in out]
  return tuple(out[:NUM_CANDIDATES])


def _class_peers(graph, shape: str) -> set[str]:
  return kq.members(graph, ROUND_SHAPE if kq.concepts_of(graph, shape)["round"]
                    else POLYGON)


def make_item(scene: Scene, graph: nx.MultiDiGraph, rng: np.random.Generator
              ) -> tuple[str, list[LinkedMention]] | None:
  """A caption of ``scene`` with a color mention and a shape mention, or None."""
  if not scene.objects:
    return None
  colors = [c.name for c in ontology.COLORS]
  shapes = [s.name for s in ontology.SHAPES]
  for _ in range(_TRIES):
    i = int(rng.integers(len(scene.objects)))
    obj = scene.objects[i]
    color_word, attrs, color_concepts, color_open = _color_part(obj, graph, rng)
    shape_words, shape, shape_concepts, shape_open = _shape_part(obj, graph, rng)
    alias_kinds = tuple(k for k, said in (("color", attrs), ("shape", shape)) if said)
    np_ = cap.NounPhrase(shape, attrs, color_concepts + shape_concepts, alias_kinds)
    size = ""
    if referring.matching(scene, np_) != [i]:
      np_ = np_.with_attribute("size", obj.size)
      size = f"{obj.size} "
      if referring.matching(scene, np_) != [i]:
        continue
    lead = f"the {size}"
    text = f"{lead}{color_word} {shape_words}"
    relation = referring.relational(scene, i, rng) if rng.random() < 0.6 else None
    if relation is not None:  # "the shape left of the star" -> "... is left of the star"
      caption = f"{text} is {relation.removeprefix('the shape ')}"
    else:
      caption = f"a picture of {text}"
    offset = caption.index(text) + len(lead)
    shape_start = offset + len(color_word) + 1
    peers = _class_peers(graph, obj.shape)
    mentions = [
        LinkedMention(color_word, "color", offset, offset + len(color_word), obj.color,
                      _candidates(obj.color, color_open | kq.members(
                          graph, kq.concepts_of(graph, obj.color)["family"]), colors,
                          [WARM_COLOR, COOL_COLOR], rng)),
        LinkedMention(shape_words, "shape", shape_start, shape_start + len(shape_words),
                      obj.shape, _candidates(obj.shape, shape_open if len(shape_open) > 1
                                             else peers, shapes,
                                             [ROUND_SHAPE, POLYGON], rng))]
    return caption, mentions
  return None


def kb_descriptions(graph: nx.MultiDiGraph) -> dict[str, str]:
  """Every candidate node in words, from the graph's facts (the KB's
  ``entity2desc``): colors, shapes, the color families and the shape classes."""
  out = {}
  for color in (c.name for c in ontology.COLORS):
    names = kq.synonyms(graph, color) + kq.aliases(graph, color)
    out[color] = (f"a {kq.concepts_of(graph, color)['family']}"
                  + (f", also called {', '.join(names)}" if names else ""))
  for shape in (s.name for s in ontology.SHAPES):
    facts = kq.concepts_of(graph, shape)
    names = kq.synonyms(graph, shape) + kq.aliases(graph, shape)
    kind = "round shape" if facts["round"] else "polygon"
    convex = "" if facts["convex"] is None else (
        ", convex" if facts["convex"] else ", non-convex")
    out[shape] = (f"a {kind} with {facts['corners']}{convex}"
                  + (f", also called {', '.join(names)}" if names else ""))
  for node in (WARM_COLOR, COOL_COLOR, ROUND_SHAPE, POLYGON):
    members = sorted(kq.members(graph, node))
    what = "colors" if node in (WARM_COLOR, COOL_COLOR) else "shapes"
    out[node] = f"a class of {what}: {', '.join(members)}"
  return out
