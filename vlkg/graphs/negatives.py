"""Hard negatives built in graph space: swaps and replacements of a scene graph.

Structure-CLIP (Huang et al., AAAI 2024) trains on negatives made from the caption's scene graph
by swapping attributes between two objects ("a red car and a white bus" -> "a white
car and a red bus") and by swapping the subject and object of a relation ("a man
riding a horse" -> "a horse riding a man"), skipping symmetric relations. MosaiCLIP
(MosaiCLIP, Singh et al., EMNLP 2023) adds replacements: of an attribute, of an object and of a relation.
Both require that a negative never equals the positive.

Every negative here is a function from a `SceneGraph` to a `SceneGraph`, turned into
text afterwards by `vlkg.graphs.realise.realise` (`Negative.text`). Each function
draws from the ``np.random.Generator`` it is given and returns ``None`` when the graph
has no negative of its kind (one object, no relation, all attributes equal, ...):
it never returns a fake. A candidate counts as a negative only if it

* differs from the positive under `SceneGraph.canonical` and under the stronger
  `graph_key` (`vlkg.graphs.meaning`: synonyms, converses, symmetric relations); and
* is not implied by the positive: "a red circle and a red circle" is true wherever
  "a red circle and a red square" is, so it is no negative of it.

The replacement words come from a `vlkg.graphs.vocabulary.Vocabulary`.

Word-order negatives (ARO's four shuffles) act on text, not graphs; `shuffle_words`
reuses ``vlkg.data.benchmarks.order``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from vlkg.data.benchmarks import order as order_lib
from vlkg.graphs.meaning import Meaning, SYMMETRIC_RELATIONS, Synonyms
from vlkg.graphs.realise import realise
from vlkg.graphs.scene_graph import SceneGraph
from vlkg.graphs.vocabulary import Reject, Vocabulary
# Re-exported: callers find every negative-making name in this module.
from vlkg.graphs.meaning import equivalent, graph_key, is_negative_of, synonym_sets  # noqa: F401
from vlkg.graphs.vocabulary import world_heldout_reject, world_vocabulary  # noqa: F401

SWAP_ATTRIBUTES = "swap_attributes"
SWAP_RELATION = "swap_relation"
REPLACE_ATTRIBUTE = "replace_attribute"
REPLACE_OBJECT = "replace_object"
REPLACE_RELATION = "replace_relation"
GRAPH_KINDS: tuple[str, ...] = (SWAP_ATTRIBUTES, SWAP_RELATION, REPLACE_ATTRIBUTE,
                                REPLACE_OBJECT, REPLACE_RELATION)
# ARO's word-order perturbations, in the official order (order.perturbations).
ORDER_KINDS: tuple[str, ...] = ("shuffle_nouns_and_adj", "shuffle_allbut_nouns_and_adj",
                                "shuffle_within_trigrams", "shuffle_trigrams")

KindOf = Mapping[str, str] | Callable[[str], str | None]


@dataclasses.dataclass(frozen=True)
class Negative:
  """A negative scene graph and the kind of edit that made it (one of GRAPH_KINDS)."""
  graph: SceneGraph
  kind: str

  def text(self, vocab: Vocabulary | None = None) -> str:
    """The negative as a caption; with ``vocab``, attributes follow its order."""
    if vocab is None:
      return realise(self.graph)
    return realise(self.graph, vocab.attribute_order, kind_of=vocab.attribute_kind)


# ------------------------------------------------------------------ search


def _shuffled(items: Sequence[Any], rng: np.random.Generator) -> list[Any]:
  return [items[k] for k in rng.permutation(len(items))]


def _search(g: SceneGraph, rng: np.random.Generator, kind: str, slots: Sequence[Any],
            options: Callable[[Any], Sequence[Any]],
            build: Callable[[Any, Any], SceneGraph | None], meaning: Meaning,
            reject: Reject | None) -> Negative | None:
  """The first acceptable candidate in a seeded random order, or None.

  A slot (an object pair, an attribute, a relation) is drawn first and an option
  for it second, so every slot is equally likely whatever its number of options;
  exhausting all of them before giving up is what makes None mean "none exists".
  """
  for slot in _shuffled(slots, rng):
    for option in _shuffled(options(slot), rng):
      h = build(slot, option)
      if h is None or not meaning.is_negative(h, g):
        continue
      if reject is not None and reject(h):
        continue
      return Negative(h, kind)
  return None


def _as_lookup(kind_of: KindOf | None) -> Callable[[str], str | None]:
  if kind_of is None:
    return lambda _: None
  if isinstance(kind_of, Mapping):
    return kind_of.get
  return kind_of


# ----------------------------------------------------------------- negatives


def _swap_attributes(g: SceneGraph, rng: np.random.Generator, meaning: Meaning,
                     lookup: Callable[[str], str | None],
                     reject: Reject | None) -> Negative | None:
  attrs = g.attributes
  n = len(g.objects)
  pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]

  def options(pair):
    i, j = pair
    return [(e, f) for e, (oi, _) in enumerate(attrs) if oi == i
            for f, (oj, _) in enumerate(attrs) if oj == j]

  def others(obj, skip):
    return {meaning.word(a) for k, (o, a) in enumerate(attrs) if o == obj and k != skip}

  def build(pair, option):
    i, j = pair
    e, f = option
    a, b = attrs[e][1], attrs[f][1]
    if meaning.same(a, b):
      return None
    ka, kb = lookup(a), lookup(b)
    if ka is not None and kb is not None and ka != kb:
      return None
    if meaning.word(b) in others(i, e) or meaning.word(a) in others(j, f):
      return None
    new = list(attrs)
    new[e], new[f] = (i, b), (j, a)
    return dataclasses.replace(g, attributes=tuple(new))

  return _search(g, rng, SWAP_ATTRIBUTES, pairs, options, build, meaning, reject)


def swap_attributes(g: SceneGraph, rng: np.random.Generator, *,
                    kind_of: KindOf | None = None, synonyms: Synonyms | None = None,
                    converse: Mapping[str, str] | None = None,
                    symmetric: Iterable[str] = SYMMETRIC_RELATIONS,
                    reject: Reject | None = None) -> Negative | None:
  """Swaps one attribute between two objects (Structure-CLIP, Huang et al., AAAI 2024; MosaiCLIP's f_attr, Singh et al., EMNLP 2023).

  "a red car and a white bus" -> "a white car and a red bus". Each of the two
  attribute entries keeps its place in ``g.attributes``; only the words trade.
  Skipped: equal attributes (or synonyms), attributes of two known, different kinds
  ("large" for "blue" would give a circle two colors), swaps that would give an
  object an attribute it already has, and swaps that give an equivalent or implied
  graph ("a red circle and a blue circle" has no attribute-swap negative).

  Args:
    g: The positive graph.
    rng: Source of randomness.
    kind_of: Attribute word -> kind (mapping or callable), e.g.
      ``vocab.attribute_kind``; None treats every kind as unknown.
    synonyms: Word -> synonyms, for equality and equivalence.
    converse: Relation -> converse, for equivalence.
    symmetric: Symmetric relations, for equivalence.
    reject: Returns True for a graph that must not be returned.

  Returns:
    ``Negative(graph, "swap_attributes")``, or None if none exists.
  """
  return _swap_attributes(g, rng, Meaning(synonyms, converse, symmetric),
                          _as_lookup(kind_of), reject)


def _swap_relation(g: SceneGraph, rng: np.random.Generator, meaning: Meaning,
                   reject: Reject | None) -> Negative | None:
  descs = meaning.descriptions(g)

  def build(k, _):
    s, p, o = g.relations[k]
    if meaning.word(p) in meaning.symmetric or descs[s] == descs[o]:
      return None
    new = list(g.relations)
    new[k] = (o, p, s)
    return dataclasses.replace(g, relations=tuple(new))

  return _search(g, rng, SWAP_RELATION, range(len(g.relations)), lambda _: (None,),
                 build, meaning, reject)


def swap_relation(g: SceneGraph, rng: np.random.Generator,
                  symmetric: Iterable[str] = SYMMETRIC_RELATIONS, *,
                  synonyms: Synonyms | None = None,
                  converse: Mapping[str, str] | None = None,
                  reject: Reject | None = None) -> Negative | None:
  """Swaps the subject and object of one relation (Structure-CLIP, Huang et al., AAAI 2024; MosaiCLIP's f_rel, Singh et al., EMNLP 2023).

  "a man riding a horse" -> "a horse riding a man"; the relation keeps its place in
  ``g.relations``. Skipped: symmetric relations (``symmetric``, default
  `SYMMETRIC_RELATIONS`), relations between two objects with the same description
  (a swap would say the same), and swaps that give an equivalent or implied graph.

  Args:
    g: The positive graph.
    rng: Source of randomness.
    symmetric: Relations never swapped; also symmetric when comparing graphs.
    synonyms: Word -> synonyms, for descriptions and equivalence.
    converse: Relation -> converse, for equivalence.
    reject: Returns True for a graph that must not be returned.

  Returns:
    ``Negative(graph, "swap_relation")``, or None if none exists.
  """
  return _swap_relation(g, rng, Meaning(synonyms, converse, symmetric), reject)


# How to read and write the one word of an item of each graph field.
_FIELD_WORD = {
    "attributes": (lambda item: item[1], lambda item, w: (item[0], w)),
    "objects": (lambda item: item, lambda item, w: w),
    "relations": (lambda item: item[1], lambda item, w: (item[0], w, item[2])),
}


def _replace(g: SceneGraph, rng: np.random.Generator, kind: str, field: str,
             meaning: Meaning, pool: Callable[[str], Sequence[str]],
             reject: Reject | None,
             taken: Callable[[int], set[str]] = lambda _: set()) -> Negative | None:
  """Replaces the word of one item of ``g.<field>`` by one of ``pool(word)``: never
  the word itself, a synonym of it, or a word in ``taken(index)``."""
  items = getattr(g, field)
  get, put = _FIELD_WORD[field]

  def options(k):
    word, banned = get(items[k]), taken(k)
    return [c for c in pool(word)
            if not meaning.same(c, word) and meaning.word(c) not in banned]

  def build(k, c):
    new = list(items)
    new[k] = put(items[k], c)
    return dataclasses.replace(g, **{field: tuple(new)})

  return _search(g, rng, kind, range(len(items)), options, build, meaning, reject)


def _same_kind(groups: Mapping[str, tuple[str, ...]], everything: tuple[str, ...],
               kinds: Mapping[str, str], meaning: Meaning) -> Callable[[str], Sequence[str]]:
  """The words of a word's own kind when it is known, else every word."""
  def pool(word):
    kind = kinds.get(meaning.word(word))
    return groups[kind] if kind is not None else everything
  return pool


def replace_attribute(g: SceneGraph, rng: np.random.Generator, vocab: Vocabulary, *,
                      synonyms: Synonyms | None = None,
                      reject: Reject | None = None) -> Negative | None:
  """Replaces one attribute from the vocabulary (MosaiCLIP's f_obj / f_attr, §3).

  "a large red circle" -> "a large blue circle". The new word is of the old one's
  kind when that is known, is never the old word or a synonym of it, and is not
  an attribute the object already has.

  Args:
    g: The positive graph.
    rng: Source of randomness.
    vocab: Where replacements come from.
    synonyms: Word -> synonyms; None uses ``vocab.synonyms``.
    reject: Returns True for a graph that must not be returned.

  Returns:
    ``Negative(graph, "replace_attribute")``, or None if none exists.
  """
  meaning, kinds, _ = vocab.kinds_under(synonyms)
  attrs = g.attributes

  def taken(e):
    i = attrs[e][0]
    return {meaning.word(x) for k, (o, x) in enumerate(attrs) if o == i and k != e}

  pool = _same_kind(vocab.attributes, vocab.all_attributes, kinds, meaning)
  return _replace(g, rng, REPLACE_ATTRIBUTE, "attributes", meaning, pool, reject, taken)


def replace_object(g: SceneGraph, rng: np.random.Generator, vocab: Vocabulary, *,
                   synonyms: Synonyms | None = None,
                   reject: Reject | None = None) -> Negative | None:
  """Replaces one object noun from the vocabulary (MosaiCLIP's f_rel, §3).

  "a red circle left of a square" -> "a red star left of a square". The new noun is
  of the old one's kind when known and never the old noun or a synonym of it.
  Arguments as for `replace_attribute`.

  Returns:
    ``Negative(graph, "replace_object")``, or None if none exists.
  """
  meaning, _, kinds = vocab.kinds_under(synonyms)
  pool = _same_kind(vocab.objects, vocab.all_objects, kinds, meaning)
  return _replace(g, rng, REPLACE_OBJECT, "objects", meaning, pool, reject)


def replace_relation(g: SceneGraph, rng: np.random.Generator, vocab: Vocabulary, *,
                     synonyms: Synonyms | None = None,
                     reject: Reject | None = None) -> Negative | None:
  """Replaces one relation predicate from the vocabulary (MosaiCLIP's f_rel, §3).

  "a circle left of a square" -> "a circle above a square"; never by the same
  predicate or a synonym of it ("to the left of"). Arguments as for
  `replace_attribute`.

  Returns:
    ``Negative(graph, "replace_relation")``, or None if none exists.
  """
  meaning, _, _ = vocab.kinds_under(synonyms)
  return _replace(g, rng, REPLACE_RELATION, "relations", meaning,
                  lambda _: vocab.relations, reject)


def make_negative(g: SceneGraph, kinds: Sequence[str], rng: np.random.Generator,
                  vocab: Vocabulary | None = None, *, p: Sequence[float] | None = None,
                  reject: Reject | None = None) -> Negative | None:
  """One negative of the first kind, in a seeded random order, that has one.

  With ``p``, the order is drawn like MosaiCLIP's category sampling (MosaiCLIP, Singh et al., EMNLP 2023):
  the first kind with probability proportional to its weight, the next among the
  rest, and so on; a kind of weight 0 is never tried. Without ``p`` all orders are
  equally likely.

  Args:
    g: The positive graph.
    kinds: Kinds to try, from `GRAPH_KINDS`.
    rng: Source of randomness.
    vocab: Synonyms, converses, symmetric relations and attribute kinds for every
      kind; the replacement words for the replace kinds. May be None only if
      ``kinds`` holds swaps alone (no synonyms are then known).
    p: Optional non-negative weight per kind.
    reject: Returns True for a graph that must not be returned, e.g.
      `world_heldout_reject` for training data; honoured inside each kind too, so
      a rejected candidate makes the search go on rather than fail.

  Returns:
    The negative, or None if no kind has one that ``reject`` allows.

  Raises:
    ValueError: For an unknown kind, a replace kind without ``vocab``, or bad ``p``.
  """
  kinds = list(kinds)
  for kind in kinds:
    if kind not in GRAPH_KINDS:
      raise ValueError(f"unknown negative kind {kind!r}; expected one of {GRAPH_KINDS}")
    if vocab is None and kind.startswith("replace_"):
      raise ValueError(f"negative kind {kind!r} needs a vocabulary")
  if p is None:
    order = [kinds[k] for k in rng.permutation(len(kinds))]
  else:
    w = np.asarray(p, dtype=np.float64)
    if w.shape != (len(kinds),) or np.any(w < 0) or not np.all(np.isfinite(w)):
      raise ValueError(f"p must be {len(kinds)} non-negative weights, got {list(p)}")
    live = np.flatnonzero(w > 0)
    if live.size == 0:
      return None
    picks = rng.choice(live.size, size=live.size, replace=False, p=w[live] / w[live].sum())
    order = [kinds[live[k]] for k in picks]

  if vocab is None:
    meaning, lookup = Meaning(None, None, SYMMETRIC_RELATIONS), _as_lookup(None)
  else:
    meaning, lookup = vocab.meaning, vocab.attribute_kind
  for kind in order:
    if kind == SWAP_ATTRIBUTES:
      neg = _swap_attributes(g, rng, meaning, lookup, reject)
    elif kind == SWAP_RELATION:
      neg = _swap_relation(g, rng, meaning, reject)
    elif kind == REPLACE_ATTRIBUTE:
      neg = replace_attribute(g, rng, vocab, reject=reject)
    elif kind == REPLACE_OBJECT:
      neg = replace_object(g, rng, vocab, reject=reject)
    else:
      neg = replace_relation(g, rng, vocab, reject=reject)
    if neg is not None:
      return neg
  return None


# -------------------------------------------------------------- word order


def shuffle_words(text: str, tagger: order_lib.Tagger, rng: np.random.Generator,
                  kind: str | None = None, *,
                  tokenize: order_lib.Tokenizer = order_lib.simple_tokenize,
                  max_tries: int = 64) -> list[str] | str | None:
  """ARO-style word-order negatives of a caption (``vlkg.data.benchmarks.order``).

  Args:
    text: The caption.
    tagger: Noun/adjective tagger for one token (see ``order.perturbations``), e.g.
      ``vlkg.data.world.suites.world_tag``.
    rng: Source of randomness.
    kind: None for all four perturbations; or one of `ORDER_KINDS`.
    tokenize: Tokenizer; default ``order.simple_tokenize``.
    max_tries: Draws of the chosen kind before giving up.

  Returns:
    With ``kind=None``: the four perturbations exactly as ``order.perturbations``
    gives them (as in ARO, one may happen to equal the caption). With a kind: that
    perturbation as text, redrawn until its tokens differ from the caption's, or
    None if ``max_tries`` draws never differ (always so when no shuffle of that kind
    can change the caption, e.g. a one-word caption).

  Raises:
    ValueError: For an unknown kind.
  """
  if kind is None:
    return order_lib.perturbations(text, tagger, rng, tokenize=tokenize)
  shufflers = {
      "shuffle_nouns_and_adj": lambda t: order_lib.shuffle_nouns_and_adj(t, tagger, rng),
      "shuffle_allbut_nouns_and_adj":
          lambda t: order_lib.shuffle_allbut_nouns_and_adj(t, tagger, rng),
      "shuffle_within_trigrams": lambda t: order_lib.shuffle_within_trigrams(t, rng),
      "shuffle_trigrams": lambda t: order_lib.shuffle_trigrams(t, rng),
  }
  if kind not in shufflers:
    raise ValueError(f"unknown order kind {kind!r}; expected one of {ORDER_KINDS}")
  tokens = list(tokenize(text))
  for _ in range(max_tries):
    out = shufflers[kind](tokens)
    if out != tokens:
      return " ".join(out)
  return None
