"""make_negative over the graph-space kinds, its reject hook, and word-order
negatives (Structure-CLIP, Huang et al., AAAI 2024; MosaiCLIP, Singh et al.,
EMNLP 2023)."""

import collections

import pytest

from vlkg.data.benchmarks import order as order_lib
from vlkg.data.world import ontology
from vlkg.data.world.suites import world_tag
from vlkg.graphs import negatives as neg_lib
from vlkg.graphs.negatives import (GRAPH_KINDS, Vocabulary, make_negative,
                                   replace_attribute, replace_object, replace_relation,
                                   swap_attributes, swap_relation)
from tests.graphs.negatives_fixtures import (CAR_BUS, GENERAL, LEX, WORLD, WORLD_SURFACE, G,
                                             rng, world_graph)


# ------------------------------------------------------- make_negative


def test_make_negative_first_kind_that_exists():
  for seed in range(20):
    n = make_negative(CAR_BUS, ["swap_relation", "swap_attributes"], rng(seed))
    assert n.kind == "swap_attributes"
    assert make_negative(G(["car"]), ["swap_relation", "swap_attributes"], rng(seed)) is None
  # With every kind available, each one comes first for some seed.
  g = G(["circle", "square"], [(0, "red"), (1, "blue")], [(0, "above", 1)])
  kinds = collections.Counter(make_negative(g, GRAPH_KINDS, rng(s), WORLD).kind
                              for s in range(200))
  assert set(kinds) == set(GRAPH_KINDS)


def test_make_negative_weights():
  g = G(["circle", "square"], [(0, "red"), (1, "blue")], [(0, "above", 1)])
  for seed in range(20):
    n = make_negative(g, ["swap_attributes", "swap_relation"], rng(seed), WORLD, p=[0, 1])
    assert n.kind == "swap_relation"
  # Weight 0 is never tried, even when the other kind has no negative.
  assert make_negative(CAR_BUS, ["swap_attributes", "swap_relation"], rng(), p=[0, 1]) is None
  counts = collections.Counter(
      make_negative(g, ["replace_object", "replace_attribute"], rng(s), WORLD,
                    p=[0.15, 0.85]).kind for s in range(400))
  assert 30 <= counts["replace_object"] <= 95


def test_make_negative_errors():
  with pytest.raises(ValueError, match="unknown negative kind"):
    make_negative(CAR_BUS, ["swap_colors"], rng())
  with pytest.raises(ValueError, match="needs a vocabulary"):
    make_negative(CAR_BUS, ["replace_object"], rng())
  with pytest.raises(ValueError, match="non-negative"):
    make_negative(CAR_BUS, ["swap_attributes"], rng(), p=[-1])


def test_seeded_determinism():
  graphs = [world_graph(rng(s)) for s in range(200)]

  def run(seed):
    r = rng(seed)
    return [make_negative(g, GRAPH_KINDS, r, WORLD) for g in graphs]

  assert run(3) == run(3)
  assert run(3) != run(4)
  for kind_fn in (lambda g, r: swap_attributes(g, r), lambda g, r: swap_relation(g, r),
                  lambda g, r: replace_attribute(g, r, WORLD),
                  lambda g, r: replace_object(g, r, WORLD),
                  lambda g, r: replace_relation(g, r, WORLD)):
    assert [kind_fn(g, rng(9)) for g in graphs] == [kind_fn(g, rng(9)) for g in graphs]


# ----------------------------------------------------------- reject hook


