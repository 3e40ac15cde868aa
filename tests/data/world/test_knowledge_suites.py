"""The world's knowledge-VQA and entity-linking suites: every answer checked against
the ontology independently of the graph queries that made it, descriptions that name
one object, balanced answers, candidates, and the round trip through the real
formats' readers on a tiny prepared world."""

from __future__ import annotations

import collections
import filecmp
import os
import shutil

import numpy as np
import pytest

from vlkg.data.benchmarks import okvqa, wikidiverse
from vlkg.data.world import (build, captions as cap, knowledge, knowledge_benchmarks,
                             kvqa_suite, linking_suite, ontology, referring)
from vlkg.data.world import scene as scene_lib

SPEC = scene_lib.WorldSpec(seed=0, image_size=64, max_objects=4,
                           heldout_pairs=scene_lib.choose_heldout_pairs(0, 0.12))
GRAPH = knowledge.build_knowledge_graph()
N = 600


def _obj(shape, color, cx, cy, size="small", texture="solid"):
  r = 6.0 if size == "small" else 10.0
  return scene_lib.WorldObject(shape, color, size, texture, cx, cy, r, 0.0, (0, 0, 0))


def _scene(*objects):
  return scene_lib.Scene("test", 0, 64, tuple(objects), 0)


@pytest.fixture(scope="module")
def scenes():
  return [scene_lib.sample_scene(SPEC, "test", i) for i in range(N)]


def _rng(i, stream):
  return np.random.default_rng([0, 2, i, stream])


def test_unique_descriptions_hide_what_is_asked():
  s = _scene(_obj("star", "red", 10, 32), _obj("circle", "red", 50, 32),
             _obj("square", "blue", 30, 10, size="large"))
  assert cap.realise_np(referring.unique_np(s, 2, "shape"), definite=True) == (
      "the blue shape")
  assert cap.realise_np(referring.unique_np(s, 0, "color"), definite=True) == "the star"
  assert referring.unique_np(s, 0, "shape") is None  # two red shapes, same size
  # Margins: TRUE past 7.68 px, FALSE under 2.56. The square is right of the star
  # but so is the circle; it is above both, and nothing else is above either.
  for seed in range(5):
    assert referring.relational(s, 2, np.random.default_rng(seed)) in (
        "the shape above the star", "the shape above the circle",
        "the shape bigger than the star", "the shape bigger than the circle")
  # The star: left of the circle (so is the square), left of the square (alone).
  assert referring.relational(s, 0, np.random.default_rng(0)) == (
      "the shape left of the square")


def _expected_answer(obj, question: str, kind: str) -> str:
  """The answer from the ontology alone (no graph queries)."""
  shape, color = ontology.SHAPE_BY_NAME[obj.shape], ontology.COLOR_BY_NAME[obj.color]
  if kind == "corners":
    return {0: "zero", 3: "three", 4: "four", 5: "five", 6: "six", 10: "ten",
            12: "twelve"}[shape.corners]
  if kind == "family":
    return "yes" if question.endswith(f" a {color.family} color?") else "no"
  if kind == "shape_class":
    convex = obj.shape not in ("star", "cross")
    truth = {" round?": shape.corners == 0, " a polygon?": shape.corners >= 3,
             " non-convex?": not convex, " convex?": convex}
    ending = next(e for e in truth if question.endswith(e))
    return "yes" if truth[ending] else "no"
  aliases = color.aliases if kind == "alias_shape" else shape.aliases
  assert any(f" {a} " in question or f" {a}?" in question for a in aliases), question
  return obj.shape if kind == "alias_shape" else obj.color


def test_questions_are_right_and_balanced(scenes):
  made = [kvqa_suite.make_question(s, GRAPH, _rng(i, 200)) for i, s in enumerate(scenes)]
  made = kvqa_suite.balance(made, np.random.default_rng(1))
  assert all(q is not None for q in made)
  by_type = collections.defaultdict(collections.Counter)
  for scene, q in zip(scenes, made):
    by_type[q.type][q.answer] += 1
    assert q.answer == _expected_answer(scene.objects[q.about], q.question, q.type), q
  assert set(by_type) == set(kvqa_suite.TYPES)
  for kind, counts in by_type.items():
    n = sum(counts.values())
    assert n > 40, kind  # every type is asked (shape classes need mixed scenes)
    if kind in ("family", "shape_class"):
      assert counts["yes"] == n // 2 and counts["no"] == n - n // 2, kind
    else:
      assert max(counts.values()) / n <= 0.35, (kind, counts)
  words = set(kvqa_suite.answer_words())
  assert all(q.answer in words for q in made)


