"""Seeded sampling of synthetic scenes and the geometry that decides their relations.

``sample_scene(spec, split, index)`` is a pure function of its arguments: any host can
make any shard, and the same seed always gives the same scene. Relations are computed
from geometry with margins and are *three-valued*: a relation is TRUE only with a clear
margin, FALSE only when clearly violated, and AMBIGUOUS in between. Captions assert only
TRUE relations and negatives use only FALSE ones, so no benchmark item is ambiguous.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from vlkg.data.world import ontology

TRUE, AMBIGUOUS, FALSE = 1, 0, -1
# "plain": one-object training scenes for the first steps of a run
# (``vlkg.data.world.build.scene_and_captions``); it draws color-shape pairs like
# "train", and is last so that the other splits' seeds never change.
SPLITS = ("train", "val", "test", "test_comp", "plain")
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}

# Geometry as fractions of the image side; chosen so that "small" and "large" differ
# by > 1.5x even after jitter, and so that 4 large objects always fit on a 2x2 grid.
SMALL_RADIUS = 0.095
LARGE_RADIUS = 0.165
RADIUS_JITTER = 0.08
GAP = 0.03
RELATION_MARGIN = 0.12
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 224
TEXTURE_PROBS = (0.6, 0.2, 0.2)  # solid, striped, hollow
_TEXTURE_CDF = np.cumsum(TEXTURE_PROBS)[:-1]


class WorldSpecError(ValueError):
  """An impossible world request; the message names the value to change."""


@dataclasses.dataclass(frozen=True)
class WorldSpec:
  """What the sampler needs to know; built from ``config.world``."""
  seed: int = 0
  image_size: int = 64
  min_objects: int = 1
  max_objects: int = 4
  heldout_pairs: tuple[tuple[str, str], ...] = ()  # (color, shape) pairs kept out of train

  def validate(self) -> None:
    s = self.image_size
    if not MIN_IMAGE_SIZE <= s <= MAX_IMAGE_SIZE:
      raise WorldSpecError(
          f"model.image_size={s} (the world renders at it) is outside [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]")
    if not 1 <= self.min_objects <= self.max_objects:
      raise WorldSpecError(
          f"need 1 <= world.min_objects ({self.min_objects}) <= world.max_objects "
          f"({self.max_objects})")
    cells = max_objects_that_fit(s) 
    if self.max_objects > cells:
      raise WorldSpecError(
          f"world.max_objects={self.max_objects} large objects do not fit in a "
          f"{s}x{s} image (at most {cells}); lower world.max_objects or raise "
          "model.image_size")
    if len(self.heldout_pairs) >= len(ontology.all_color_shape_pairs()):
      raise WorldSpecError("world.test_comp_fraction leaves no training color-shape pairs")


def max_objects_that_fit(image_size: int) -> int:
  """Objects that fit for sure: large ones on a regular grid with the gap between."""
  cell = 2 * LARGE_RADIUS * (1 + RADIUS_JITTER) * image_size + GAP * image_size
  per_side = int(image_size // cell)
  return per_side * per_side


@dataclasses.dataclass(frozen=True)
class WorldObject:
  shape: str
  color: str
  size: str
  texture: str
  cx: float  # center, pixels
  cy: float
  radius: float  # half the side of the object's square extent, pixels
  rotation: float  # radians, a small jitter
  rgb: tuple[int, int, int]  # the rendered color: the color's RGB plus a small jitter

  @property
  def box(self) -> tuple[float, float, float, float]:
    """(x, y, w, h) in pixels, the convention of ARO's bbox fields."""
    return (self.cx - self.radius, self.cy - self.radius, 2 * self.radius, 2 * self.radius)

  def attribute(self, kind: str) -> str:
    return getattr(self, kind)


@dataclasses.dataclass(frozen=True)
class Scene:
  split: str
  index: int
  image_size: int
  objects: tuple[WorldObject, ...]
  noise_seed: int  # seeds the renderer's pixel noise

  def relation_value(self, i: int, predicate: str, j: int) -> int:
    return relation_value(self.objects[i], predicate, self.objects[j], self.image_size)

  @functools.cached_property
  def _true_relations(self) -> tuple[tuple[int, str, int], ...]:
    out = []
    for i in range(len(self.objects)):
      for j in range(len(self.objects)):
        if i != j:
          for pred in ontology.RELATIONS:
            if self.relation_value(i, pred, j) == TRUE:
              out.append((i, pred, j))
    return tuple(out)

  def true_relations(self) -> list[tuple[int, str, int]]:
    """Every TRUE (subject, predicate, object) over ordered pairs of objects."""
    return list(self._true_relations)

  def graph_json(self) -> dict:
    """The ground-truth scene graph in the DESIGN.md parse format, plus boxes.

    Relations are listed once per pair and direction ("left of", "above",
    "bigger than"); their converses follow from ``ontology.CONVERSE``.
    """
    canonical = ("left of", "above", "bigger than")
    return {
        "objects": [o.shape for o in self.objects],
        "attributes": [[i, getattr(o, k)] for i, o in enumerate(self.objects)
                       for k in ontology.ATTRIBUTE_KINDS],
        "relations": [list(r) for r in self.true_relations() if r[1] in canonical],
        "boxes": [[round(v, 2) for v in o.box] for o in self.objects],
    }


