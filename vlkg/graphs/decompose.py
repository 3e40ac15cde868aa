"""MosaiCLIP's scene-graph decomposition and its graph-space negatives (Singh et al.,
EMNLP 2023).

MosaiCLIP trains on more than one text per image. The caption's scene graph is cut
into sub-graphs of one or two objects with their attributes ("Decomposition", §3),
each realised with templates as a sub-caption; all are positives of the image. Hard
negatives are edits of those sub-graphs ("Negatives in graph space", §3), made by
``vlkg.graphs.negatives``; one NegCLIP-style swap of the whole caption is added
(§3, "Loss"). Everything here runs once, at prepare time.

Interpretations (the paper leaves them open; each is a parameter):

* *Connected sub-graphs.* A two-object sub-graph keeps every relation between its
  two objects. MosaiCLIP decomposes into connected sub-graphs, so by default
  (``connected_only=True``) two objects with no relation between them make no
  sub-graph: "a red circle and a blue star" would only restate two one-object
  sub-graphs side by side. ``connected_only=False`` keeps them.
* *Positives.* Sub-graphs are deduplicated per caption (the paper's "per image":
  the records keep one set of texts per caption, as they keep Structure-CLIP's
  negative, and one caption is drawn per image and step) under the vocabulary's
  meaning (`negatives.Vocabulary.graph_key`: synonyms, converses, symmetric
  relations), and one that says the same as the whole caption is dropped: the
  caption is already the image's positive, and is never given twice. At most
  ``max_pos`` (3) are kept, drawn uniformly; they come in random order, so any prefix
  is a uniform sample too (the stage-1 curriculum takes one).
* *Negative categories.* MosaiCLIP, Singh et al., EMNLP 2023 names them p1 (object), p2 (relation) and p3
  (attribute), so

    - p1 -> ``f_obj``: replace an attribute of a one-object sub-graph;
    - p2 -> ``f_rel``: on a one-relation sub-graph, swap its objects, replace an
      object or replace the relation;
    - p3 -> ``f_attr``: swap or replace attributes of a two-object sub-graph;

  with p2 = p3 = (1 - p1) / 2 and p1 = 0.15 by default. Each negative draws a
  category order like `negatives.make_negative` draws kinds: the first category
  with probability proportional to its weight, then the next among the rest, so a
  category with nothing left passes its turn on. Within a category a source
  sub-graph is drawn uniformly, then a kind uniformly.
* *Sources.* By default (``sources="subgraphs"``) negatives are edits of every
  sub-graph of the caption, sampled or not, and of the caption's own graph when it
  is itself a one- or two-object sub-graph: each is true of the image and said by
  the caption, which is always a positive, so each edit is a hard negative of the
  image's texts. Drawing only from the (at most 3) sampled positives
  (``sources="positives"``) pairs every negative with a positive in the batch, but
  leaves ``f_rel`` and ``f_attr`` without a source whenever the one relation
  sub-graph was not sampled, which skews the categories away from p1/p2/p3.
* *What counts as a negative.* A candidate is refused when the caption, or any
  positive, already says it under an existential reading with attribute
  subsumption: "a blue circle" is true wherever "a large blue circle" is, so
  replacing "red" by "blue" in the sub-graph "a red circle" of "a red circle and a
  large blue circle" gives no negative. This is stricter than
  `negatives.is_negative_of`, which compares whole object descriptions: a candidate
  kept here is a negative under it too, of every positive and of the caption's
  graph. Negatives are deduplicated under ``graph_key``, and none repeats the
  whole-caption negative. When nothing is left, fewer are returned: none is ever
  faked. So a caption of one object ("a red circle") gets only ``f_obj``
  negatives whatever p1 is, and the categories of a data set follow p1/p2/p3 only
  over its captions with a relation.

On the world, texts come from the world's own realiser (`world_realise`, as
``vlkg.graphs.fields.negatives`` realises Structure-CLIP's negatives), so
sub-captions and negatives read like the world's captions, with the same synonyms
and lead-ins, and parse back to their graphs.

    python -m vlkg.tools.bench decompose   # prepare-time cost per 1,000 world captions
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from vlkg.data.world import captions as world_captions
from vlkg.data.world import graph_text
from vlkg.graphs import negatives
from vlkg.graphs.realise import realise
from vlkg.graphs.scene_graph import SceneGraph

F_OBJ, F_REL, F_ATTR = "f_obj", "f_rel", "f_attr"
CATEGORIES: tuple[str, ...] = (F_OBJ, F_REL, F_ATTR)  # weights p1, p2, p3
CATEGORY_KINDS: dict[str, tuple[str, ...]] = {
    F_OBJ: (negatives.REPLACE_ATTRIBUTE,),
    F_REL: (negatives.SWAP_RELATION, negatives.REPLACE_OBJECT, negatives.REPLACE_RELATION),
    F_ATTR: (negatives.SWAP_ATTRIBUTES, negatives.REPLACE_ATTRIBUTE),
}
# NegCLIP's whole-caption negative: swaps only, as in Structure-CLIP (Huang et al., AAAI 2024).
WHOLE_KINDS: tuple[str, ...] = (negatives.SWAP_ATTRIBUTES, negatives.SWAP_RELATION)
SOURCES: tuple[str, ...] = ("subgraphs", "positives")  # what negatives are edits of

RealiseFn = Callable[[SceneGraph, np.random.Generator], str]


# ------------------------------------------------------------- decomposition


def _induced(g: SceneGraph, keep: Sequence[int]) -> SceneGraph:
  """The objects ``keep`` (in graph order), their attributes and the relations among them."""
  index = {old: new for new, old in enumerate(keep)}
  return SceneGraph(tuple(g.objects[i] for i in keep),
                    tuple((index[i], a) for i, a in g.attributes if i in index),
                    tuple((index[s], p, index[o]) for s, p, o in g.relations
                          if s in index and o in index))


def _connected(g: SceneGraph) -> bool:
  return any(s != o for s, _, o in g.relations)


def is_unit(g: SceneGraph, connected_only: bool = True) -> bool:
  """Whether ``g`` is itself a MosaiCLIP sub-graph: one object, or two (related ones)."""
  n = len(g.objects)
  return n == 1 or (n == 2 and (_connected(g) or not connected_only))


def subgraphs(graph: SceneGraph, *, connected_only: bool = True) -> list[SceneGraph]:
  """Every sub-graph with one or two objects, with their attributes (MosaiCLIP, Singh et al., EMNLP 2023).

  One-object sub-graphs first, by object; then pairs (i, j), i < j, in order. A
  pair keeps the relations between its two objects; with ``connected_only`` a pair
  with none is left out (see the module docstring). Not deduplicated.

  For "a red cube left of a blue sphere and a green star" (objects cube, sphere,
  star; one relation): "a red cube", "a blue sphere", "a green star", "a red cube left
  of a blue sphere"; without ``connected_only`` also "a red cube and a green star" and
  "a blue sphere and a green star".
  """
  n = len(graph.objects)
  out = [_induced(graph, (i,)) for i in range(n)]
  for i in range(n):
    for j in range(i + 1, n):
      pair = _induced(graph, (i, j))
      if _connected(pair) or not connected_only:
        out.append(pair)
  return out


def _key_fn(vocab: negatives.Vocabulary | None) -> Callable[[SceneGraph], tuple]:
  return negatives.graph_key if vocab is None else vocab.graph_key


def decompose(graph: SceneGraph, rng: np.random.Generator, *, max_pos: int | None = 3,
              connected_only: bool = True,
              vocab: negatives.Vocabulary | None = None) -> list[SceneGraph]:
  """The caption's positive sub-graphs: deduplicated, never the caption, sampled.

  Args:
    graph: The caption's scene graph.
    rng: Draws the sample and its order.
    max_pos: At most this many (MosaiCLIP: 3); None for all.
    connected_only: Leave out two-object sub-graphs without a relation.
    vocab: Synonyms, converses and symmetric relations for deduplication; None
      compares words as written (symmetric relations still per
      `negatives.SYMMETRIC_RELATIONS`).

  Returns:
    Sub-graphs in random order; the first of equivalent ones is kept. Empty when
    the caption is itself its only sub-graph ("a red circle").
  """
  key = _key_fn(vocab)
  seen = {key(graph)}
  unique = []
  for sub in subgraphs(graph, connected_only=connected_only):
    k = key(sub)
    if k not in seen:
      seen.add(k)
      unique.append(sub)
  order = rng.permutation(len(unique))
  if max_pos is not None:
    order = order[:max_pos]
  return [unique[k] for k in order]


# ---------------------------------------------------------------- realising


def world_realise(g: SceneGraph, rng: np.random.Generator) -> str:
  """A world graph as a world caption: the realiser, synonyms and lead-ins of training
  captions (``captions.realise`` of ``graph_text.caption_of``)."""
  return world_captions.realise(graph_text.caption_of(g), rng)


def template_realiser(vocab: negatives.Vocabulary | None = None) -> RealiseFn:
  """`realise.realise` with the vocabulary's attribute order; ignores the rng."""
  if vocab is None:
    return lambda g, rng: realise(g)
  return lambda g, rng: realise(g, vocab.attribute_order, kind_of=vocab.attribute_kind)