def test_reject_hook_is_honoured():
  g = G(["circle", "square"], [(0, "red"), (1, "blue")], [(0, "above", 1)])
  for kind in GRAPH_KINDS:
    assert make_negative(g, [kind], rng(), WORLD) is not None
    assert make_negative(g, [kind], rng(), WORLD, reject=lambda h: True) is None
  no_green = lambda h: any(LEX.get(a, a) == "green" for _, a in h.attributes)
  for seed in range(100):
    n = make_negative(g, GRAPH_KINDS, rng(seed), WORLD, reject=no_green)
    assert not no_green(n.graph)
  # A rejected candidate makes the search go on within the kind.
  vocab = Vocabulary.from_lists(["square"], {"color": ["red", "blue", "green"]}, [])
  for seed in range(30):
    n = replace_attribute(G(["square"], [(0, "red")]), rng(seed), vocab,
                          reject=lambda h: "blue" in h.attributes_of(0))
    assert n.graph == G(["square"], [(0, "green")])


def test_world_heldout_reject():
  reject = neg_lib.world_heldout_reject([("blue", "square")])
  assert reject(G(["square"], [(0, "blue")]))
  assert reject(G(["circle", "square"], [(1, "large"), (1, "blue")]))
  assert not reject(G(["square", "circle"], [(1, "blue")]))
  assert reject(G(["plus", "disc"], [(1, "teal")])) is False
  assert neg_lib.world_heldout_reject([("cyan", "circle")])(G(["disc"], [(0, "teal")]))
  only_blue = Vocabulary.from_lists(["square"], {"color": ["red", "blue"]}, [])
  assert replace_attribute(G(["square"], [(0, "red")]), rng(), only_blue).text() == (
      "a blue square")
  assert replace_attribute(G(["square"], [(0, "red")]), rng(), only_blue,
                           reject=reject) is None
  # Training negatives over random world graphs never show the held-out pair.
  reject = neg_lib.world_heldout_reject([("red", "circle"), ("blue", "ellipse")])
  r = rng(11)
  for _ in range(500):
    g = world_graph(r)
    if reject(g):
      continue
    n = make_negative(g, GRAPH_KINDS, r, WORLD_SURFACE, reject=reject)
    assert n is None or not reject(n.graph)


# ---------------------------------------------------------- word order


def test_shuffle_words():
  text = "a large red circle left of a blue square"
  assert neg_lib.shuffle_words(text, world_tag, rng(1)) == order_lib.perturbations(
      text, world_tag, rng(1))
  for kind in neg_lib.ORDER_KINDS:
    for seed in range(10):
      out = neg_lib.shuffle_words(text, world_tag, rng(seed), kind)
      assert out != text and sorted(out.split()) == sorted(text.split())
  assert neg_lib.shuffle_words(text, world_tag, rng(5), "shuffle_trigrams") == (
      neg_lib.shuffle_words(text, world_tag, rng(5), "shuffle_trigrams"))
  for kind in neg_lib.ORDER_KINDS:
    assert neg_lib.shuffle_words("circle", world_tag, rng(), kind) is None
  # Nothing to shuffle among nouns when there is one noun and one adjective.
  assert neg_lib.shuffle_words("a red circle", world_tag, rng(),
                               "shuffle_nouns_and_adj") is None
  with pytest.raises(ValueError, match="unknown order kind"):
    neg_lib.shuffle_words(text, world_tag, rng(), "reverse")


def test_vocabulary_from_lists_and_world():
  assert GENERAL.attribute_kind("large") == "size"
  assert GENERAL.attribute_kind("rusty") is None
  assert GENERAL.object_kind("automobile") == "object"
  assert GENERAL.synonyms["big"] == {"large"}
  assert WORLD.attributes["color"] == tuple(c.name for c in ontology.COLORS)
  assert WORLD.attribute_kind("big") == "size" and WORLD.attribute_kind("teal") == "color"
  assert WORLD.synonyms["red"] == {"scarlet"}
  assert {"disc", "roundel"} <= WORLD.synonyms["circle"]
  assert WORLD.converse["left of"] == "right of"
  assert "big" in WORLD_SURFACE.attributes["size"] and "big" not in WORLD.attributes["size"]
  assert neg_lib.synonym_sets({"a": ["b"], "b": ["c"]}) == {
      "a": {"b", "c"}, "b": {"a", "c"}, "c": {"a", "b"}}