def test_corner_question_on_a_hand_made_scene():
  s = _scene(_obj("square", "red", 10, 32), _obj("circle", "blue", 50, 32))
  for seed in range(40):
    q = kvqa_suite.make_question(s, GRAPH, np.random.default_rng(seed))
    if q.type == "corners" and "red" in q.question:
      assert q == kvqa_suite.Question("how many corners does the red shape have?",
                                      "four", "corners", 0)
      return
  pytest.fail("no corner question about the red shape in 40 draws")


def _first_group(mention: str, kind: str, gold: str) -> set[str]:
  """The candidates that must come first, from the ontology alone."""
  if kind == "color":
    family = ontology.COLOR_BY_NAME[gold].family
    return {c.name for c in ontology.COLORS if c.family == family}
  corners = {s.name: s.corners for s in ontology.SHAPES}
  same_class = {s for s, n in corners.items() if (n == 0) == (corners[gold] == 0)}
  if mention.startswith("shape with"):
    same = {s for s, n in corners.items() if n == corners[gold]}
    return same if len(same) > 1 else same_class
  return same_class  # round / polygonal shape, or an alias


def test_linking_items(scenes):
  first = n = none = 0
  for i, s in enumerate(scenes[:300]):
    made = linking_suite.make_item(s, GRAPH, _rng(i, 201))
    if made is None:  # no description of one object fits the drawn ways
      none += 1
      continue
    caption, mentions = made
    assert [m.type for m in mentions] == ["color", "shape"]
    for m in mentions:
      assert caption[m.start:m.end] == m.mention
      assert len(m.candidates) == linking_suite.NUM_CANDIDATES
      assert len(set(m.candidates)) == len(m.candidates)
      group = _first_group(m.mention, m.type, m.entity)
      assert len(group) > 1 and m.entity in group
      assert set(m.candidates[:len(group)]) == group, (m, group)
      n += 1
      first += m.candidates[0] == m.entity
    # The object with both gold attributes is in the scene.
    assert any((o.color, o.shape) == (mentions[0].entity, mentions[1].entity)
               for o in s.objects)
  assert first / n < 0.4  # a positional guess is no better than a guess
  assert none < 6


def test_kb_descriptions():
  kb = linking_suite.kb_descriptions(GRAPH)
  assert kb["red"] == "a warm color, also called scarlet"
  assert kb["square"] == "a polygon with four corners, convex, also called quadrate"
  assert kb["star"] == "a polygon with ten corners, non-convex, also called pentagram"
  assert kb["warm color"] == "a class of colors: orange, pink, red, yellow"
  assert len(kb) == len(ontology.COLORS) + len(ontology.SHAPES) + 4


def test_scene_from_record_keeps_every_relation(scenes):
  for s in scenes[:200]:
    attrs, boxes = build._object_fields(s, SPEC.max_objects)
    back = knowledge_benchmarks.scene_from_record(s.split, s.index, 64, attrs, boxes,
                                                  len(s.objects))
    assert back.true_relations() == s.true_relations()
    assert [(o.shape, o.color, o.size, o.texture) for o in back.objects] == [
        (o.shape, o.color, o.size, o.texture) for o in s.objects]


# ------------------------------------------------------- on a tiny prepared world


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  from configs import clip
  from vlkg.data import prepare
  root = tmp_path_factory.mktemp("data")
  return prepare.ensure_prepared(clip.get_config(
      "smoke,world.num_train=64,world.num_val=16,world.num_test=16,"
      f"world.num_test_comp=16,world.num_shards=2,world.workers=1,data_dir='{root}'"))