def sub_captions(graph: SceneGraph, rng: np.random.Generator, *,
                 realise_fn: RealiseFn | None = None, max_pos: int | None = 3,
                 connected_only: bool = True,
                 vocab: negatives.Vocabulary | None = None) -> list[str]:
  """`decompose`'s sub-graphs as text (default: `template_realiser` of ``vocab``)."""
  realise_fn = realise_fn or template_realiser(vocab)
  return [realise_fn(g, rng) for g in decompose(graph, rng, max_pos=max_pos,
                                                connected_only=connected_only,
                                                vocab=vocab)]


# ------------------------------------------------------------------ meaning


class _Reading:
  """The existential reading of a graph (``captions.caption_value``): which texts a
  graph makes true, with an object description true of any description of the same
  noun that has at least its attributes."""

  def __init__(self, vocab: negatives.Vocabulary):
    classes = negatives.synonym_sets(vocab.synonyms)  # closed, whatever the input
    self._rep = {w: min(others | {w}) for w, others in classes.items()}
    conv = {self.word(p): self.word(q) for p, q in vocab.converse.items()}
    conv.update({q: p for p, q in conv.items() if q not in conv})
    self.converse = conv
    self.symmetric = frozenset(self.word(p) for p in vocab.symmetric)

  def word(self, w: str) -> str:
    return self._rep.get(w, w)

  def descriptions(self, g: SceneGraph) -> list[tuple[str, frozenset[str]]]:
    return [(self.word(name), frozenset(self.word(a) for a in g.attributes_of(i)))
            for i, name in enumerate(g.objects)]

  def entails(self, pos: SceneGraph, h: SceneGraph) -> bool:
    """Whether every clause of ``h`` is true wherever ``pos`` is."""
    dp, dh = self.descriptions(pos), self.descriptions(h)

    def covers(big, small):
      return big[0] == small[0] and small[1] <= big[1]

    if not all(any(covers(b, d) for b in dp) for d in dh):
      return False
    facts = []  # every way pos's relations can be said
    for s, p, o in pos.relations:
      p = self.word(p)
      facts.append((dp[s], p, dp[o]))
      if p in self.symmetric:
        facts.append((dp[o], p, dp[s]))
      if p in self.converse:
        facts.append((dp[o], self.converse[p], dp[s]))
    return all(any(fp == self.word(p) and covers(fs, dh[s]) and covers(fo, dh[o])
                   for fs, fp, fo in facts)
               for s, p, o in h.relations)


