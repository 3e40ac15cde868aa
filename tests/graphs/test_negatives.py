"""Graph-space negatives (Structure-CLIP, Huang et al., AAAI 2024; MosaiCLIP, Singh
et al., EMNLP 2023): each kind of edit, their template realisation, and that no
negative is equal to, equivalent to or implied by its positive (make_negative and
word order: tests/graphs/test_make_negative.py)."""

import collections

import pytest

from vlkg.data.world import captions as cap
from vlkg.data.world import ontology
from vlkg.graphs import negatives as neg_lib
from vlkg.graphs.negatives import (GRAPH_KINDS, Negative, Vocabulary, make_negative,
                                   replace_attribute, replace_object, replace_relation,
                                   swap_attributes, swap_relation)
from vlkg.graphs.realise import WORLD_ATTRIBUTE_ORDER, realise
from vlkg.graphs.scene_graph import SceneGraph
from tests.graphs.negatives_fixtures import (CAR_BUS, GENERAL, LEX, MAN_HORSE, WORLD,
                                             WORLD_SURFACE, G, rng, world_graph)


# --------------------------------------------------------------- realise


def test_realise_hand_worked_examples():
  assert realise(CAR_BUS) == "a red car and a white bus"
  assert realise(MAN_HORSE) == "a man riding a horse"
  g = G(["circle", "square", "star"], [(0, "red"), (0, "large"), (1, "blue")],
        [(0, "left of", 1)])
  assert realise(g) == "a red large circle left of a blue square and a star"
  assert realise(g, WORLD_ATTRIBUTE_ORDER) == (
      "a large red circle left of a blue square and a star")
  g = G(["ellipse", "square", "star", "hexagon"],
        [(0, "striped"), (0, "orange"), (0, "small"), (2, "hollow")],
        [(1, "above", 2)])
  assert realise(g, WORLD_ATTRIBUTE_ORDER) == (
      "a small orange striped ellipse, a square above a hollow star and a hexagon")
  assert realise(G(["apple"])) == "an apple"
  # An object in two relations is said in both; the relation order is kept.
  g = G(["circle", "square", "star"], [], [(0, "left of", 1), (0, "above", 2)])
  assert realise(g) == "a circle left of a square and a circle above a star"
  # Unknown kinds follow the known ones, in graph order.
  g = G(["car"], [(0, "shiny"), (0, "red"), (0, "old"), (0, "small")])
  assert realise(g, WORLD_ATTRIBUTE_ORDER) == "a small red shiny old car"
  assert realise(g, ["color"], kind_of={"red": "color", "old": "age"}) == (
      "a red shiny old small car")
  with pytest.raises(ValueError, match="empty"):
    realise(SceneGraph())


def _world_caption(r):
  """A random world caption (logical form) in canonical words, and its graph."""
  clauses, objects, attributes, relations = [], [], [], []

  def noun_phrase():
    kinds = [k for k in ontology.ATTRIBUTE_KINDS if r.random() < 0.5]
    attrs = tuple((k, str(r.choice(ontology.VALUES_OF_KIND[k]))) for k in kinds)
    shape = str(r.choice([s.name for s in ontology.SHAPES]))
    objects.append(shape)
    attributes.extend((len(objects) - 1, v) for _, v in attrs)
    return cap.NounPhrase(shape, attrs), len(objects) - 1

  for _ in range(int(r.integers(1, 4))):
    if r.random() < 0.5:
      clauses.append(noun_phrase()[0])
    else:
      (a, i), pred = noun_phrase(), str(r.choice(list(ontology.RELATIONS)))
      b, j = noun_phrase()
      clauses.append(cap.Relation(a, pred, b))
      relations.append((i, pred, j))
  return tuple(clauses), G(objects, attributes, relations)


def test_realise_matches_world_canonical_captions():
  # The world's caption realiser with rng=None is the canonical wording that the
  # world parser reads; a graph numbered by first mention must come out the same.
  r = rng(7)
  for _ in range(500):
    caption, g = _world_caption(r)
    assert realise(g, WORLD_ATTRIBUTE_ORDER) == cap.realise(caption, None)


# -------------------------------------------------------- swap_attributes


def test_swap_attributes_car_bus():
  n = swap_attributes(CAR_BUS, rng())
  assert n == Negative(G(["car", "bus"], [(0, "white"), (1, "red")]), "swap_attributes")
  assert n.text() == "a white car and a red bus"


