"""MosaiCLIP's decomposition into sub-graphs and its graph-space negatives (Singh et al., EMNLP 2023)."""

import collections

import numpy as np
import pytest

from vlkg.graphs import decompose as dec
from vlkg.graphs import negatives as neg_lib
from vlkg.graphs import world_parser
from vlkg.graphs.negatives import Vocabulary
from vlkg.graphs.realise import realise
from vlkg.graphs.scene_graph import SceneGraph
from vlkg.tools import bench_graphs

WORLD = neg_lib.world_vocabulary()


def rng(seed=0):
  return np.random.default_rng(seed)


def G(objects, attributes=(), relations=()):
  return SceneGraph(tuple(objects), tuple(attributes), tuple(relations))


def texts(graphs):
  return [realise(g) for g in graphs]


# "a red cube left of a blue sphere and a green star"
CUBE = G(["cube", "sphere", "star"], [(0, "red"), (1, "blue"), (2, "green")],
         [(0, "left of", 1)])
SHAPES = Vocabulary.from_lists(
    objects=["cube", "sphere", "star"], attributes={"color": ["red", "blue", "green"]},
    relations=["left of", "above"])


@pytest.fixture(scope="module")
def world_graphs():
  """Parsed captions of training scenes, sampled as prepare samples them."""
  from configs import clip
  from vlkg.data import world as world_lib
  return bench_graphs.world_caption_graphs(300, world_lib.settings(clip.get_config()))


# ------------------------------------------------------------- decomposition


def test_subgraphs_hand_worked():
  assert realise(CUBE) == "a red cube left of a blue sphere and a green star"
  assert dec.subgraphs(CUBE) == [
      G(["cube"], [(0, "red")]), G(["sphere"], [(0, "blue")]), G(["star"], [(0, "green")]),
      G(["cube", "sphere"], [(0, "red"), (1, "blue")], [(0, "left of", 1)])]
  assert texts(dec.subgraphs(CUBE, connected_only=False)) == [
      "a red cube", "a blue sphere", "a green star", "a red cube left of a blue sphere",
      "a red cube and a green star", "a blue sphere and a green star"]
  # A pair keeps every relation between its two objects, either way round, and
  # only those; indices are renumbered.
  g = G(["a", "b", "c"], [(2, "x")], [(0, "r", 2), (2, "s", 0), (1, "t", 2)])
  assert dec.subgraphs(g)[3:] == [G(["a", "c"], [(1, "x")], [(0, "r", 1), (1, "s", 0)]),
                                  G(["b", "c"], [(1, "x")], [(0, "t", 1)])]
  assert dec.subgraphs(SceneGraph()) == []


def test_decompose_never_gives_the_caption():
  pair = G(["cube", "sphere"], [(0, "red"), (1, "blue")], [(0, "left of", 1)])
  for seed in range(5):
    assert sorted(texts(dec.decompose(pair, rng(seed), max_pos=None))) == [
        "a blue sphere", "a red cube"]
    assert dec.decompose(G(["cube"], [(0, "red")]), rng(seed)) == []
    assert dec.decompose(SceneGraph(), rng(seed)) == []
  # Without a relation the pair is no sub-graph, but with connected_only=False it
  # is the caption itself, and so is left out all the same.
  apart = G(["cube", "sphere"], [(0, "red"), (1, "blue")])
  assert len(dec.decompose(apart, rng(), max_pos=None, connected_only=False)) == 2


def test_decompose_dedup_with_synonyms():
  # "a big car left of a bus and a large automobile": the first and last noun
  # phrases say the same under the vocabulary's synonyms.
  g = G(["car", "bus", "automobile"], [(0, "big"), (2, "large")], [(0, "left of", 1)])
  vocab = Vocabulary.from_lists(["car", "bus", "automobile"], ["big", "large"], ["left of"],
                                synonyms=[("car", "automobile"), ("big", "large")])
  plain = dec.decompose(g, rng(), max_pos=None)
  assert sorted(texts(plain)) == ["a big car", "a big car left of a bus", "a bus",
                                  "a large automobile"]
  for seed in range(10):
    merged = dec.decompose(g, rng(seed), max_pos=None, vocab=vocab)
    assert len(merged) == 3
    assert {"a bus", "a big car left of a bus"} < set(texts(merged))
  # A converse relation says the same as its mirror: "a cube below a ball" of
  # "a ball above a cube" is the caption itself.
  g = G(["ball", "cube"], [], [(0, "above", 1), (1, "below", 0)])
  conv = Vocabulary.from_lists(["ball", "cube"], [], ["above", "below"],
                               converse={"above": "below"})
  assert len(dec.decompose(g, rng(), max_pos=None)) == 2
  assert texts(dec.decompose(g, rng(), max_pos=None, vocab=conv)) in (
      ["a ball", "a cube"], ["a cube", "a ball"])