# Built once per vocabulary: closing the synonym classes costs more than a caption's
# whole search. Keyed by id with the vocabulary held, so an id is never reused.
_READINGS: dict[int, tuple[negatives.Vocabulary, _Reading]] = {}


def _reading(vocab: negatives.Vocabulary) -> _Reading:
  hit = _READINGS.get(id(vocab))
  if hit is None or hit[0] is not vocab:
    if len(_READINGS) > 16:
      _READINGS.clear()
    hit = _READINGS[id(vocab)] = (vocab, _Reading(vocab))
  return hit[1]


def entails(pos: SceneGraph, h: SceneGraph, vocab: negatives.Vocabulary) -> bool:
  """Whether ``h`` is true wherever ``pos`` is (the module docstring's reading).

  Holds whenever ``negatives.is_negative_of(h, pos, ...)`` does not (under the
  vocabulary's synonyms, converses and symmetric relations), and also when ``h``
  drops attributes: "a blue circle" is entailed by "a large blue circle", though it
  is a negative of it for `negatives.is_negative_of`.
  """
  return _reading(vocab).entails(pos, h)


# ---------------------------------------------------------------- negatives


@dataclasses.dataclass(frozen=True)
class SubNegative:
  """A negative sub-graph, its category (`CATEGORIES`) and its edit (`GRAPH_KINDS`)."""
  graph: SceneGraph
  category: str
  kind: str