def test_swap_attributes_keeps_kinds():
  g = G(["circle", "square"], [(0, "large"), (0, "red"), (1, "small"), (1, "blue")])
  size_swap = G(["circle", "square"], [(0, "small"), (0, "red"), (1, "large"), (1, "blue")])
  color_swap = G(["circle", "square"], [(0, "large"), (0, "blue"), (1, "small"), (1, "red")])
  seen = collections.Counter()
  for seed in range(60):
    n = swap_attributes(g, rng(seed), kind_of=WORLD.attribute_kind)
    assert n.graph in (size_swap, color_swap)
    seen[n.text(WORLD)] += 1
  assert set(seen) == {"a small red circle and a large blue square",
                       "a large blue circle and a small red square"}
  # Without kinds a size may trade places with a color ("a red blue circle").
  mixed = {swap_attributes(g, rng(seed)).graph for seed in range(60)}
  assert len(mixed) == 4


@pytest.mark.parametrize("g", [
    G(["car"], [(0, "red"), (0, "big")]),                    # one object
    G(["car", "bus"], [(0, "red"), (1, "red")]),              # equal attributes
    G(["car", "bus"], [(0, "red")]),                          # nothing to swap with
    G(["circle", "circle"], [(0, "red"), (1, "blue")]),       # swap gives the same graph
    G(["circle", "circle"], [(0, "red"), (1, "blue")], [(0, "left of", 1), (1, "left of", 0)]),
])
def test_swap_attributes_none(g):
  for seed in range(5):
    assert swap_attributes(g, rng(seed)) is None


def test_swap_attributes_none_with_synonyms_and_kinds():
  synonyms = WORLD.synonyms
  g = G(["circle", "square"], [(0, "big"), (1, "large")])
  assert swap_attributes(g, rng()) is not None  # different words ...
  assert swap_attributes(g, rng(), synonyms=synonyms) is None  # ... same meaning
  g = G(["circle", "square"], [(0, "large"), (1, "red")])
  assert swap_attributes(g, rng()).text() == "a red circle and a large square"
  assert swap_attributes(g, rng(), kind_of=WORLD.attribute_kind) is None
  # "a red circle left of a blue square" swapped and written the other way round.
  g = G(["circle", "circle"], [(0, "red"), (1, "blue")], [(0, "left of", 1), (0, "right of", 1)])
  assert swap_attributes(g, rng()) is not None
  assert swap_attributes(g, rng(), converse=ontology.CONVERSE) is None


# ---------------------------------------------------------- swap_relation


def test_swap_relation_man_horse():
  n = swap_relation(MAN_HORSE, rng())
  assert n == Negative(G(["man", "horse"], [], [(1, "riding", 0)]), "swap_relation")
  assert n.text() == "a horse riding a man"
  g = G(["circle", "square"], [(0, "red")], [(0, "left of", 1)])
  assert swap_relation(g, rng()).text(WORLD) == "a square left of a red circle"


@pytest.mark.parametrize("g", [
    G(["man"], [(0, "tall")]),                                         # one object
    G(["man", "horse"]),                                               # no relation
    G(["man", "horse"], [], [(0, "next to", 1)]),                      # symmetric
    G(["man", "horse"], [], [(0, "near", 1)]),
    G(["dog", "dog"], [(0, "brown"), (1, "brown")], [(0, "chasing", 1)]),  # same description
    G(["dog", "cat"], [], [(0, "chasing", 1), (1, "chasing", 0)]),    # implied by the positive
])
def test_swap_relation_none(g):
  for seed in range(5):
    assert swap_relation(g, rng(seed)) is None


def test_swap_relation_symmetric_set_is_overridable():
  g = G(["man", "horse"], [], [(0, "near", 1)])
  assert "near" in neg_lib.SYMMETRIC_RELATIONS
  assert swap_relation(g, rng(), symmetric=frozenset()).text() == "a horse near a man"
  assert swap_relation(MAN_HORSE, rng(), symmetric={"riding"}) is None
  # Synonyms of a description count as the same description.
  g = G(["dog", "dog"], [(0, "big"), (1, "large")], [(0, "chasing", 1)])
  assert swap_relation(g, rng()) is not None
  assert swap_relation(g, rng(), synonyms=WORLD.synonyms) is None


# -------------------------------------------------------------- replace_*


def test_replace_attribute_exact():
  n = replace_attribute(G(["car"], [(0, "red")]), rng(), GENERAL)
  assert n == Negative(G(["car"], [(0, "white")]), "replace_attribute")
  assert n.text() == "a white car"
  # "big" is a size: only "small" is left ("large" is its synonym).
  for seed in range(20):
    n = replace_attribute(G(["car"], [(0, "big"), (0, "red")]), rng(seed), GENERAL)
    assert n.graph in (G(["car"], [(0, "small"), (0, "red")]),
                       G(["car"], [(0, "big"), (0, "white")]))