def test_decompose_samples_max_pos_seeded_and_uniform():
  every = dec.decompose(CUBE, rng(), max_pos=None, connected_only=False)
  assert len(every) == 6
  first, anywhere = collections.Counter(), collections.Counter()
  for seed in range(600):
    got = dec.decompose(CUBE, rng(seed), connected_only=False)
    assert got == dec.decompose(CUBE, rng(seed), connected_only=False)  # reproducible
    assert len(got) == 3 and len(set(got)) == 3 and set(got) <= set(every)
    first[got[0]] += 1
    anywhere.update(got)
  # Each of 6 is kept with probability 1/2 (600 draws: mean 300, sd 12.2) and comes
  # first with probability 1/6 (mean 100, sd 9.1); the bounds are about 5 sd.
  assert set(anywhere) == set(every)
  assert all(240 <= anywhere[g] <= 360 for g in every), anywhere
  assert all(55 <= first[g] <= 145 for g in every), first


def test_sub_captions_use_the_realiser():
  assert sorted(dec.sub_captions(CUBE, rng(), max_pos=None)) == [
      "a blue sphere", "a green star", "a red cube", "a red cube left of a blue sphere"]
  shout = lambda g, r: realise(g).upper()
  assert "A GREEN STAR" in dec.sub_captions(CUBE, rng(), max_pos=None, realise_fn=shout)


# ----------------------------------------------------------------- meaning


def test_entails_reads_captions_existentially():
  big_blue = G(["circle"], [(0, "large"), (0, "blue")])
  assert dec.entails(big_blue, G(["circle"], [(0, "blue")]), WORLD)
  assert not dec.entails(G(["circle"], [(0, "blue")]), big_blue, WORLD)
  left = G(["circle", "square"], [(0, "red")], [(0, "left of", 1)])
  assert dec.entails(left, G(["square", "circle"], [], [(0, "right of", 1)]), WORLD)
  assert not dec.entails(left, G(["square", "circle"], [], [(0, "left of", 1)]), WORLD)
  assert dec.entails(left, G(["disc"], [(0, "scarlet")]), WORLD)  # synonyms, aliases
  near = Vocabulary.from_lists(["man", "dog"], [], ["near"])
  assert dec.entails(G(["man", "dog"], [], [(0, "near", 1)]),
                     G(["dog", "man"], [], [(0, "near", 1)]), near)
  # Stricter than is_negative_of: whatever it calls no negative is entailed, and
  # so is a description with fewer attributes, which it calls a negative.
  assert neg_lib.is_negative_of(G(["circle"]), left)
  assert dec.entails(left, G(["circle"]), WORLD)
  r = rng(3)
  kinds = collections.Counter()
  for _ in range(1000):
    g = _random_world_graph(r)
    h = _random_world_graph(r)
    negative = neg_lib.is_negative_of(h, g, synonyms=WORLD.synonyms, converse=WORLD.converse)
    kinds[negative, dec.entails(g, h, WORLD)] += 1
    assert dec.entails(g, h, WORLD) or negative
    assert dec.entails(g, g, WORLD)
    assert all(dec.entails(g, s, WORLD) for s in dec.subgraphs(g, connected_only=False))
  assert min(kinds.values()) > 30 and len(kinds) == 3, kinds  # each case happens


def _random_world_graph(r):
  n = int(r.integers(1, 4))
  objects = [str(r.choice(["circle", "square"])) for _ in range(n)]
  attributes = [(i, str(r.choice(["red", "blue", "large"]))) for i in range(n)
                if r.random() < 0.7]
  relations = [(0, str(r.choice(["left of", "right of", "above"])), 1)] if n > 1 else []
  return G(objects, attributes, relations)


# ---------------------------------------------------------------- negatives


PAIR = G(["cube", "sphere"], [(0, "red"), (1, "blue")], [(0, "left of", 1)])
TWO_COLORS = Vocabulary.from_lists(["cube", "sphere"], {"color": ["red", "blue"]},
                                   ["left of"])
# Every negative of "a red cube left of a blue sphere" under TWO_COLORS, by hand.
PAIR_NEGATIVES = {
    "f_obj": {"a blue cube", "a red sphere"},
    "f_rel": {"a blue sphere left of a red cube",  # swap the objects
              "a red sphere left of a blue sphere", "a red cube left of a blue cube"},
    "f_attr": {"a blue cube left of a red sphere",  # swap the colors
               "a blue cube left of a blue sphere", "a red cube left of a red sphere"},
}
PAIR_WHOLE = {"a blue cube left of a red sphere", "a blue sphere left of a red cube"}