_ELIGIBLE: dict[str, Callable[[SceneGraph], bool]] = {
    F_OBJ: lambda g: len(g.objects) == 1 and bool(g.attributes),
    F_REL: lambda g: len(g.relations) == 1,
    F_ATTR: lambda g: len(g.objects) == 2 and bool(g.attributes),
}


def _shuffled(items: Sequence, rng: np.random.Generator) -> list:
  return [items[k] for k in rng.permutation(len(items))]


def _draw(weights: dict[str, float], rng: np.random.Generator) -> str:
  """A key with probability proportional to its (positive) weight."""
  u = rng.random() * sum(weights.values())
  for key, w in weights.items():
    u -= w
    if u < 0:
      return key
  return key  # rounding: u was within an ulp of the total


def mine_negatives(graph: SceneGraph, positives: Sequence[SceneGraph],
                   rng: np.random.Generator, vocab: negatives.Vocabulary, *,
                   max_neg: int = 6, p1: float = 0.15,
                   reject: negatives.Reject | None = None, connected_only: bool = True,
                   sources: str = "subgraphs", whole_kinds: Sequence[str] = WHOLE_KINDS,
                   ) -> tuple[list[SubNegative], negatives.Negative | None]:
  """MosaiCLIP's negative sub-graphs and the whole-caption negative (MosaiCLIP, Singh et al., EMNLP 2023).

  Args:
    graph: The caption's scene graph.
    positives: Its positive sub-graphs (`decompose`); no negative is entailed by
      one (nor by ``graph``).
    rng: Source of randomness.
    vocab: Replacement words and meaning (`negatives.Vocabulary`).
    max_neg: At most this many negative sub-graphs (MosaiCLIP: 6).
    p1: Weight of ``f_obj``; ``f_rel`` and ``f_attr`` get (1 - p1) / 2 each.
    reject: Returns True for a graph that must not be returned (also for the
      whole-caption negative), e.g. `negatives.world_heldout_reject` in training.
    connected_only: As for `decompose`: which sub-graphs (and whether ``graph``
      itself) are sources.
    sources: ``"subgraphs"``: edit every sub-graph of ``graph`` and the positives;
      ``"positives"``: the positives only (see the module docstring). Either way
      ``graph`` too when it is one or two (related) objects.
    whole_kinds: Kinds of the whole-caption negative; empty for none.

  Returns:
    (negative sub-graphs in the order drawn, whole-caption negative or None). No
    negative is entailed by ``graph`` or by a positive, none is equivalent to
    another or to the whole-caption negative, and there are fewer than ``max_neg``
    only when no category has another.

  Raises:
    ValueError: If ``p1`` is not in [0, 1] or ``sources`` not in `SOURCES`.
  """
  if not 0.0 <= p1 <= 1.0:
    raise ValueError(f"p1 must be in [0, 1], got {p1}")
  if sources not in SOURCES:
    raise ValueError(f"sources must be one of {SOURCES}, got {sources!r}")
  reading = _reading(vocab)
  truths = [graph, *positives]
  taken: set[tuple] = set()

  def refused(h: SceneGraph) -> bool:
    return ((reject is not None and reject(h)) or vocab.graph_key(h) in taken
            or any(reading.entails(t, h) for t in truths))

  whole = None
  if whole_kinds and not graph.is_empty():
    whole = negatives.make_negative(graph, whole_kinds, rng, vocab, reject=refused)
    if whole is not None:
      taken.add(vocab.graph_key(whole.graph))

  candidates = list(positives)
  if sources == "subgraphs":
    candidates += subgraphs(graph, connected_only=connected_only)
  if is_unit(graph, connected_only):
    candidates.append(graph)
  edit, seen = [], set()
  for g in candidates:
    k = vocab.graph_key(g)
    if k not in seen:
      seen.add(k)
      edit.append(g)
  weights = dict(zip(CATEGORIES, (p1, (1.0 - p1) / 2, (1.0 - p1) / 2)))
  pools = {c: [g for g in edit if _ELIGIBLE[c](g)] for c in CATEGORIES}
  live = {c: w for c, w in weights.items() if w > 0 and pools[c]}

  out: list[SubNegative] = []
  while len(out) < max_neg and live:
    category = _draw(live, rng)
    neg = None
    for source in _shuffled(pools[category], rng):
      neg = negatives.make_negative(source, CATEGORY_KINDS[category], rng, vocab,
                                    reject=refused)
      if neg is not None:
        break
    if neg is None:
      # Candidates only shrink as negatives are taken, so the category stays empty;
      # the redraw among the rest is the "next category" of make_negative's order.
      del live[category]
      continue
    out.append(SubNegative(neg.graph, category, neg.kind))
    taken.add(vocab.graph_key(neg.graph))
  return out, whole


