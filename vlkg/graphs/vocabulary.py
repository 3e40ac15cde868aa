"""Words to replace from, grouped by kind, and the synthetic world's vocabulary.

MosaiCLIP (Singh et al., "Coarse-to-Fine Contrastive Learning in Image-Text-Graph
Space for Improved Vision-Language Compositionality", EMNLP 2023, negatives in graph
space) makes negatives by replacing an attribute, an object or a relation; a `Vocabulary` says which words may replace which (a color by a color),
which words are synonyms (never a replacement, and equal when graphs are compared),
and how relations turn around. `world_heldout_reject` keeps the world's held-out
(color, shape) pairs out of every training negative.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

from vlkg.data.world import ontology
from vlkg.graphs.meaning import SYMMETRIC_RELATIONS, Meaning, Synonyms, synonym_sets
from vlkg.graphs.realise import WORLD_ATTRIBUTE_ORDER
from vlkg.graphs.scene_graph import SceneGraph

# Returns True for a graph that must never be used as a negative.
Reject = Callable[[SceneGraph], bool]


def _kinds_table(groups: Mapping[str, Sequence[str]], meaning: Meaning) -> dict[str, str]:
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
  """Words to replace from (MosaiCLIP, EMNLP 2023), grouped by kind.

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
  def meaning(self) -> Meaning:
    """This vocabulary's synonyms, converses and symmetric relations."""
    return Meaning(self.synonyms, self.converse, self.symmetric)

  @functools.cached_property
  def _attribute_kinds(self) -> dict[str, str]:
    return _kinds_table(self.attributes, self.meaning)

  @functools.cached_property
  def _object_kinds(self) -> dict[str, str]:
    return _kinds_table(self.objects, self.meaning)

  def kinds_under(self, synonyms: Synonyms | None = None
                  ) -> tuple[Meaning, dict[str, str], dict[str, str]]:
    """The meaning to compare with, and the attribute and object kind tables under
    it: this vocabulary's own (built once), or those of other ``synonyms``."""
    if synonyms is None:
      return self.meaning, self._attribute_kinds, self._object_kinds
    meaning = Meaning(synonyms, self.converse, self.symmetric)
    return (meaning, _kinds_table(self.attributes, meaning),
            _kinds_table(self.objects, meaning))

  def attribute_kind(self, word: str) -> str | None:
    """The kind of an attribute word or of a synonym of one; None if unknown."""
    return self._attribute_kinds.get(self.meaning.word(word))

  def object_kind(self, word: str) -> str | None:
    """The kind of an object noun or of a synonym of one; None if unknown."""
    return self._object_kinds.get(self.meaning.word(word))

  def graph_key(self, g: SceneGraph) -> tuple:
    """`graph_key` under this vocabulary's synonyms, converses and symmetric relations.

    Equal to ``graph_key(g, synonyms=self.synonyms, converse=self.converse,
    symmetric=self.symmetric)``, but with the synonym classes built once: callers that
    deduplicate many graphs (MosaiCLIP's sub-graphs, ``vlkg.graphs.decompose``) would
    otherwise spend most of their time rebuilding them (about 20x per call).
    """
    return self.meaning.key(g)

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

