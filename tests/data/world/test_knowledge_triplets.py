"""The world's knowledge-graph triplets: image and text entities of every concept,
region crops and captions, none showing a held-out color-shape pair."""

from __future__ import annotations

import functools

import numpy as np

from vlkg.data.world import knowledge, knowledge_triplets as kt, ontology
from vlkg.data.world import scene as scene_lib


@functools.lru_cache(maxsize=1)
def _table():
  spec = scene_lib.WorldSpec(image_size=64,
                             heldout_pairs=scene_lib.choose_heldout_pairs(0, 0.12))
  return spec, kt.build_table(spec, lambda s: f"caption of scene {s.index}", 100,
                              region_scenes=8, caption_scenes=4)


def _facts(table, head=None, relation=None, tail=None):
  out = []
  for h, r, t in table.triplets:
    fact = (table.entity_text[h], table.relations[r], table.entity_text[t])
    if all(w is None or w == v for w, v in zip((head, relation, tail), fact)):
      out.append((int(h), fact))
  return out


def test_concept_facts_and_text_entities_are_names_synonyms_aliases():
  _, table = _table()
  graph = knowledge.build_knowledge_graph()
  texts = set(table.entity_text[~table.is_image].tolist())
  assert set(graph.nodes) <= texts
  for head, relation, tail in knowledge.triples(graph):
    assert _facts(table, head, relation, tail), (head, relation, tail)
  assert kt.forms(graph, "red") == ["red", "scarlet"]
  assert kt.forms(graph, "circle") == ["circle", "disc", "roundel"]


def test_every_visual_concept_gets_images_that_show_it():
  _, table = _table()
  # "red" gets red objects, named by each of its forms and its family.
  objects = lambda facts: {h for h, f in facts if f[0].startswith("object")}
  red = objects(_facts(table, relation="has color", tail="red"))
  assert len(red) >= kt.IMAGES_PER_VALUE
  assert red == objects(_facts(table, relation="has color", tail="scarlet"))
  assert red <= {h for h, _ in _facts(table, relation="has color", tail="warm color")}
  # "square" gets squares; "four corners" every shape with four corners.
  squares = objects(_facts(table, relation="is a", tail="square"))
  four = objects(_facts(table, relation="has", tail="four corners"))
  diamonds = objects(_facts(table, relation="is a", tail="diamond"))
  assert squares and diamonds and squares | diamonds == four
  for value in ("small", "large", "little", "striped", "stripy", "hollow"):
    assert _facts(table, tail=value), value
  for h in red:
    assert table.is_image[h]


def test_images_render_the_concept_and_avoid_heldout_pairs():
  spec, table = _table()
  heldout = set(spec.heldout_pairs)
  shapes = [s.name for s in ontology.SHAPES]
  for h, (name, _, color) in _facts(table, relation="has color"):
    if not name.startswith("object") or color not in ontology.COLOR_BY_NAME:
      continue
    (shape,) = [t for _, (_, _, t) in _facts(table, head=name, relation="is a")
                if t in shapes]
    assert (color, shape) not in heldout
    # The object's pixels are close to its color somewhere in the image.
    pixels = table.images[table.entity_image[h]].reshape(-1, 3).astype(int)
    rgb = np.array(ontology.COLOR_BY_NAME[color].rgb)
    assert np.abs(pixels - rgb).sum(-1).min() < 60, (name, color)


def test_regions_and_captions():
  spec, table = _table()
  regions = [f for _, f in _facts(table) if f[0].startswith("region")
             and f[2].startswith("region")]
  assert regions and all(f[1] in ontology.RELATIONS for f in regions)
  # Each region relation is true of its scene's two objects.
  for head, predicate, tail in regions:
    index, i = map(int, head.split()[1].split("/"))
    j = int(tail.split("/")[1])
    scene = scene_lib.sample_scene(spec, "train", index)
    assert (i, predicate, j) in scene.true_relations()
  captions = _facts(table, relation="is a caption of")
  assert [f[0] for _, f in captions] == [f"caption of scene {k}" for k in range(4)]
  assert all(f[2] == f"scene {k}" for k, (_, f) in enumerate(captions))
  assert table.images.shape[1:] == (64, 64, 3)
  assert 0 < table.heldout.sum() <= 0.1 * len(table.triplets) + 1
