"""The vocabulary of the synthetic world: shapes, colors, sizes, textures, relations.

Everything that the sampler, the renderer, the caption realiser, the knowledge graph
and the semantics checker agree on lives here, so that there is exactly one source of
truth for what a word means in the world.

Words are split into three groups per concept:
  * ``name``: the canonical word, used in the scene graph;
  * ``synonyms``: other words that training captions use for the same concept;
  * ``aliases``: words that only the knowledge graph knows. They never occur in a
    training caption, so a model can only learn them through knowledge (Knowledge-CLIP, Pan et al., NeurIPS 2022; REAVL, Rao et al., ACM MM 2023).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Shape:
  name: str
  corners: int  # number of convex+concave corners of the outline; 0 for round shapes
  synonyms: tuple[str, ...] = ()
  aliases: tuple[str, ...] = ()

  @property
  def is_round(self) -> bool:
    return self.corners == 0


@dataclasses.dataclass(frozen=True)
class Color:
  name: str
  rgb: tuple[int, int, int]
  family: str  # "warm" or "cool"
  synonyms: tuple[str, ...] = ()
  aliases: tuple[str, ...] = ()


SHAPES: tuple[Shape, ...] = (
    Shape("circle", 0, synonyms=("disc",), aliases=("roundel",)),
    Shape("ellipse", 0, synonyms=("oval",), aliases=("ovoid",)),
    Shape("triangle", 3, synonyms=(), aliases=("trigon",)),
    Shape("square", 4, synonyms=(), aliases=("quadrate",)),
    Shape("diamond", 4, synonyms=("rhombus",), aliases=("lozenge",)),
    Shape("pentagon", 5, aliases=("five-gon",)),
    Shape("hexagon", 6, aliases=("six-gon",)),
    Shape("star", 10, aliases=("pentagram",)),
    Shape("cross", 12, synonyms=("plus",), aliases=("crux",)),
)

COLORS: tuple[Color, ...] = (
    Color("red", (214, 39, 40), "warm", aliases=("scarlet",)),
    Color("orange", (245, 130, 20), "warm", aliases=("tangerine",)),
    Color("yellow", (235, 205, 30), "warm", aliases=("amber",)),
    Color("pink", (240, 120, 190), "warm", aliases=("rose",)),
    Color("green", (44, 160, 44), "cool", aliases=("emerald",)),
    Color("cyan", (30, 200, 210), "cool", synonyms=("teal",), aliases=("turquoise",)),
    Color("blue", (31, 90, 220), "cool", aliases=("azure",)),
    Color("purple", (140, 60, 190), "cool", synonyms=("violet",), aliases=("lilac",)),
)

SIZES: tuple[str, ...] = ("small", "large")
SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {"small": ("little", "tiny"), "large": ("big",)}

# A fourth attribute. "solid" is the unmarked default and is only sometimes said.
TEXTURES: tuple[str, ...] = ("solid", "striped", "hollow")
TEXTURE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "solid": ("filled",), "striped": ("stripy",), "hollow": ("outlined",)}

# Spatial and size relations. Each maps to the phrases that realise it; the first is
# canonical (and is the predicate string in the scene graph).
RELATIONS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "bigger than": ("bigger than", "larger than"),
    "smaller than": ("smaller than",),
}
CONVERSE: dict[str, str] = {
    "left of": "right of", "right of": "left of", "above": "below", "below": "above",
    "bigger than": "smaller than", "smaller than": "bigger than"}

SHAPE_BY_NAME = {s.name: s for s in SHAPES}
COLOR_BY_NAME = {c.name: c for c in COLORS}
ATTRIBUTE_KINDS = ("size", "color", "texture")
VALUES_OF_KIND: dict[str, tuple[str, ...]] = {
    "size": SIZES, "color": tuple(c.name for c in COLORS), "texture": TEXTURES}
KIND_OF_VALUE: dict[str, str] = {v: k for k, vs in VALUES_OF_KIND.items() for v in vs}


def surface_forms(canonical: str) -> tuple[str, ...]:
  """The canonical word and its training synonyms (never the knowledge aliases)."""
  if canonical in SHAPE_BY_NAME:
    return (canonical,) + SHAPE_BY_NAME[canonical].synonyms
  if canonical in COLOR_BY_NAME:
    return (canonical,) + COLOR_BY_NAME[canonical].synonyms
  if canonical in SIZE_SYNONYMS:
    return (canonical,) + SIZE_SYNONYMS[canonical]
  if canonical in TEXTURE_SYNONYMS:
    return (canonical,) + TEXTURE_SYNONYMS[canonical]
  if canonical in RELATIONS:
    return RELATIONS[canonical]
  raise KeyError(f"unknown world concept {canonical!r}")


def lexicon() -> dict[str, str]:
  """Every training-caption word or phrase -> canonical concept."""
  out = {}
  for concept in (*SHAPE_BY_NAME, *COLOR_BY_NAME, *SIZES, *TEXTURES, *RELATIONS):
    for form in surface_forms(concept):
      out[form] = concept
  return out


def all_color_shape_pairs() -> list[tuple[str, str]]:
  return [(c.name, s.name) for c in COLORS for s in SHAPES]