def test_replace_attribute_unknown_kind_uses_all_attributes():
  got = {replace_attribute(G(["car"], [(0, "rusty")]), rng(s), GENERAL).text()
         for s in range(40)}
  assert got == {f"a {a} car" for a in GENERAL.all_attributes}


def test_replace_object_and_relation_exact():
  vocab = Vocabulary.from_lists(objects=["man", "horse", "dog"], attributes=["tall"],
                                relations=["riding", "next to"])
  n = replace_relation(MAN_HORSE, rng(), vocab)
  assert n == Negative(G(["man", "horse"], [], [(0, "next to", 1)]), "replace_relation")
  assert n.text() == "a man next to a horse"
  n = replace_object(G(["man"], [(0, "tall")]), rng(), Vocabulary.from_lists(
      ["man", "dog"], ["tall"], []))
  assert n == Negative(G(["dog"], [(0, "tall")]), "replace_object")
  assert n.text() == "a tall dog"
  texts = {replace_object(MAN_HORSE, rng(s), vocab).text() for s in range(40)}
  assert texts == {"a horse riding a horse", "a dog riding a horse", "a man riding a man",
                   "a man riding a dog"}


def test_replace_none_cases():
  assert replace_attribute(G(["car", "bus"]), rng(), GENERAL) is None  # no attribute
  assert replace_relation(G(["car", "bus"], [(0, "red")]), rng(), GENERAL) is None
  only_synonyms = Vocabulary.from_lists(["car", "automobile"], ["big", "large"],
                                        ["next to", "beside"],
                                        synonyms=[("car", "automobile"), ("big", "large"),
                                                  ("next to", "beside")])
  g = G(["car", "car"], [(0, "large")], [(0, "next to", 1)])
  for seed in range(10):
    assert replace_attribute(g, rng(seed), only_synonyms) is None
    assert replace_object(g, rng(seed), only_synonyms) is None
    assert replace_relation(g, rng(seed), only_synonyms) is None
  # Replacing the only object noun of two equal objects by the other's noun would
  # only repeat what the positive says.
  g = G(["circle", "square"], [], [])
  assert replace_object(g, rng(), Vocabulary.from_lists(["circle", "square"], [], [])) is None


def test_replacement_never_by_a_synonym():
  replaced = collections.Counter()
  for seed in range(300):
    for word in ("large", "big"):
      n = replace_attribute(G(["circle"], [(0, word), (0, "red")]), rng(seed),
                            WORLD_SURFACE)
      size, color = n.graph.attributes_of(0)
      if size != word:  # the size was replaced, not the color
        replaced[size] += 1
        assert size not in ("large", "big")
        assert size in ("small", "little", "tiny")
      else:
        assert color not in ("red", "scarlet")
        assert ontology.KIND_OF_VALUE[LEX[color]] == "color"
    n = replace_object(G(["circle"]), rng(seed), WORLD_SURFACE)
    assert n.graph.objects[0] not in ("circle", "disc", "roundel")
    n = replace_relation(G(["circle", "square"], [], [(0, "left of", 1)]), rng(seed),
                         WORLD_SURFACE)
    assert n.graph.relations[0][1] not in ontology.RELATIONS["left of"]
  assert set(replaced) == {"small", "little", "tiny"}
  # A synonym table passed by hand overrides the vocabulary's.
  g = G(["car"], [(0, "red")])
  for seed in range(20):
    n = replace_attribute(g, rng(seed), GENERAL, synonyms={"red": {"white"}})
    assert n is None


# ------------------------------------------- never equal / equivalent / implied


def _facts(g):
  """An independent reading of a world graph: (object descriptions, relation facts)."""
  desc = [(LEX.get(name, name), frozenset(LEX.get(a, a) for a in g.attributes_of(i)))
          for i, name in enumerate(g.objects)]
  facts = []
  for s, p, o in g.relations:
    p = LEX.get(p, p)
    if p in ("right of", "below", "smaller than"):  # write each fact one way
      facts.append((desc[o], ontology.CONVERSE[p], desc[s]))
    else:
      facts.append((desc[s], p, desc[o]))
  return collections.Counter(desc), collections.Counter(facts)


