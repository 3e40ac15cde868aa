"""Template realisation of a scene graph as text.

Graph-space negatives (Structure-CLIP, Huang et al., AAAI 2024; MosaiCLIP, Singh et al., EMNLP 2023) are edits of a
scene graph; the text encoder needs them as captions. MosaiCLIP realises its
sub-graphs with templates ("{attr} {obj} {rel} {attr} {obj}", §3), and so does this
module, in the same surface form as the synthetic world's own captions
(``vlkg.data.world.captions.realise`` with ``rng=None``):

* an object is "a/an <attributes> <noun>";
* a relation is "<subject phrase> <predicate> <object phrase>";
* an object that takes part in no relation is a noun phrase of its own;
* clauses are joined with ", " and a final " and ".

For a world graph written with canonical words this is the world's canonical
wording, which is what the world parser reads back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

from vlkg.data.world import captions as world_captions
from vlkg.data.world import ontology
from vlkg.graphs.scene_graph import SceneGraph

# English adjective order of the world's attribute kinds (size, color, texture).
WORLD_ATTRIBUTE_ORDER: tuple[str, ...] = world_captions.ATTRIBUTE_ORDER

KindOf = Mapping[str, str] | Callable[[str], str | None]


@functools.cache
def world_kind_of() -> dict[str, str]:
  """Every world attribute word (canonical, synonym or alias) -> its kind.

  Returns:
    A dict such as ``{"large": "size", "big": "size", "teal": "color", ...}``.
  """
  out = {}
  for form, concept in ontology.lexicon().items():
    if concept in ontology.KIND_OF_VALUE:
      out[form] = ontology.KIND_OF_VALUE[concept]
  # Aliases never reach a training caption, but knowledge captions say them and
  # must still be ordered like the colors they stand for.
  for color in ontology.COLORS:
    for alias in color.aliases:
      out.setdefault(alias, "color")
  return out


def _lookup(kind_of: KindOf | None) -> Callable[[str], str | None]:
  if kind_of is None:
    table = world_kind_of()
    return table.get
  if isinstance(kind_of, Mapping):
    return kind_of.get
  return kind_of


def noun_phrase(g: SceneGraph, i: int, attribute_order: Sequence[str] | None = None,
                kind_of: KindOf | None = None) -> str:
  """The indefinite noun phrase of object ``i``: "a large red circle".

  Args:
    g: The graph.
    i: Index of the object.
    attribute_order: Attribute kinds in the order they are said; attributes of an
      unknown kind, or of a kind not listed, follow the listed ones in graph order.
      None keeps the graph's order.
    kind_of: Attribute word -> kind (a mapping or a callable returning None when
      unknown); None uses the world's lookup (`world_kind_of`).

  Returns:
    The phrase, with "an" before a vowel as the world's captions write it.
  """
  attrs = list(g.attributes_of(i))
  if attribute_order is not None:
    rank = {kind: n for n, kind in enumerate(attribute_order)}
    lookup = _lookup(kind_of)
    # sorted() is stable, so unranked attributes keep the order the graph gives.
    attrs.sort(key=lambda a: rank.get(lookup(a), len(rank)))
  text = " ".join([*attrs, g.objects[i]])
  return f"{world_captions.article(text)} {text}"


def realise(g: SceneGraph, attribute_order: Sequence[str] | None = None, *,
            kind_of: KindOf | None = None) -> str:
  """Realises a scene graph as a caption with fixed templates.

  Clauses are ordered by the first object they mention (a relation by the smaller of
  its two indices, ties in relation order), so a graph whose objects are numbered by
  first mention, as a parser numbers them, is written with its objects in index
  order. For example, with ``attribute_order=WORLD_ATTRIBUTE_ORDER``::

    objects ("circle", "square", "star"),
    attributes ((0, "red"), (0, "large"), (1, "blue")),
    relations ((0, "left of", 1),)
    -> "a large red circle left of a blue square and a star"

  Args:
    g: A non-empty scene graph.
    attribute_order: Attribute kinds in saying order, e.g. `WORLD_ATTRIBUTE_ORDER`;
      None keeps each object's attributes in graph order.
    kind_of: Attribute word -> kind, used with ``attribute_order``; None uses the
      world's lookup.

  Returns:
    The caption, e.g. "a red circle, a blue square left of a green star and a star".

  Raises:
    ValueError: If the graph has no objects (there is nothing to say).
  """
  if g.is_empty():
    raise ValueError("cannot realise an empty scene graph")
  phrases = [noun_phrase(g, i, attribute_order, kind_of) for i in range(len(g.objects))]
  in_relation = {i for s, _, o in g.relations for i in (s, o)}
  keyed = [((min(s, o), k), f"{phrases[s]} {p} {phrases[o]}")
           for k, (s, p, o) in enumerate(g.relations)]
  keyed += [((i, -1), phrases[i]) for i in range(len(g.objects)) if i not in in_relation]
  parts = [text for _, text in sorted(keyed)]
  if len(parts) == 1:
    return parts[0]
  return ", ".join(parts[:-1]) + " and " + parts[-1]