def test_build_writes_the_suites_and_readers_read_them(dataset):
  for split in knowledge_benchmarks.SPLITS:
    assert knowledge_benchmarks.is_complete(dataset, split)
    items, subtype = okvqa.read_okvqa(*knowledge_benchmarks.okvqa_files(dataset, split))
    assert subtype == split and len(items) == 16
    assert all(it.answers == (it.answers[0],) * 10 for it in items)
    assert okvqa.find_okvqa_files(knowledge_benchmarks.folder(
        dataset, split, "okvqa")) == knowledge_benchmarks.okvqa_files(dataset, split)
    passages, mentions, kb = knowledge_benchmarks.wikidiverse_files(dataset, split)
    read = wikidiverse.read_mentions(mentions)
    n_passages = len(wikidiverse.read_passages(passages))
    assert n_passages >= 15 and len(read) == 2 * n_passages
    assert wikidiverse.find_files(knowledge_benchmarks.folder(
        dataset, split, "wikidiverse"), split) == (mentions, kb)
    assert len(wikidiverse.read_kb(kb)) == 21
    bench = os.path.join(dataset, "benchmarks")
    assert all(os.path.isfile(wikidiverse.image_path(bench, m.img_url)) for m in read)
    # Same scenes as the build's own: the stored records give the scenes back.
    spec = build.world_spec(_tiny_world())
    for it in items:
      scene = scene_lib.sample_scene(spec, split, it.image_id)
      q = kvqa_suite.make_question(scene, GRAPH, np.random.default_rng(
          [0, scene_lib.SPLITS.index(split), it.image_id, 200]))
      assert it.question in (q.question, q.negated) and q.type == it.question_type
  assert not os.path.exists(knowledge_benchmarks.folder(dataset, "test_comp", "okvqa"))


def _tiny_world():
  from configs import clip
  from vlkg.data import world as world_lib
  return world_lib.settings(clip.get_config("smoke"))


def test_a_dataset_prepared_earlier_gets_the_same_files(dataset, tmp_path):
  copy = str(tmp_path / "world")
  shutil.copytree(dataset, copy)
  for split in knowledge_benchmarks.SPLITS:
    for suite in ("okvqa", "wikidiverse"):
      shutil.rmtree(knowledge_benchmarks.folder(copy, split, suite))
    assert not knowledge_benchmarks.is_complete(copy, split)
    assert knowledge_benchmarks.ensure(copy, split) is None
    for suite in ("okvqa", "wikidiverse"):
      a, b = (knowledge_benchmarks.folder(d, split, suite) for d in (dataset, copy))
      assert sorted(os.listdir(a)) == sorted(os.listdir(b))
      _, mismatch, errors = filecmp.cmpfiles(a, b, os.listdir(a), shallow=False)
      assert not mismatch and not errors
  # A file deleted by hand is written again.
  os.remove(knowledge_benchmarks.okvqa_files(copy, "test")[1])
  knowledge_benchmarks.ensure(copy, "test")
  assert knowledge_benchmarks.is_complete(copy, "test")
  assert not [n for n in os.listdir(os.path.join(copy, "benchmarks", "test"))
              if ".tmp-" in n]


def test_train_questions_come_from_the_train_records(dataset):
  from vlkg.data import input_pipeline
  images, items = knowledge_benchmarks.train_vqa_items(dataset, 40)
  assert 30 <= len(items) <= 40 and len(images) == len(items)
  ids = [it.image_id for it in items]
  assert ids == sorted(set(ids)) and max(ids) < 40
  spec = build.world_spec(_tiny_world())
  for it in items:  # drawn as the written suites are, on the train scenes
    scene = scene_lib.sample_scene(spec, "train", it.image_id)
    q = kvqa_suite.make_question(scene, GRAPH, np.random.default_rng(
        [0, scene_lib.SPLITS.index("train"), it.image_id, 200]))
    assert it.question in (q.question, q.negated) and q.type == it.question_type
  stored = {}
  for batch in input_pipeline.eval_iterator(dataset, "train", batch_size=64,
                                            fields=("image",)):
    for row in np.flatnonzero(batch["_mask"]):
      stored[int(batch["index"][row])] = batch["image"][row]
  for it, image in zip(items, images):
    np.testing.assert_array_equal(image, stored[it.image_id])
