"""World scene graphs back to captions: the inverse of parsing a world caption.

Negatives are made in graph space (``vlkg.graphs.negatives``) and must read like the
world's positive captions, or a model could tell them apart by wording alone. So a
negative graph is turned back into a logical form and realised by the same
realiser, with the same templates and synonyms as every training caption.
"""

from __future__ import annotations

from vlkg.data.world import captions as cap
from vlkg.data.world import ontology
from vlkg.graphs.scene_graph import SceneGraph


def noun_phrase(graph: SceneGraph, i: int) -> cap.NounPhrase:
  attrs = {ontology.KIND_OF_VALUE[a]: a for a in graph.attributes_of(i)
           if a in ontology.KIND_OF_VALUE}
  return cap.NounPhrase(graph.objects[i],
                        tuple((k, attrs[k]) for k in cap.ATTRIBUTE_ORDER if k in attrs))


def caption_of(graph: SceneGraph) -> cap.Caption:
  """Relations as clauses in graph order, then objects that are in no relation."""
  clauses: list[cap.Clause] = [
      cap.Relation(noun_phrase(graph, s), p, noun_phrase(graph, o))
      for s, p, o in graph.relations]
  related = {i for s, _, o in graph.relations for i in (s, o)}
  clauses += [noun_phrase(graph, i) for i in range(len(graph.objects)) if i not in related]
  return tuple(clauses)