def test_mine_negatives_hand_worked():
  every = set().union(*PAIR_NEGATIVES.values())
  for seed in range(40):
    positives = dec.decompose(PAIR, rng(seed))
    negs, whole = dec.mine_negatives(PAIR, positives, rng(seed), TWO_COLORS, max_neg=10)
    assert realise(whole.graph) in PAIR_WHOLE
    got = [realise(n.graph) for n in negs]
    # All of them but the whole-caption negative, each once, in its category.
    assert sorted(got) == sorted(every - {realise(whole.graph)})
    for n in negs:
      assert realise(n.graph) in PAIR_NEGATIVES[n.category]
      assert n.kind in dec.CATEGORY_KINDS[n.category]
    capped, _ = dec.mine_negatives(PAIR, positives, rng(seed), TWO_COLORS)
    assert len(capped) == 6


def test_negatives_are_negatives_of_every_positive(world_graphs):
  graphs, reject = world_graphs
  r = rng(1)
  counts = collections.Counter()
  for g in graphs:
    positives = dec.decompose(g, r, vocab=WORLD)
    assert len(positives) <= 3
    negs, whole = dec.mine_negatives(g, positives, r, WORLD, reject=reject)
    assert len(negs) <= 6
    counts["negatives"] += len(negs)
    counts["whole"] += whole is not None
    keys = [WORLD.graph_key(n.graph) for n in negs]
    if whole is not None:
      keys.append(WORLD.graph_key(whole.graph))
      assert whole.kind in dec.WHOLE_KINDS
    assert len(set(keys)) == len(keys), "duplicate negatives"
    for h in [n.graph for n in negs] + ([whole.graph] if whole else []):
      assert not reject(h)
      for pos in [g, *positives]:
        assert neg_lib.is_negative_of(h, pos, synonyms=WORLD.synonyms,
                                      converse=WORLD.converse, symmetric=WORLD.symmetric)
        assert not dec.entails(pos, h, WORLD)
    for pos in positives:
      assert not neg_lib.equivalent(pos, g, synonyms=WORLD.synonyms, converse=WORLD.converse)
  # The checks above bite: most captions get several negatives.
  assert counts["negatives"] > 4 * len(graphs) and counts["whole"] > len(graphs) // 3


def test_category_frequencies_follow_p1():
  # Every category has far more than 6 negatives here (f_obj 20, f_rel 22, f_attr
  # 23), so no category runs out and each draw picks f_obj with probability p1 and
  # the others with (1 - p1) / 2. 3,000 draws: sd of a share <= 0.0092; the bound
  # 0.03 is over 3 sd (the seeds are fixed, so the test is deterministic).
  g = G(["circle", "square"],
        [(0, "large"), (0, "red"), (0, "striped"), (1, "small"), (1, "blue"), (1, "hollow")],
        [(0, "left of", 1)])
  for p1 in (0.15, 0.5):
    cats = collections.Counter()
    for seed in range(500):
      r = rng(seed)
      negs, _ = dec.mine_negatives(g, dec.decompose(g, r, vocab=WORLD), r, WORLD, p1=p1)
      assert len(negs) == 6
      cats.update(n.category for n in negs)
    share = {c: cats[c] / 3000 for c in dec.CATEGORIES}
    expected = {"f_obj": p1, "f_rel": (1 - p1) / 2, "f_attr": (1 - p1) / 2}
    assert all(abs(share[c] - expected[c]) < 0.03 for c in dec.CATEGORIES), (p1, share)


def test_next_category_when_one_has_none():
  # No relation: f_rel and f_attr have no source sub-graph, so every draw falls
  # through to f_obj whatever p1 is; with p1 = 0 nothing is left.
  g = G(["circle", "square"], [(0, "red"), (1, "blue")])
  for seed in range(20):
    negs, whole = dec.mine_negatives(g, dec.decompose(g, rng(seed)), rng(seed), WORLD)
    assert [n.category for n in negs] == ["f_obj"] * 6
    assert realise(whole.graph) == "a blue circle and a red square"
    assert dec.mine_negatives(g, [], rng(seed), WORLD, p1=0.0)[0] == []
  # With connected_only=False the pair is a source, and f_attr is drawn.
  cats = collections.Counter()
  for seed in range(50):
    negs, _ = dec.mine_negatives(g, [], rng(seed), WORLD, connected_only=False)
    cats.update(n.category for n in negs)
  assert cats["f_attr"] > 100 and cats["f_rel"] == 0


