"""Scene graphs and vocabularies shared by the graph-space negatives' tests
(tests/graphs/test_negatives.py, tests/graphs/test_make_negative.py)."""

import numpy as np

from vlkg.data.world import ontology
from vlkg.graphs.negatives import Vocabulary, world_vocabulary
from vlkg.graphs.scene_graph import SceneGraph

WORLD = world_vocabulary()
WORLD_SURFACE = world_vocabulary(surface_forms=True)
LEX = ontology.lexicon()
for _item in (*ontology.SHAPES, *ontology.COLORS):
  for _alias in _item.aliases:
    LEX[_alias] = _item.name


def rng(seed=0):
  return np.random.default_rng(seed)


def G(objects, attributes=(), relations=()):
  return SceneGraph(tuple(objects), tuple(attributes), tuple(relations))


CAR_BUS = G(["car", "bus"], [(0, "red"), (1, "white")])
MAN_HORSE = G(["man", "horse"], [], [(0, "riding", 1)])
GENERAL = Vocabulary.from_lists(
    objects=["car", "bus", "man", "horse", "automobile"],
    attributes={"color": ["red", "white"], "size": ["big", "small", "large"]},
    relations=["riding", "next to", "beside"],
    synonyms=[("car", "automobile"), ("big", "large"), ("next to", "beside")])


def world_graph(r):
  """A random world graph; small pools make equal descriptions common."""
  n = int(r.integers(1, 5))
  shapes = [s.name for s in ontology.SHAPES]
  colors = [c.name for c in ontology.COLORS]
  if r.random() < 0.5:
    shapes, colors = shapes[:2], colors[:2]
  surface = r.random() < 0.3

  def say(word):
    return str(r.choice(ontology.surface_forms(word))) if surface else word

  objects = [say(str(r.choice(shapes))) for _ in range(n)]
  attributes = []
  for i in range(n):
    for kind in ontology.ATTRIBUTE_KINDS:
      if r.random() < 0.5:
        values = colors if kind == "color" else ontology.VALUES_OF_KIND[kind]
        attributes.append((i, say(str(r.choice(values)))))
  relations = []
  if n > 1:
    for _ in range(int(r.integers(0, 4))):
      s, o = (int(x) for x in r.choice(n, 2, replace=False))
      relations.append((s, say(str(r.choice(list(ontology.RELATIONS)))), o))
  return G(objects, attributes, relations)
