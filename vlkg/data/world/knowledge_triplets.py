"""The world's knowledge-graph triplets with image and text entities.

Knowledge-CLIP (Pan et al., "Contrastive Language-Image Pre-Training with Knowledge
Graphs", NeurIPS 2022, §3.1) trains on triplets whose entities are images or texts:
VisualSem gives (image, rel, image), (text, rel, image) and (text, rel, text),
Visual Genome (region, rel, region) of one image, ConceptNet (text, rel, text), and
image-text pairs enter as triplets with a fixed relation. The world has all four
kinds, from the sources that make its images and captions:

* **Concept facts** (text, rel, text): every fact of the world's knowledge graph
  (`vlkg.data.world.knowledge`), whose nodes are each concept's name, training
  synonyms and knowledge-only aliases ("scarlet" alias of "red").
* **Concept images** (image, rel, text): ``images_per_value`` rendered one-object
  scenes for every shape, color, size and texture, each linked to every concept it
  shows: "has color" each text form of its color (name, synonyms, aliases) and its
  family, "is a" each form of its shape and its shape class, "has" its corner
  count, "is" its convexity, "has size" and "has texture" the forms of its size and
  texture. So "red" gets red objects, "square" squares and "four corners" every
  shape with four corners. No image shows a color-shape pair held out of training.
* **Regions** (image, rel, image): crops of two objects of one training scene with
  a true relation between them ("left of", "bigger than"...), from the first
  ``region_scenes`` training scenes, at most ``regions_per_scene`` each; every crop
  also "is a" its shape and "has color" its color.
* **Captions** (text, "is a caption of", image): one caption of each of the first
  ``caption_scenes`` training scenes with the scene's image. The caption is the
  head so that the triplet reads as the fact it states.

Sizes are bounded (a few hundred images), so the table costs a few MB and well
under a second to render; the held-out split and the neighbourhoods are
`vlkg.data.kg_table`'s.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from vlkg.data import kg_table
from vlkg.data.world import knowledge, ontology, render, scene as scene_lib

HAS_COLOR = "has color"
HAS_SIZE = "has size"
HAS_TEXTURE = "has texture"
CAPTION_OF = "is a caption of"

IMAGES_PER_VALUE = 4
REGION_SCENES = 64
REGIONS_PER_SCENE = 2
CAPTION_SCENES = 64
HELDOUT_FRACTION = 0.1
MAX_NEIGHBOURS = 8
CROP_MARGIN = 1.3  # crop side over the object's extent
_STREAM = 4243


def forms(graph, concept: str) -> list[str]:
  """The concept's text entities: its name, training synonyms and aliases, as the
  knowledge graph says."""
  out = [concept]
  for head, _, data in graph.in_edges(concept, data=True):
    if data["relation"] in (knowledge.SYNONYM_OF, knowledge.ALIAS_OF):
      out.append(head)
  return sorted(set(out), key=out.index)


def _object_facts(graph, obj: scene_lib.WorldObject) -> list[tuple[str, str]]:
  """(relation, text) of every concept a rendered object shows."""
  facts = [(HAS_COLOR, f) for f in forms(graph, obj.color)]
  facts += [(HAS_COLOR, t) for _, t, d in graph.out_edges(obj.color, data=True)
            if d["relation"] == knowledge.IS_A and t != "color"]
  facts += [(knowledge.IS_A, f) for f in forms(graph, obj.shape)]
  for _, t, d in graph.out_edges(obj.shape, data=True):
    if t != "shape":
      facts.append((d["relation"], t))  # is a <class>, has <corners>, is <convexity>
  facts += [(HAS_SIZE, f) for f in forms(graph, obj.size)]
  facts += [(HAS_TEXTURE, f) for f in forms(graph, obj.texture)]
  return facts


def _one_object(spec: scene_lib.WorldSpec, rng: np.random.Generator, kind: str,
                value: str) -> scene_lib.Scene:
  """A centred one-object scene whose object has ``kind`` = ``value``."""
  allowed, _ = scene_lib._allowed_pairs(spec, "train")  # pylint: disable=protected-access
  if kind in ("color", "shape"):
    allowed = [p for p in allowed if p[0 if kind == "color" else 1] == value]
  color, shape = allowed[int(rng.integers(len(allowed)))]
  size = value if kind == "size" else ontology.SIZES[int(rng.integers(2))]
  texture = value if kind == "texture" else ontology.TEXTURES[
      int(rng.integers(len(ontology.TEXTURES)))]
  s = spec.image_size
  base = scene_lib.SMALL_RADIUS if size == "small" else scene_lib.LARGE_RADIUS
  radius = base * s * (1 + scene_lib.RADIUS_JITTER * rng.uniform(-1, 1))
  center = s / 2 + rng.uniform(-0.05, 0.05, size=2) * s
  rgb = tuple(min(255, max(0, c + int(d))) for c, d in
              zip(ontology.COLOR_BY_NAME[color].rgb, rng.integers(-12, 13, size=3)))
  obj = scene_lib.WorldObject(shape=shape, color=color, size=size, texture=texture,
                              cx=float(center[0]), cy=float(center[1]), radius=radius,
                              rotation=float(rng.uniform(-0.15, 0.15)), rgb=rgb)
  return scene_lib.Scene("train", -1, s, (obj,), int(rng.integers(2**31)))


def crop(image: np.ndarray, obj: scene_lib.WorldObject) -> np.ndarray:
  """The object's square region (its extent times ``CROP_MARGIN``, inside the
  image), resized to the image's size."""
  from PIL import Image
  s = image.shape[0]
  half = obj.radius * CROP_MARGIN
  box = [max(0, int(np.floor(obj.cx - half))), max(0, int(np.floor(obj.cy - half))),
         min(s, int(np.ceil(obj.cx + half))), min(s, int(np.ceil(obj.cy + half)))]
  region = Image.fromarray(image).crop(tuple(box)).resize((s, s), Image.BILINEAR)
  return np.asarray(region, np.uint8)