# ------------------------------------------------------------------- example


@dataclasses.dataclass(frozen=True)
class MosaicExample:
  """The texts MosaiCLIP adds to one (image, caption) pair.

  Attributes:
    positives: Sub-captions (never the caption itself), at most ``max_pos``.
    negatives: Negative sub-captions, at most ``max_neg``.
    categories: The category (`CATEGORIES`) of each negative.
    whole_negative: The whole-caption swap negative, or None if none exists.
  """
  positives: tuple[str, ...]
  negatives: tuple[str, ...]
  categories: tuple[str, ...]
  whole_negative: str | None


def build_example(caption_graph: SceneGraph, rng: np.random.Generator, *,
                  vocab: negatives.Vocabulary, realise_fn: RealiseFn | None = None,
                  max_pos: int = 3, max_neg: int = 6, p1: float = 0.15,
                  reject: negatives.Reject | None = None, connected_only: bool = True,
                  sources: str = "subgraphs") -> MosaicExample:
  """`decompose`, then `mine_negatives`, then every graph as text.

  Args:
    caption_graph: The caption's scene graph.
    rng: Source of all randomness, used in a fixed order (reproducible).
    vocab: As for `mine_negatives`; e.g. `negatives.world_vocabulary()`.
    realise_fn: Graph -> text; `world_realise` on the world, None for
      `template_realiser` of ``vocab``.
    max_pos, max_neg, p1, reject, connected_only, sources: As for `decompose`
      and `mine_negatives`.

  Returns:
    The example's texts.
  """
  realise_fn = realise_fn or template_realiser(vocab)
  positives = decompose(caption_graph, rng, max_pos=max_pos,
                        connected_only=connected_only, vocab=vocab)
  negs, whole = mine_negatives(caption_graph, positives, rng, vocab, max_neg=max_neg,
                               p1=p1, reject=reject, connected_only=connected_only,
                               sources=sources)
  return MosaicExample(
      positives=tuple(realise_fn(g, rng) for g in positives),
      negatives=tuple(realise_fn(n.graph, rng) for n in negs),
      categories=tuple(n.category for n in negs),
      whole_negative=None if whole is None else realise_fn(whole.graph, rng))