def relation_value(a: WorldObject, predicate: str, b: WorldObject, image_size: int) -> int:
  """Is ``a predicate b``: TRUE, FALSE or AMBIGUOUS (inside the margin's dead zone)."""
  if predicate in ("bigger than", "smaller than"):
    bigger = a.size == "large" and b.size == "small"
    smaller = a.size == "small" and b.size == "large"
    return TRUE if (bigger if predicate == "bigger than" else smaller) else FALSE
  # Image y grows downwards: "a above b" means a.cy < b.cy.
  d = {"left of": b.cx - a.cx, "right of": a.cx - b.cx,
       "above": b.cy - a.cy, "below": a.cy - b.cy}[predicate]
  margin = RELATION_MARGIN * image_size
  if d > margin:
    return TRUE
  if d < margin / 3:
    return FALSE
  return AMBIGUOUS


def _rng(spec: WorldSpec, split: str, index: int, stream: int = 0) -> np.random.Generator:
  return np.random.default_rng([spec.seed, _SPLIT_IDS[split], index, stream])


def _allowed_pairs(spec: WorldSpec, split: str) -> tuple[list, list]:
  """(pairs allowed in this split, held-out pairs that a test_comp scene must show)."""
  heldout = set(spec.heldout_pairs)
  allowed = [p for p in ontology.all_color_shape_pairs() if p not in heldout]
  return allowed, sorted(heldout)


def sample_scene(spec: WorldSpec, split: str, index: int) -> Scene:
  """The scene number ``index`` of ``split``; deterministic in (spec, split, index)."""
  if split not in _SPLIT_IDS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  rng = _rng(spec, split, index)
  s = spec.image_size
  n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
  allowed, heldout = _allowed_pairs(spec, split)
  if split == "test_comp":
    n = max(n, 1)
  objects: list[WorldObject] = []
  used_pairs: set[tuple[str, str]] = set()
  for k in range(n):
    if split == "test_comp" and k == 0:
      pool = heldout  # every test_comp scene shows at least one held-out pair
    else:
      pool = [p for p in allowed if p not in used_pairs]
      if split == "test_comp":
        pool += [p for p in heldout if p not in used_pairs]
    color, shape = pool[int(rng.integers(len(pool)))]
    size = ontology.SIZES[int(rng.integers(2))]
    texture = ontology.TEXTURES[int(np.searchsorted(_TEXTURE_CDF, rng.random()))]
    base = SMALL_RADIUS if size == "small" else LARGE_RADIUS
    radius = base * s * (1 + RADIUS_JITTER * rng.uniform(-1, 1))
    placed = _place(rng, radius, objects, s)
    if placed is None:
      continue  # no room left: the scene keeps the objects placed so far
    jitter = rng.integers(-12, 13, size=3)
    rgb = tuple(min(255, max(0, c + int(d)))
                for c, d in zip(ontology.COLOR_BY_NAME[color].rgb, jitter))
    objects.append(WorldObject(
        shape=shape, color=color, size=size, texture=texture, cx=placed[0],
        cy=placed[1], radius=radius, rotation=float(rng.uniform(-0.15, 0.15)), rgb=rgb))
    used_pairs.add((color, shape))
  return Scene(split=split, index=index, image_size=s, objects=tuple(objects),
               noise_seed=int(rng.integers(2**31)))


def _place(rng, radius, objects, s, tries: int = 64):
  """Rejection sampling of a center that keeps the gap to every placed object.

  (A vectorised version is slower: at most 3 placed objects and an early exit.)
  """
  lo, hi = radius + 1, s - radius - 1
  gap = GAP * s
  for _ in range(tries):
    cx, cy = rng.uniform(lo, hi, size=2)
    if all(max(abs(cx - o.cx), abs(cy - o.cy)) >= radius + o.radius + gap for o in objects):
      return float(cx), float(cy)
  return None


def choose_heldout_pairs(seed: int, fraction: float) -> tuple[tuple[str, str], ...]:
  """Color-shape pairs held out of training for ``test_comp``.

  Chosen as a seeded partial Latin square so that every color and every shape still
  occurs in training with other partners (the test is of *composition*, not of
  unseen words).
  """
  pairs = ontology.all_color_shape_pairs()
  n_colors, n_shapes = len(ontology.COLORS), len(ontology.SHAPES)
  k = math.ceil(fraction * len(pairs))
  if fraction <= 0:
    return ()
  if k > n_colors * (n_shapes - 1):
    raise WorldSpecError(
        f"world.test_comp_fraction={fraction} leaves some color with no training "
        f"shape; use at most {(n_shapes - 1) / n_shapes:.2f}")
  rng = np.random.default_rng([seed, 7919])
  color_order = rng.permutation(n_colors)
  shape_order = rng.permutation(n_shapes)
  chosen = []
  # Diagonals of the color x shape grid: each diagonal uses each color once and each
  # shape at most once, so the held-out set is spread evenly over both.
  for d in range(n_shapes):
    for c in range(n_colors):
      if len(chosen) == k:
        break
      ci, si = color_order[c], shape_order[(c + d) % n_shapes]
      chosen.append((ontology.COLORS[ci].name, ontology.SHAPES[si].name))
  return tuple(sorted(chosen))
