"""Zero-shot phrase grounding on the synthetic world, from patch-phrase alignment.

LOUPE (Li et al., NeurIPS 2022 "Claim") argues that
region-phrase alignment can be learned from image-text pairs alone, without box
annotations, and reports zero-shot grounding. This evaluator measures that ability
for any encoder that exposes its patch tokens in the joint space
(`vlkg.evaluators.encoder.has_image_tokens`): no box ever reaches the model, the
boxes only score its answers.

Items. For each image of a split (``test`` by default) and each object phrase:

* ``phrases="objects"`` (the default, what ``world.evaluate`` reports): the
  world's ground truth. Every object of the scene gets its canonical noun phrase
  (`vlkg.data.world.captions.realise_np` with ``rng=None``) with size, color and
  texture, in the captions' own wording and adjective order, e.g. "a large red
  striped cross"; "solid" is left out, as the captions' unmarked default
  (`vlkg.data.world.ontology`). A phrase that matches more than one object of the
  scene (`NounPhrase.matches`) is skipped and counted in ``skipped_ambiguous``.
  Within one scene color-shape pairs never repeat, so on the world this count is
  0; the check stays so that the items remain well defined if that changes.
* ``phrases="captions"``: the noun phrases as the scene's own captions say them.
  Each stored caption is parsed with the world's exact parser
  (`vlkg.graphs.world_parser`); each of its objects becomes a phrase (canonical
  wording of the attributes it was said with, e.g. "a striped cross") matched to
  the scene's objects by those attributes. A phrase matching several objects is
  skipped as ambiguous, one matching none (a knowledge word, a truncated caption)
  as unmatched. Equal phrase texts of one image are one item.

Heatmap. The phrase alone is embedded with ``encode_texts`` (for a fused-text
model, its evaluation text embedding), the image with ``encode_image_tokens``
(``[P, D]`` unit-norm patch tokens in the joint space, row-major over a square
patch grid), and the heatmap is their cosine similarity, one value per patch. The
CLIP baseline is scored the same way: its heatmap is its own patch-text
similarity, although its loss trains only the pooled embedding.

Geometry. Pixel ``j`` covers ``[j, j + 1)`` (as the renderer draws it); boxes are
``(x, y, w, h)`` in pixels. A ``g x g`` patch grid over an ``H x W`` image has
cells of ``W / g`` by ``H / g`` pixels and patch ``(r, c)`` has its center at
``((c + 0.5) W / g, (r + 0.5) H / g)``. The encoder must see the whole image (it
may rescale it, never crop it), which holds for the world's square images.

Scores (per phrase, then averaged over phrases):

* Pointing game (Zhang et al., ECCV 2016): a hit iff the center of the peak patch
  lies inside the box, edges included (``x <= px <= x + w`` and likewise for y),
  with no tolerance margin. The peak is the first maximum in row-major order
  (``np.argmax``), so a constant map points at the top-left patch.
* Accuracy at IoU >= 0.5: the predicted box is the bounding box, in pixels, of the
  4-connected component containing the peak among the patches whose value is
  ``>= min + threshold * (max - min)`` of the map (``threshold`` 0.5 by default);
  a constant map therefore predicts the whole image.

Metrics (DESIGN contract names ``grounding/pointing_acc`` and
``grounding/iou50_acc``), all under ``grounding/``:

* ``pointing_acc``, ``iou50_acc``, ``mean_iou``;
* ``pointing_acc_chance``: the expected pointing accuracy of a uniformly random
  patch, the mean over phrases of the fraction of patch centers inside the box;
* ``iou50_acc_ceiling``: the fraction of phrases for which some box made of whole
  patch cells reaches IoU >= 0.5, the best ``iou50_acc`` any heatmap on this grid
  can get (small objects on a coarse grid can miss it);
* ``n_items`` (phrases scored), ``n_images``, ``skipped_ambiguous``,
  ``skipped_unmatched`` and ``missing_images`` (0: the records hold the pixels).

Cost: one pass over the split's records without pixels to collect the phrases,
one ``encode_texts`` lookup for every distinct phrase, then one pass with pixels
in batches of ``batch_size`` through ``encode_image_tokens``; the rest is numpy.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from vlkg.data import input_pipeline, records
from vlkg.data import tokenizer as tok_lib
from vlkg.data.world import captions as cap
from vlkg.data.world import ontology
from vlkg.evaluators import common, encoder as encoder_lib

PREFIX = "grounding"
PHRASE_SOURCES = ("objects", "captions")
DEFAULT_THRESHOLD = 0.5

_SHAPES = tuple(s.name for s in ontology.SHAPES)
_COLORS = tuple(c.name for c in ontology.COLORS)

Box = tuple[float, float, float, float]


# ------------------------------------------------------------------- geometry


def grid_side(num_patches: int) -> int:
  """The side g of a square g x g patch grid with ``num_patches`` cells."""
  g = int(round(np.sqrt(num_patches)))
  if g < 1 or g * g != num_patches:
    raise ValueError(f"{num_patches} patch tokens are not a square grid")
  return g


def patch_centers(grid: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
  """float64 ``[gh * gw, 2]`` (x, y) pixel centers of the patches, row-major."""
  gh, gw = grid
  h, w = image_hw
  ys, xs = np.meshgrid((np.arange(gh) + 0.5) * h / gh, (np.arange(gw) + 0.5) * w / gw,
                       indexing="ij")
  return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)


def inside(points: np.ndarray, box: Box) -> np.ndarray:
  """bool ``[K]``: which (x, y) points lie in the box ``(x, y, w, h)``, edges in."""
  x, y, w, h = box
  px, py = points[:, 0], points[:, 1]
  return (px >= x) & (px <= x + w) & (py >= y) & (py <= y + h)


def peak(heatmap: np.ndarray) -> tuple[int, int]:
  """(row, col) of the maximum; ties go to the first in row-major order."""
  heatmap = np.asarray(heatmap)
  r, c = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
  return int(r), int(c)


def pointing_hit(heatmap: np.ndarray, box: Box, image_hw: tuple[int, int]) -> bool:
  """Whether the peak patch's center lies inside ``box`` (see the module doc)."""
  heatmap = np.asarray(heatmap)
  r, c = peak(heatmap)
  centers = patch_centers(heatmap.shape, image_hw)
  return bool(inside(centers[r * heatmap.shape[1] + c][None], box)[0])


