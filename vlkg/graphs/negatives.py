"""Hard negatives built in graph space: swaps and replacements of a scene graph.

Structure-CLIP (PAPERS.md §1) trains on negatives made from the caption's scene graph
by swapping attributes between two objects ("a red car and a white bus" -> "a white
car and a red bus") and by swapping the subject and object of a relation ("a man
riding a horse" -> "a horse riding a man"), skipping symmetric relations. MosaiCLIP
(PAPERS.md §3) adds replacements: of an attribute, of an object and of a relation.
Both require that a negative never equals the positive.

Every negative here is a function from a `SceneGraph` to a `SceneGraph`, turned into
text afterwards by `vlkg.graphs.realise.realise` (`Negative.text`). Each function
draws from the ``np.random.Generator`` it is given and returns ``None`` when the graph
has no negative of its kind (one object, no relation, all attributes equal, ...):
it never returns a fake. A candidate counts as a negative only if it

* differs from the positive under `SceneGraph.canonical` and under the stronger
  `graph_key`, which also maps synonyms to one word, writes a relation and its
  converse ("left of" / "right of") one way, and ignores the direction of symmetric
  relations; and
* is not implied by the positive: its clauses (object descriptions and relation
  facts, read existentially as the world's captions are, see
  ``vlkg.data.world.captions.caption_value``) are not all clauses of the positive.
  "a red circle and a red circle" is true wherever "a red circle and a red square"
  is, so it is no negative of it.

Word-order negatives (ARO's four shuffles) act on text, not graphs; `shuffle_words`
reuses ``vlkg.data.benchmarks.order``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from vlkg.data.benchmarks import order as order_lib
from vlkg.data.world import ontology
from vlkg.graphs.realise import WORLD_ATTRIBUTE_ORDER, realise
from vlkg.graphs.scene_graph import SceneGraph

# Relations whose subject and object can trade places without changing the meaning.
# Structure-CLIP skips them when swapping (PAPERS.md §1); so do ARO's VG-Relation
# numbers. A default for English captions; pass your own set to override it.
SYMMETRIC_RELATIONS: frozenset[str] = frozenset({
    "next to", "near", "near to", "nearby", "beside", "by", "with", "close to",
    "across from", "opposite", "opposite to", "opposite of", "adjacent to",
    "alongside", "touching", "in contact with", "side by side with",
})

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

Reject = Callable[[SceneGraph], bool]
KindOf = Mapping[str, str] | Callable[[str], str | None]
Synonyms = Mapping[str, Iterable[str]]


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


# ------------------------------------------------------------------ meaning


def _representatives(synonyms: Synonyms | None) -> dict[str, str]:
  """Word -> one word of its synonym class (the smallest), closed transitively.

  A union-find, so that a table that lists "big" -> {"large"} but not the reverse,
  or chains of synonyms, still puts every word of a class on one representative.
  """
  parent: dict[str, str] = {}

  def find(w: str) -> str:
    parent.setdefault(w, w)
    while parent[w] != w:
      parent[w] = parent[parent[w]]
      w = parent[w]
    return w

  for word, others in (synonyms or {}).items():
    for other in others:
      a, b = find(word), find(other)
      if a != b:
        # Rooting at the smaller word keeps each root the minimum of its class.
        parent[max(a, b)] = min(a, b)
  return {w: find(w) for w in list(parent)}


class _Meaning:
  """What makes two graphs say the same thing: synonyms, converses, symmetry."""

  def __init__(self, synonyms: Synonyms | None, converse: Mapping[str, str] | None,
               symmetric: Iterable[str]):
    self._rep = _representatives(synonyms)
    conv = {self.word(k): self.word(v) for k, v in (converse or {}).items()}
    # Two-way, so that a table naming only "left of" -> "right of" still reads
    # "b right of a" as "a left of b".
    conv.update({v: k for k, v in conv.items() if v not in conv})
    self.converse = conv
    self.symmetric = frozenset(self.word(p) for p in symmetric)

  def word(self, w: str) -> str:
    return self._rep.get(w, w)

  def same(self, a: str, b: str) -> bool:
    return self.word(a) == self.word(b)

  def descriptions(self, g: SceneGraph) -> list[tuple[str, tuple[str, ...]]]:
    # A set of attributes: "a red red circle" says no more than "a red circle".
    return [(self.word(name), tuple(sorted({self.word(a) for a in g.attributes_of(i)})))
            for i, name in enumerate(g.objects)]

  def fact(self, ds: Any, p: str, do: Any) -> tuple:
    p = self.word(p)
    if p in self.symmetric:
      return (min(ds, do), p, max(ds, do))
    q = self.converse.get(p)
    if q is not None:
      return min((ds, p, do), (do, q, ds))
    return (ds, p, do)

  def key(self, g: SceneGraph) -> tuple:
    descs = self.descriptions(g)
    facts = [self.fact(descs[s], p, descs[o]) for s, p, o in g.relations]
    return (tuple(sorted(descs)), tuple(sorted(facts)))

  def is_negative(self, neg: SceneGraph, pos: SceneGraph) -> bool:
    if neg.canonical() == pos.canonical():
      return False
    kn, kp = self.key(neg), self.key(pos)
    if kn == kp:
      return False
    implied = set(kn[0]) <= set(kp[0]) and set(kn[1]) <= set(kp[1])
    return not implied


def graph_key(g: SceneGraph, *, synonyms: Synonyms | None = None,
              converse: Mapping[str, str] | None = None,
              symmetric: Iterable[str] = SYMMETRIC_RELATIONS) -> tuple:
  """A key equal for graphs that say the same thing (PAPERS.md §1: never equal).

  Extends `SceneGraph.canonical`: words are mapped to one word of their synonym
  class, an object's attributes are a set, a relation with a converse is written in
  one fixed direction, and a symmetric relation in one fixed order.

  Args:
    g: The graph.
    synonyms: Word -> its synonyms; None for none.
    converse: Relation -> its converse, e.g. ``ontology.CONVERSE``; None for none.
    symmetric: Relations whose direction does not matter.

  Returns:
    A hashable, comparable key.
  """
  return _Meaning(synonyms, converse, symmetric).key(g)


def equivalent(a: SceneGraph, b: SceneGraph, **meaning: Any) -> bool:
  """Whether two graphs have the same `graph_key` (same keyword arguments)."""
  return graph_key(a, **meaning) == graph_key(b, **meaning)


def is_negative_of(neg: SceneGraph, pos: SceneGraph, *, synonyms: Synonyms | None = None,
                   converse: Mapping[str, str] | None = None,
                   symmetric: Iterable[str] = SYMMETRIC_RELATIONS) -> bool:
  """Whether ``neg`` is neither equivalent to nor implied by ``pos``.

  Implied means every object description and every relation fact of ``neg`` (after
  `graph_key`'s normalisation) is one of ``pos``: read existentially, ``neg`` is then
  true of every image of which ``pos`` is true.
  """
  return _Meaning(synonyms, converse, symmetric).is_negative(neg, pos)


# --------------------------------------------------------------- vocabulary


def synonym_sets(groups: Synonyms | Iterable[Iterable[str]]) -> dict[str, frozenset[str]]:
  """Normalises synonyms to word -> every other word of its (transitive) class.

  Args:
    groups: Either a mapping word -> synonyms, or an iterable of groups of words
      that mean the same (``[("large", "big"), ("small", "little", "tiny")]``).

  Returns:
    A dict with an entry for every word named.
  """
  if isinstance(groups, Mapping):
    table = groups
  else:
    table = {}
    for group in groups:
      group = list(group)
      for w in group:
        table.setdefault(w, set()).update(group)
  rep = _representatives(table)
  classes: dict[str, set[str]] = {}
  for w, r in rep.items():
    classes.setdefault(r, set()).add(w)
  return {w: frozenset(classes[r] - {w}) for w, r in rep.items()}


def _kinds_table(groups: Mapping[str, Sequence[str]], meaning: _Meaning) -> dict[str, str]:
  # Keyed by representative, so that a synonym ("big") finds the kind of the word
  # the vocabulary lists ("large").
  out: dict[str, str] = {}
  for kind, words in groups.items():
    for w in words:
      out.setdefault(meaning.word(w), kind)
  return out


def _unique(words: Iterable[str]) -> tuple[str, ...]:
  return tuple(dict.fromkeys(words))


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Words to replace from (MosaiCLIP, PAPERS.md §3), grouped by kind.

  An attribute is replaced only by one of its own kind (a color by a color) and an
  object only by one of its own kind, when the kind is known; otherwise by any.

  Attributes:
    objects: kind -> object nouns, e.g. ``{"shape": ("circle", ...)}``.
    attributes: kind -> attribute words, e.g. ``{"size": ("small", "large"), ...}``.
    relations: Relation predicates.
    synonyms: word -> words that mean the same; a word is never replaced by one of
      them and they count as equal when graphs are compared.
    converse: relation -> its converse ("left of" -> "right of").
    symmetric: relations whose direction does not matter.
    attribute_order: attribute kinds in saying order for `Negative.text`.
  """
  objects: Mapping[str, tuple[str, ...]]
  attributes: Mapping[str, tuple[str, ...]]
  relations: tuple[str, ...]
  synonyms: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
  converse: Mapping[str, str] = dataclasses.field(default_factory=dict)
  symmetric: frozenset[str] = SYMMETRIC_RELATIONS
  attribute_order: tuple[str, ...] | None = None

  @classmethod
  def from_lists(cls, objects: Iterable[str] | Mapping[str, Iterable[str]],
                 attributes: Iterable[str] | Mapping[str, Iterable[str]],
                 relations: Iterable[str],
                 synonyms: Synonyms | Iterable[Iterable[str]] = (),
                 converse: Mapping[str, str] | None = None,
                 symmetric: Iterable[str] = SYMMETRIC_RELATIONS,
                 attribute_order: Sequence[str] | None = None) -> Vocabulary:
    """A vocabulary from plain word lists, e.g. for general (non-world) captions.

    Args:
      objects: Nouns, or kind -> nouns. A plain list is one kind, "object".
      attributes: Attribute words, or kind -> words. A plain list is one kind,
        "attribute", so any attribute may replace any other.
      relations: Predicates.
      synonyms: A mapping word -> synonyms or groups of synonyms (`synonym_sets`).
      converse: Relation -> converse; made two-way here.
      symmetric: Symmetric relations.
      attribute_order: Attribute kinds in saying order, or None.

    Returns:
      The vocabulary.
    """
    def grouped(words, default_kind):
      if isinstance(words, Mapping):
        return {k: _unique(v) for k, v in words.items()}
      return {default_kind: _unique(words)}

    conv = dict(converse or {})
    conv.update({v: k for k, v in conv.items() if v not in conv})
    return cls(objects=grouped(objects, "object"),
               attributes=grouped(attributes, "attribute"),
               relations=_unique(relations), synonyms=synonym_sets(synonyms),
               converse=conv, symmetric=frozenset(symmetric),
               attribute_order=None if attribute_order is None else tuple(attribute_order))

  # Cached because building the synonym classes per call would dominate the cost of
  # making negatives for a whole data set.
  @functools.cached_property
  def _meaning(self) -> _Meaning:
    return _Meaning(self.synonyms, self.converse, self.symmetric)

  @functools.cached_property
  def _attribute_kinds(self) -> dict[str, str]:
    return _kinds_table(self.attributes, self._meaning)

  @functools.cached_property
  def _object_kinds(self) -> dict[str, str]:
    return _kinds_table(self.objects, self._meaning)

  def attribute_kind(self, word: str) -> str | None:
    """The kind of an attribute word or of a synonym of one; None if unknown."""
    return self._attribute_kinds.get(self._meaning.word(word))

  def object_kind(self, word: str) -> str | None:
    """The kind of an object noun or of a synonym of one; None if unknown."""
    return self._object_kinds.get(self._meaning.word(word))

  def graph_key(self, g: SceneGraph) -> tuple:
    """`graph_key` under this vocabulary's synonyms, converses and symmetric relations.

    Equal to ``graph_key(g, synonyms=self.synonyms, converse=self.converse,
    symmetric=self.symmetric)``, but with the synonym classes built once: callers that
    deduplicate many graphs (MosaiCLIP's sub-graphs, ``vlkg.graphs.decompose``) would
    otherwise spend most of their time rebuilding them (about 20x per call).
    """
    return self._meaning.key(g)

  @property
  def all_attributes(self) -> tuple[str, ...]:
    return _unique(w for words in self.attributes.values() for w in words)

  @property
  def all_objects(self) -> tuple[str, ...]:
    return _unique(w for words in self.objects.values() for w in words)


def world_vocabulary(surface_forms: bool = False) -> Vocabulary:
  """The synthetic world's vocabulary (``vlkg.data.world.ontology``).

  Attributes are grouped by ``ontology.VALUES_OF_KIND`` (size, color, texture),
  objects are the shapes, relations the world's predicates with ``ontology.CONVERSE``.
  A synonym class holds a concept's surface forms and its knowledge aliases: an
  alias names the same concept, so "red" -> "scarlet" would be a fake negative.

  Args:
    surface_forms: Also offer the training synonyms ("big", "disc", "to the left
      of") as replacements; by default only the canonical words, which is what a
      graph with canonical words wants.

  Returns:
    The vocabulary; ``attribute_order`` is the world's (size, color, texture).
  """
  def forms(concept):
    return ontology.surface_forms(concept) if surface_forms else (concept,)

  groups = []
  for shape in ontology.SHAPES:
    groups.append(ontology.surface_forms(shape.name) + shape.aliases)
  for color in ontology.COLORS:
    groups.append(ontology.surface_forms(color.name) + color.aliases)
  for concept in (*ontology.SIZES, *ontology.TEXTURES, *ontology.RELATIONS):
    groups.append(ontology.surface_forms(concept))
  return Vocabulary.from_lists(
      objects={"shape": [f for s in ontology.SHAPES for f in forms(s.name)]},
      attributes={kind: [f for v in values for f in forms(v)]
                  for kind, values in ontology.VALUES_OF_KIND.items()},
      relations=[f for r in ontology.RELATIONS for f in forms(r)],
      synonyms=groups, converse=ontology.CONVERSE,
      attribute_order=WORLD_ATTRIBUTE_ORDER)


def world_heldout_reject(heldout_pairs: Iterable[tuple[str, str]]) -> Reject:
  """A `make_negative` reject hook that forbids held-out (color, shape) pairs.

  Training must never show a ``test_comp`` pair, not even in a negative, or the
  compositional split stops testing composition. Words are mapped to the world's
  concepts first, so "a teal disc" counts as ("cyan", "circle").

  Args:
    heldout_pairs: (color, shape) pairs, canonical words (``WorldSpec.heldout_pairs``).

  Returns:
    ``reject(graph)``: True when some object of the graph has a held-out pair.
  """
  pairs = frozenset((c, s) for c, s in heldout_pairs)
  concept = dict(ontology.lexicon())
  for item in (*ontology.SHAPES, *ontology.COLORS):
    for alias in item.aliases:
      concept.setdefault(alias, item.name)

  def reject(g: SceneGraph) -> bool:
    for i, name in enumerate(g.objects):
      shape = concept.get(name, name)
      if any((concept.get(a, a), shape) in pairs for a in g.attributes_of(i)):
        return True
    return False

  return reject


# ------------------------------------------------------------------ search


def _shuffled(items: Sequence[Any], rng: np.random.Generator) -> list[Any]:
  return [items[k] for k in rng.permutation(len(items))]


def _search(g: SceneGraph, rng: np.random.Generator, kind: str, slots: Sequence[Any],
            options: Callable[[Any], Sequence[Any]],
            build: Callable[[Any, Any], SceneGraph | None], meaning: _Meaning,
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


def _swap_attributes(g: SceneGraph, rng: np.random.Generator, meaning: _Meaning,
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
  """Swaps one attribute between two objects (PAPERS.md §1; MosaiCLIP's f_attr, §3).

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
  return _swap_attributes(g, rng, _Meaning(synonyms, converse, symmetric),
                          _as_lookup(kind_of), reject)


def _swap_relation(g: SceneGraph, rng: np.random.Generator, meaning: _Meaning,
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
  """Swaps the subject and object of one relation (PAPERS.md §1; f_rel, §3).

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
  return _swap_relation(g, rng, _Meaning(synonyms, converse, symmetric), reject)


def _vocab_meaning(vocab: Vocabulary, synonyms: Synonyms | None
                   ) -> tuple[_Meaning, dict[str, str], dict[str, str]]:
  """The meaning to compare with, and the attribute and object kind tables under it."""
  if synonyms is None:
    return vocab._meaning, vocab._attribute_kinds, vocab._object_kinds
  meaning = _Meaning(synonyms, vocab.converse, vocab.symmetric)
  return (meaning, _kinds_table(vocab.attributes, meaning),
          _kinds_table(vocab.objects, meaning))


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
  meaning, kinds, _ = _vocab_meaning(vocab, synonyms)
  attrs = g.attributes

  def options(e):
    i, a = attrs[e]
    kind = kinds.get(meaning.word(a))
    pool = vocab.attributes[kind] if kind is not None else vocab.all_attributes
    taken = {meaning.word(x) for k, (o, x) in enumerate(attrs) if o == i and k != e}
    return [c for c in pool if not meaning.same(c, a) and meaning.word(c) not in taken]

  def build(e, c):
    new = list(attrs)
    new[e] = (attrs[e][0], c)
    return dataclasses.replace(g, attributes=tuple(new))

  return _search(g, rng, REPLACE_ATTRIBUTE, range(len(attrs)), options, build, meaning,
                 reject)


def replace_object(g: SceneGraph, rng: np.random.Generator, vocab: Vocabulary, *,
                   synonyms: Synonyms | None = None,
                   reject: Reject | None = None) -> Negative | None:
  """Replaces one object noun from the vocabulary (MosaiCLIP's f_rel, §3).

  "a red circle left of a square" -> "a red star left of a square". The new noun is
  of the old one's kind when known and never the old noun or a synonym of it.

  Args:
    g: The positive graph.
    rng: Source of randomness.
    vocab: Where replacements come from.
    synonyms: Word -> synonyms; None uses ``vocab.synonyms``.
    reject: Returns True for a graph that must not be returned.

  Returns:
    ``Negative(graph, "replace_object")``, or None if none exists.
  """
  meaning, _, kinds = _vocab_meaning(vocab, synonyms)

  def options(i):
    name = g.objects[i]
    kind = kinds.get(meaning.word(name))
    pool = vocab.objects[kind] if kind is not None else vocab.all_objects
    return [c for c in pool if not meaning.same(c, name)]

  def build(i, c):
    new = list(g.objects)
    new[i] = c
    return dataclasses.replace(g, objects=tuple(new))

  return _search(g, rng, REPLACE_OBJECT, range(len(g.objects)), options, build, meaning,
                 reject)


def replace_relation(g: SceneGraph, rng: np.random.Generator, vocab: Vocabulary, *,
                     synonyms: Synonyms | None = None,
                     reject: Reject | None = None) -> Negative | None:
  """Replaces one relation predicate from the vocabulary (MosaiCLIP's f_rel, §3).

  "a circle left of a square" -> "a circle above a square"; never by the same
  predicate or a synonym of it ("to the left of").

  Args:
    g: The positive graph.
    rng: Source of randomness.
    vocab: Where replacements come from.
    synonyms: Word -> synonyms; None uses ``vocab.synonyms``.
    reject: Returns True for a graph that must not be returned.

  Returns:
    ``Negative(graph, "replace_relation")``, or None if none exists.
  """
  meaning, _, _ = _vocab_meaning(vocab, synonyms)

  def options(k):
    p = g.relations[k][1]
    return [c for c in vocab.relations if not meaning.same(c, p)]

  def build(k, c):
    s, _, o = g.relations[k]
    new = list(g.relations)
    new[k] = (s, c, o)
    return dataclasses.replace(g, relations=tuple(new))

  return _search(g, rng, REPLACE_RELATION, range(len(g.relations)), options, build,
                 meaning, reject)


def make_negative(g: SceneGraph, kinds: Sequence[str], rng: np.random.Generator,
                  vocab: Vocabulary | None = None, *, p: Sequence[float] | None = None,
                  reject: Reject | None = None) -> Negative | None:
  """One negative of the first kind, in a seeded random order, that has one.

  With ``p``, the order is drawn like MosaiCLIP's category sampling (PAPERS.md §3):
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
    meaning, lookup = _Meaning(None, None, SYMMETRIC_RELATIONS), _as_lookup(None)
  else:
    meaning, lookup = vocab._meaning, vocab.attribute_kind
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