def test_sources_positives_only():
  # "a red cube left of a blue sphere and a green star" sampled to its three
  # one-object sub-graphs: only f_obj has a source.
  positives = [G(["cube"], [(0, "red")]), G(["star"], [(0, "green")])]
  for seed in range(10):
    negs, _ = dec.mine_negatives(CUBE, positives, rng(seed), SHAPES, sources="positives")
    assert {n.category for n in negs} == {"f_obj"} and len(negs) == 4
    assert {realise(n.graph) for n in negs} == {"a blue cube", "a green cube",
                                                "a red star", "a blue star"}
    negs, _ = dec.mine_negatives(CUBE, positives, rng(seed), SHAPES)
    assert {n.category for n in negs} - {"f_obj"}
  with pytest.raises(ValueError, match="sources"):
    dec.mine_negatives(CUBE, [], rng(), SHAPES, sources="all")
  with pytest.raises(ValueError, match="p1"):
    dec.mine_negatives(CUBE, [], rng(), SHAPES, p1=1.5)


def test_fewer_or_none_when_nothing_exists():
  bare = Vocabulary.from_lists(["cube"], [], [])
  example = dec.build_example(G(["cube"]), rng(), vocab=bare)
  assert example == dec.MosaicExample((), (), (), None)
  one_color = Vocabulary.from_lists(["cube"], {"color": ["red"]}, [])
  assert dec.build_example(G(["cube"], [(0, "red")]), rng(), vocab=one_color) == (
      dec.MosaicExample((), (), (), None))
  two_colors = Vocabulary.from_lists(["cube"], {"color": ["red", "blue"]}, [])
  assert dec.build_example(G(["cube"], [(0, "red")]), rng(), vocab=two_colors) == (
      dec.MosaicExample((), ("a blue cube",), ("f_obj",), None))
  assert dec.build_example(SceneGraph(), rng(), vocab=WORLD) == (
      dec.MosaicExample((), (), (), None))


def test_reject_hook_is_honoured(world_graphs):
  for seed in range(10):
    negs, whole = dec.mine_negatives(PAIR, [], rng(seed), TWO_COLORS,
                                     reject=lambda h: True)
    assert negs == [] and whole is None
  # A rejected candidate makes the search go on: without blue, what is left.
  no_blue = lambda h: "blue" in {a for _, a in h.attributes}
  for seed in range(10):
    negs, whole = dec.mine_negatives(PAIR, [], rng(seed), TWO_COLORS, reject=no_blue)
    assert whole is None  # both swaps give a blue cube, or keep the blue sphere
    assert {realise(n.graph) for n in negs} == {"a red sphere",
                                                "a red cube left of a red sphere"}
  graphs, reject = world_graphs
  r = rng(2)
  for g in graphs[:150]:
    example = dec.build_example(g, r, vocab=WORLD, realise_fn=dec.world_realise,
                                reject=reject)
    for text in example.negatives + (example.whole_negative or "",):
      assert not text or not reject(world_parser.parse(text))


def test_world_round_trip(world_graphs):
  # Sub-captions and negatives are world captions: the world parser reads them back
  # to the graphs they were made from (a swapped relation names its objects in the
  # other order, so negatives compare under graph_key).
  graphs, reject = world_graphs
  r = rng(4)
  seen = collections.Counter()
  for g in graphs[:200]:
    for sub in dec.decompose(g, r, max_pos=None, vocab=WORLD):
      text = dec.world_realise(sub, r)
      assert world_parser.parse(text, strict=True) == sub, text
      seen["positives"] += 1
    negs, whole = dec.mine_negatives(g, dec.decompose(g, r, vocab=WORLD), r, WORLD,
                                     reject=reject)
    for h in [n.graph for n in negs] + ([whole.graph] if whole else []):
      parsed = world_parser.parse(dec.world_realise(h, r), strict=True)
      assert WORLD.graph_key(parsed) == WORLD.graph_key(h)
      seen["negatives"] += 1
  assert seen["positives"] > 150 and seen["negatives"] > 800


def test_build_example_reproducible_and_consistent(world_graphs):
  graphs, reject = world_graphs

  def run(seed):
    r = rng(seed)
    return [dec.build_example(g, r, vocab=WORLD, realise_fn=dec.world_realise,
                              reject=reject) for g in graphs[:100]]

  first = run(7)
  assert first == run(7) and first != run(8)
  for example, g in zip(first, graphs):
    assert len(example.positives) <= 3 and len(example.negatives) <= 6
    assert len(example.categories) == len(example.negatives)
    assert len(set(example.negatives)) == len(example.negatives)
    caption = dec.world_realise(g, None)
    for text in example.positives:  # never the caption again, in any wording
      assert world_parser.parse(text) != g and text != caption
    assert not set(example.positives) & set(example.negatives)