def peak_component(heatmap: np.ndarray,
                   threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
  """bool ``[gh, gw]``: the 4-connected component of the peak among the patches
  ``>= min + threshold * (max - min)``."""
  heatmap = np.asarray(heatmap, np.float64)
  if not 0.0 <= threshold <= 1.0:
    raise ValueError(f"threshold must be in [0, 1], got {threshold}")
  lo, hi = float(heatmap.min()), float(heatmap.max())
  # The peak itself always passes, even where rounding puts the cut above hi.
  above = heatmap >= min(hi, lo + threshold * (hi - lo))
  start = peak(heatmap)
  seen = np.zeros_like(above)
  seen[start] = True
  stack = [start]
  gh, gw = heatmap.shape
  while stack:
    r, c = stack.pop()
    for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
      if 0 <= nr < gh and 0 <= nc < gw and above[nr, nc] and not seen[nr, nc]:
        seen[nr, nc] = True
        stack.append((nr, nc))
  return seen


def cells_box(cells: np.ndarray, image_hw: tuple[int, int]) -> Box:
  """The pixel box ``(x, y, w, h)`` around the true cells of a ``[gh, gw]`` mask."""
  gh, gw = cells.shape
  h, w = image_hw
  rows, cols = np.nonzero(cells)
  if not len(rows):
    raise ValueError("no cell is set")
  ch, cw = h / gh, w / gw
  x0, y0 = cols.min() * cw, rows.min() * ch
  return (float(x0), float(y0), float((cols.max() + 1) * cw - x0),
          float((rows.max() + 1) * ch - y0))


def component_box(heatmap: np.ndarray, image_hw: tuple[int, int],
                  threshold: float = DEFAULT_THRESHOLD) -> Box:
  """The predicted box of a heatmap: `cells_box` of `peak_component`."""
  return cells_box(peak_component(heatmap, threshold), image_hw)


def iou(a: Box, b: Box) -> float:
  """Intersection over union of two ``(x, y, w, h)`` boxes (0 if both are empty)."""
  ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
  inter = ix * iy
  union = a[2] * a[3] + b[2] * b[3] - inter
  return float(inter / union) if union > 0 else 0.0


def pointing_chance(box: Box, grid: tuple[int, int],
                    image_hw: tuple[int, int]) -> float:
  """Hit rate of a uniformly random peak: the fraction of patch centers in ``box``."""
  return float(np.mean(inside(patch_centers(grid, image_hw), box)))


def best_cells_iou(box: Box, grid: tuple[int, int], image_hw: tuple[int, int]) -> float:
  """The highest IoU with ``box`` of any box made of whole patch cells."""
  gh, gw = grid
  h, w = image_hw

  def spans(n, side):  # every [start, end) of whole cells along one axis
    lo, hi = np.triu_indices(n)
    return lo * side / n, (hi + 1) * side / n

  x0, x1 = spans(gw, w)
  y0, y1 = spans(gh, h)
  bx, by, bw, bh = box
  ix = np.maximum(0.0, np.minimum(x1, bx + bw) - np.maximum(x0, bx))
  iy = np.maximum(0.0, np.minimum(y1, by + bh) - np.maximum(y0, by))
  inter = ix[:, None] * iy[None, :]
  union = ((x1 - x0)[:, None] * (y1 - y0)[None, :]) + bw * bh - inter
  return float(np.max(inter / union))


def heatmaps(tokens: np.ndarray, phrases: np.ndarray) -> np.ndarray:
  """Cosine similarities ``[K, g, g]`` of unit-norm patch tokens ``[P, D]`` and
  unit-norm phrase embeddings ``[K, D]``."""
  g = grid_side(tokens.shape[0])
  return (phrases @ tokens.T).reshape(len(phrases), g, g)


class Score(NamedTuple):
  """One phrase's result."""

  hit: bool
  iou: float
  chance: float
  ceiling: float
  box: Box  # the predicted box


def score(heatmap: np.ndarray, box: Box, image_hw: tuple[int, int],
          threshold: float = DEFAULT_THRESHOLD) -> Score:
  """Pointing hit, IoU of the predicted box, chance and IoU ceiling of one phrase."""
  heatmap = np.asarray(heatmap)
  pred = component_box(heatmap, image_hw, threshold)
  return Score(pointing_hit(heatmap, box, image_hw), iou(pred, box),
               pointing_chance(box, heatmap.shape, image_hw),
               best_cells_iou(box, heatmap.shape, image_hw), pred)


# -------------------------------------------------------------------- phrases


class Phrase(NamedTuple):
  """A grounding item: a phrase and the box of the one object it names."""

  text: str
  box: Box
  object_index: int


def scene_objects(attributes: np.ndarray, boxes: np.ndarray,
                  num_objects: int) -> list[tuple[dict[str, str], Box]]:
  """Objects of a record: ({shape, color, size, texture} names, box) each.

  Args:
    attributes: ``[m, 4]`` int ids (shape, color, size, texture) as the records
      store them (``vlkg.data.world.build``).
    boxes: ``[m, 4]`` float ``(x, y, w, h)`` pixels.
    num_objects: how many of the ``m`` rows are real.
  """
  out = []
  for k in range(int(num_objects)):
    s, c, z, t = (int(v) for v in attributes[k])
    names = {"shape": _SHAPES[s], "color": _COLORS[c], "size": ontology.SIZES[z],
             "texture": ontology.TEXTURES[t]}
    out.append((names, tuple(float(v) for v in boxes[k])))
  return out


def _matches(np_: cap.NounPhrase, names: dict[str, str]) -> bool:
  if np_.shape is not None and np_.shape != names["shape"]:
    return False
  return all(names.get(k) == v for k, v in np_.attributes)


def object_noun_phrase(names: dict[str, str]) -> cap.NounPhrase:
  """An object's ground-truth noun phrase: size, color, texture unless solid."""
  attrs = [(k, names[k]) for k in cap.ATTRIBUTE_ORDER
           if not (k == "texture" and names[k] == "solid")]
  return cap.NounPhrase(names["shape"], tuple(attrs))


def _caption_noun_phrases(text: str) -> list[cap.NounPhrase | None]:
  from vlkg.data.world import graph_text
  from vlkg.graphs import world_parser
  graph = world_parser.parse(text)
  out = []
  for i, shape in enumerate(graph.objects):
    if shape not in ontology.SHAPE_BY_NAME or any(
        a not in ontology.KIND_OF_VALUE for a in graph.attributes_of(i)):
      out.append(None)  # a knowledge word: not matchable by attributes
    else:
      out.append(graph_text.noun_phrase(graph, i))
  return out


def scene_phrases(objects: Sequence[tuple[dict[str, str], Box]],
                  captions: Sequence[str] = (), source: str = "objects"
                  ) -> tuple[list[Phrase], collections.Counter]:
  """The grounding items of one scene, and the counts of skipped phrases.

  Args:
    objects: `scene_objects` of the scene.
    captions: the scene's captions (only for ``source="captions"``).
    source: one of `PHRASE_SOURCES` (see the module doc).

  Returns:
    ``(phrases, skipped)``: phrases in object order (``objects``) or in order of
    first mention (``captions``); ``skipped`` counts ``ambiguous`` and
    ``unmatched`` phrases.
  """
  if source not in PHRASE_SOURCES:
    raise ValueError(f"unknown phrase source {source!r}; expected one of "
                     f"{PHRASE_SOURCES}")
  if source == "objects":
    candidates = [object_noun_phrase(names) for names, _ in objects]
  else:
    candidates = [np_ for text in captions for np_ in _caption_noun_phrases(text)]
  phrases: list[Phrase] = []
  skipped: collections.Counter = collections.Counter()
  seen: set[str] = set()
  for np_ in candidates:
    if np_ is None:
      skipped["unmatched"] += 1
      continue
    text = cap.realise_np(np_)
    # A caption phrase said twice is one item; an object phrase is one per object,
    # so that two objects sharing a phrase are both counted as ambiguous.
    if source == "captions" and text in seen:
      continue
    seen.add(text)
    owners = [k for k, (names, _) in enumerate(objects) if _matches(np_, names)]
    if len(owners) == 1:
      phrases.append(Phrase(text, objects[owners[0]][1], owners[0]))
    else:
      skipped["ambiguous" if owners else "unmatched"] += 1
  return phrases, skipped


# ----------------------------------------------------------------- evaluation


def check_tokens(tokens: Any, n: int, what: str = "encode_image_tokens") -> np.ndarray:
  """Checks an ``encode_image_tokens`` output: float32 ``[n, P, D]``, finite, every
  token of unit L2 norm (within `common.NORM_TOLERANCE`)."""
  arr = np.asarray(tokens)
  if arr.ndim != 3 or arr.shape[0] != n or 0 in arr.shape:
    raise ValueError(f"{what} returned shape {arr.shape} for {n} images; expected "
                     f"[{n}, P, D]")
  arr = arr.astype(np.float32, copy=False)
  if not np.isfinite(arr).all():
    raise ValueError(f"{what} returned non-finite values")
  norms = np.linalg.norm(arr.astype(np.float64), axis=-1)
  worst = np.unravel_index(int(np.argmax(np.abs(norms - 1.0))), norms.shape)
  if abs(norms[worst] - 1.0) > common.NORM_TOLERANCE:
    raise ValueError(f"{what} must return L2-normalised tokens; token {worst} has "
                     f"norm {norms[worst]:.4g}")
  return arr


def read_phrases(dataset_dir: str, split: str = "test", *, source: str = "objects",
                 max_images: int | None = None, batch_size: int = 256
                 ) -> tuple[list[list[Phrase]], collections.Counter]:
  """The phrases of every image of ``split`` in record order (no pixels read).

  Returns:
    ``(per_image, skipped)``: one list of `Phrase` per image (first ``max_images``
    only, if given) and the summed skip counts.
  """
  manifest = records.read_manifest(dataset_dir)
  tokenizer = None
  if source == "captions":
    tokenizer = tok_lib.from_description(manifest["tokenizer"], base_dir=dataset_dir)
  per_image: list[list[Phrase]] = []
  skipped: collections.Counter = collections.Counter()
  for batch in input_pipeline.eval_iterator(dataset_dir, split, batch_size=batch_size,
                                            fields=("objects",), process_index=0,
                                            process_count=1):
    for row in np.flatnonzero(batch["_mask"]):
      if max_images and len(per_image) == max_images:
        break
      objects = scene_objects(batch["object_attributes"][row], batch["boxes"][row],
                              batch["num_objects"][row])
      texts = ()
      if tokenizer is not None:
        ids = batch["texts"][row]
        texts = tokenizer.decode(ids[(ids != tok_lib.PAD_ID).any(axis=1)])
      phrases, skip = scene_phrases(objects, texts, source)
      per_image.append(phrases)
      skipped.update(skip)
    if max_images and len(per_image) == max_images:
      break
  return per_image, skipped


def evaluate(encoder: encoder_lib.Encoder, dataset_dir: str, *, split: str = "test",
             phrases: str = "objects", threshold: float = DEFAULT_THRESHOLD,
             batch_size: int = 256, max_images: int | None = None,
             cache: common.EmbeddingCache | None = None) -> dict[str, float]:
  """Grounds every object phrase of ``split``; see the module doc.

  Args:
    encoder: needs ``encode_image_tokens`` (`encoder.has_image_tokens`).
    dataset_dir: A prepared world dataset.
    split: The split whose records to read.
    phrases: One of `PHRASE_SOURCES`.
    threshold: Fraction of the map's range above its minimum that a patch needs to
      join the predicted region.
    batch_size: The largest batch passed to the encoder.
    max_images: Score only the first ``max_images`` images (None or 0: all).
    cache: Shares phrase embeddings with other evaluators; a new one if None.

  Returns:
    ``grounding/<metric>`` values.

  Raises:
    ValueError: If the encoder has no ``encode_image_tokens``, for a bad argument,
      or a bad encoder output.
  """
  if not encoder_lib.has_image_tokens(encoder):
    raise ValueError("grounding needs an encoder with encode_image_tokens")
  if phrases not in PHRASE_SOURCES:
    raise ValueError(f"unknown phrase source {phrases!r}; expected one of "
                     f"{PHRASE_SOURCES}")
  if not 0.0 <= threshold <= 1.0:
    raise ValueError(f"threshold must be in [0, 1], got {threshold}")
  cache = cache or common.EmbeddingCache(encoder, batch_size)
  per_image, skipped = read_phrases(dataset_dir, split, source=phrases,
                                    max_images=max_images, batch_size=batch_size)
  texts = [p.text for ps in per_image for p in ps]
  if texts:
    text_rows, text_matrix = cache.text_rows(texts)
  results: list[Score] = []
  image_index = offset = 0
  for batch in input_pipeline.eval_iterator(dataset_dir, split, batch_size=batch_size,
                                            fields=("image",), process_index=0,
                                            process_count=1):
    real = np.flatnonzero(batch["_mask"])
    wanted = [r for r in real if image_index + r < len(per_image)
              and per_image[image_index + r]]
    if wanted:
      images = batch["image"][wanted]
      tokens = check_tokens(encoder.encode_image_tokens(images), len(images))
      for row, r in enumerate(wanted):
        items = per_image[image_index + r]
        rows = text_rows[offset:offset + len(items)]
        offset += len(items)
        for p, heatmap in zip(items, heatmaps(tokens[row], text_matrix[rows])):
          results.append(score(heatmap, p.box, images.shape[1:3], threshold))
    image_index += len(real)
    if image_index >= len(per_image):
      break
  metrics = {
      f"{PREFIX}/n_items": float(len(results)),
      f"{PREFIX}/n_images": float(sum(bool(ps) for ps in per_image)),
      f"{PREFIX}/skipped_ambiguous": float(skipped["ambiguous"]),
      f"{PREFIX}/skipped_unmatched": float(skipped["unmatched"]),
      f"{PREFIX}/missing_images": 0.0,
  }
  if not results:  # as the suites: no items, no accuracy
    logging.warning("%s: no phrase to ground in %s/%s", PREFIX, dataset_dir, split)
    return metrics
  metrics.update({
      f"{PREFIX}/pointing_acc": float(np.mean([s.hit for s in results])),
      f"{PREFIX}/iou50_acc": float(np.mean([s.iou >= 0.5 for s in results])),
      f"{PREFIX}/mean_iou": float(np.mean([s.iou for s in results])),
      f"{PREFIX}/pointing_acc_chance": float(np.mean([s.chance for s in results])),
      f"{PREFIX}/iou50_acc_ceiling": float(np.mean([s.ceiling >= 0.5
                                                     for s in results])),
  })
  return metrics