def _check_edit(kind, pos, neg):
  """The negative differs from the positive in exactly the way its kind says."""
  if kind == "swap_attributes":
    changed = [k for k, (a, b) in enumerate(zip(pos.attributes, neg.attributes)) if a != b]
    assert len(changed) == 2 and pos.objects == neg.objects
    (i, a), (j, b) = (pos.attributes[k] for k in changed)
    assert i != j and [neg.attributes[k] for k in changed] == [(i, b), (j, a)]
    assert LEX[a] != LEX[b] and ontology.KIND_OF_VALUE[LEX[a]] == ontology.KIND_OF_VALUE[LEX[b]]
  elif kind == "swap_relation":
    changed = [k for k, (a, b) in enumerate(zip(pos.relations, neg.relations)) if a != b]
    assert len(changed) == 1
    s, p, o = pos.relations[changed[0]]
    assert neg.relations[changed[0]] == (o, p, s)
  elif kind == "replace_attribute":
    changed = [k for k, (a, b) in enumerate(zip(pos.attributes, neg.attributes)) if a != b]
    assert len(changed) == 1
    old, new = pos.attributes[changed[0]][1], neg.attributes[changed[0]][1]
    assert LEX[old] != LEX[new]
    assert ontology.KIND_OF_VALUE[LEX[old]] == ontology.KIND_OF_VALUE[LEX[new]]
  elif kind == "replace_object":
    changed = [k for k, (a, b) in enumerate(zip(pos.objects, neg.objects)) if a != b]
    assert len(changed) == 1
    assert LEX[pos.objects[changed[0]]] != LEX[neg.objects[changed[0]]]
  else:
    changed = [k for k, (a, b) in enumerate(zip(pos.relations, neg.relations)) if a != b]
    assert len(changed) == 1
    assert LEX[pos.relations[changed[0]][1]] != LEX[neg.relations[changed[0]][1]]


def test_negative_never_equivalent_over_random_world_graphs():
  r = rng(2024)
  found = collections.Counter()
  for _ in range(2000):
    g = world_graph(r)
    for kind in GRAPH_KINDS:
      n = make_negative(g, [kind], r, WORLD_SURFACE)
      if n is None:
        continue
      found[kind] += 1
      assert n.kind == kind
      assert n.graph != g and n.graph.canonical() != g.canonical()
      assert not neg_lib.equivalent(n.graph, g, synonyms=WORLD.synonyms,
                                    converse=ontology.CONVERSE)
      (nd, nf), (pd, pf) = _facts(n.graph), _facts(g)
      assert (nd, nf) != (pd, pf)
      assert not (set(nd) <= set(pd) and set(nf) <= set(pf)), "implied by the positive"
      _check_edit(kind, g, n.graph)
      assert n.text(WORLD) != realise(g, WORLD_ATTRIBUTE_ORDER)
  # Each kind is found for a good share of the graphs, so the checks above bite.
  for kind in GRAPH_KINDS:
    assert found[kind] > 400, found


def test_no_negative_is_missed_when_one_exists():
  # None means none exists: brute force over every single edit of small graphs.
  r = rng(5)
  vocab = WORLD
  for _ in range(300):
    g = world_graph(r)
    exists = any(
        neg_lib.is_negative_of(h, g, synonyms=vocab.synonyms, converse=vocab.converse)
        for h in _all_attribute_swaps(g))
    n = swap_attributes(g, r, kind_of=vocab.attribute_kind, synonyms=vocab.synonyms,
                        converse=vocab.converse)
    assert (n is not None) == exists


def _all_attribute_swaps(g):
  for e, (i, a) in enumerate(g.attributes):
    for f, (j, b) in enumerate(g.attributes):
      if i < j and WORLD.attribute_kind(a) == WORLD.attribute_kind(b):
        others_i = {LEX[x] for k, (o, x) in enumerate(g.attributes) if o == i and k != e}
        others_j = {LEX[x] for k, (o, x) in enumerate(g.attributes) if o == j and k != f}
        if LEX[b] in others_i or LEX[a] in others_j:
          continue
        new = list(g.attributes)
        new[e], new[f] = (i, b), (j, a)
        yield G(g.objects, new, g.relations)


def test_graph_key_converse_and_symmetric():
  a = G(["circle", "square"], [(0, "red")], [(0, "left of", 1)])
  b = G(["square", "circle"], [(1, "red")], [(0, "right of", 1)])
  assert a.canonical() != b.canonical()
  assert neg_lib.equivalent(a, b, converse=ontology.CONVERSE)
  assert neg_lib.equivalent(a, b, converse={"right of": "left of"})  # one way is enough
  assert not neg_lib.equivalent(a, b)
  c = G(["man", "horse"], [], [(0, "near", 1)])
  d = G(["man", "horse"], [], [(1, "near", 0)])
  assert neg_lib.equivalent(c, d)
  assert not neg_lib.equivalent(c, d, symmetric=())