def build_table(spec: scene_lib.WorldSpec, caption_of: Callable[[scene_lib.Scene], str],
                num_train: int, *, images_per_value: int = IMAGES_PER_VALUE,
                region_scenes: int = REGION_SCENES,
                regions_per_scene: int = REGIONS_PER_SCENE,
                caption_scenes: int = CAPTION_SCENES,
                heldout_fraction: float = HELDOUT_FRACTION,
                max_neighbours: int = MAX_NEIGHBOURS) -> kg_table.Table:
  """The world's triplet table (see the module docstring).

  Args:
    spec: the world.
    caption_of: a training scene's caption (the dataset's first caption of it).
    num_train: training scenes that exist; regions and captions come from the
      first of them.
  """
  graph = knowledge.build_knowledge_graph()
  b = kg_table.Builder(spec.image_size)
  for head, relation, tail in knowledge.triples(graph):
    b.fact(b.text(head), relation, b.text(tail))

  rng = np.random.default_rng([spec.seed, _STREAM])
  values = [("shape", s.name) for s in ontology.SHAPES] + [
      ("color", c.name) for c in ontology.COLORS] + [
      ("size", v) for v in ontology.SIZES] + [("texture", v) for v in ontology.TEXTURES]
  for kind, value in values:
    for k in range(images_per_value):
      one = _one_object(spec, rng, kind, value)
      image = b.image(render.render(one), f"object {kind}={value} #{k}")
      for relation, text in _object_facts(graph, one.objects[0]):
        b.fact(image, relation, b.text(text))

  for index in range(min(num_train, max(region_scenes, caption_scenes))):
    scene = scene_lib.sample_scene(spec, "train", index)
    pixels = render.render(scene)
    if index < caption_scenes:
      whole = b.image(pixels, f"scene {index}")
      b.fact(b.text(caption_of(scene)), CAPTION_OF, whole)
    relations = scene.true_relations()
    if index >= region_scenes or not relations:
      continue
    chosen = rng.choice(len(relations), min(regions_per_scene, len(relations)),
                        replace=False)
    crops = {}
    for i, predicate, j in (relations[k] for k in sorted(chosen)):
      for o in (i, j):
        if o not in crops:
          obj = scene.objects[o]
          crops[o] = b.image(crop(pixels, obj), f"region {index}/{o}")
          b.fact(crops[o], knowledge.IS_A, b.text(obj.shape))
          b.fact(crops[o], HAS_COLOR, b.text(obj.color))
      b.fact(crops[i], predicate, crops[j])
  return b.finish(seed=spec.seed, heldout_fraction=heldout_fraction,
                  max_neighbours=max_neighbours)
