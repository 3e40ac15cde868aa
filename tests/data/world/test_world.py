"""Scenes, captions and suites of the synthetic world, checked against an independent
interpreter (``reference_interpreter``) that reads caption text and raw geometry."""

import collections
import itertools

import numpy as np
import pytest

import reference_interpreter as ref
from vlkg.data.world import captions as cap
from vlkg.data.world import ontology, scene as scene_lib, suites

HELDOUT = scene_lib.choose_heldout_pairs(0, 0.12)
SPEC = scene_lib.WorldSpec(seed=0, image_size=64, heldout_pairs=HELDOUT)


def scenes(split, n, spec=SPEC):
  return [scene_lib.sample_scene(spec, split, i) for i in range(n)]


def test_same_seed_same_scene_and_other_seed_differs():
  a = scenes("train", 20)
  assert a == scenes("train", 20)
  other = scene_lib.WorldSpec(seed=1, image_size=64, heldout_pairs=HELDOUT)
  assert a != scenes("train", 20, other)


def test_objects_inside_image_and_not_overlapping():
  for s in scenes("train", 300):
    assert 1 <= len(s.objects) <= 4
    for o in s.objects:
      x, y, w, h = o.box
      assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
    for a, b in itertools.combinations(s.objects, 2):
      overlap_x = min(a.cx + a.radius, b.cx + b.radius) - max(a.cx - a.radius, b.cx - b.radius)
      overlap_y = min(a.cy + a.radius, b.cy + b.radius) - max(a.cy - a.radius, b.cy - b.radius)
      assert overlap_x < 0 or overlap_y < 0


def test_all_object_counts_shapes_colors_occur():
  ss = scenes("train", 400)
  assert {len(s.objects) for s in ss} == {1, 2, 3, 4}
  assert {o.shape for s in ss for o in s.objects} == set(ontology.SHAPE_BY_NAME)
  assert {o.color for s in ss for o in s.objects} == set(ontology.COLOR_BY_NAME)
  assert len(ontology.SHAPES) >= 8 and len(ontology.COLORS) >= 8


def test_relations_are_antisymmetric_and_match_geometry():
  for s in scenes("val", 200):
    for i, pred, j in s.true_relations():
      assert s.relation_value(j, pred, i) == scene_lib.FALSE
      assert s.relation_value(j, ontology.CONVERSE[pred], i) == scene_lib.TRUE
      a, b = s.objects[i], s.objects[j]
      if pred == "left of":
        assert b.cx - a.cx > scene_lib.RELATION_MARGIN * 64
      if pred == "above":
        assert b.cy - a.cy > scene_lib.RELATION_MARGIN * 64


def test_heldout_pairs_cover_ten_percent_and_never_occur_in_train():
  assert len(HELDOUT) >= 0.10 * len(ontology.all_color_shape_pairs())
  # Every color and every shape keeps training partners.
  assert {c for c, _ in ontology.all_color_shape_pairs() if (c, _) not in HELDOUT} == set(
      ontology.COLOR_BY_NAME)
  train = scenes("train", 2000)
  assert not {(o.color, o.shape) for s in train for o in s.objects} & set(HELDOUT)
  comp = scenes("test_comp", 200)
  assert all((s.objects[0].color, s.objects[0].shape) in HELDOUT for s in comp)
  # No training caption names a held-out pair, under any synonym.
  rng = np.random.default_rng(0)
  for s in train[:500]:
    for text in cap.sample_captions(s, rng, 3):
      for clause in ref.parse(text):
        nps = [clause[1]] if clause[0] == "np" else [clause[1], clause[3]]
        for cons in nps:
          d = dict(cons)
          assert (d.get("color"), d.get("shape")) not in HELDOUT, text


def test_impossible_requests_fail_early_naming_the_value():
  with pytest.raises(scene_lib.WorldSpecError, match="max_objects"):
    scene_lib.WorldSpec(image_size=32, max_objects=9).validate()
  with pytest.raises(scene_lib.WorldSpecError, match="image_size"):
    scene_lib.WorldSpec(image_size=16).validate()
  with pytest.raises(scene_lib.WorldSpecError, match="test_comp_fraction"):
    scene_lib.choose_heldout_pairs(0, 0.95)


def test_every_caption_is_true_of_its_scene():
  rng = np.random.default_rng(1)
  kinds = collections.Counter()
  for s in scenes("train", 400):
    for text in cap.sample_captions(s, rng, 3):
      assert ref.is_true(text, s), text
      kinds[len(ref.parse(text))] += 1
      assert any(c[0] == "rel" for c in ref.parse(text)) or True
  assert kinds[1] > 0 and kinds[2] > 0 and kinds[3] > 0  # lengths vary


@pytest.mark.parametrize("p_color", [0.0, 0.3, 0.9])
def test_color_mention_rate_is_the_configured_one_and_captions_stay_true(p_color):
  rng = np.random.default_rng(3)
  colors = {c.name for c in ontology.COLORS}
  said = total = 0
  for s in scenes("train", 300):
    caption = cap.sample_caption(s, rng, 3, p_color)
    assert ref.is_true(cap.realise(caption, rng), s)
    phrases = [np_ for c in caption
               for np_ in ((c,) if isinstance(c, cap.NounPhrase) else (c.subject, c.object))]
    said += sum(np_.attribute("color") in colors for np_ in phrases)
    total += len(phrases)
  assert abs(said / total - p_color) < 0.05, (said, total)


def test_plain_scenes_have_one_object_and_colorless_captions():
  import ml_collections
  from vlkg.data.world import build
  world = ml_collections.ConfigDict(dict(caption_color_rate=0.9, captions_per_image=3,
                                         max_clauses=3))
  colors = {c.name for c in ontology.COLORS}
  colors |= {s for c in ontology.COLORS for s in c.synonyms}
  shapes = collections.Counter()
  for i in range(200):
    scene, texts = build.scene_and_captions(SPEC, world, "plain", i)
    assert len(scene.objects) == 1
    assert (scene.objects[0].color, scene.objects[0].shape) not in HELDOUT
    shapes[scene.objects[0].shape] += 1
    for text in texts:
      assert ref.is_true(text, scene) and not colors & set(text.split()), text
  assert len(shapes) == len(ontology.SHAPES)
  # The other splits are drawn as before.
  assert build.scene_and_captions(SPEC, world, "train", 7)[0] == \
      scene_lib.sample_scene(SPEC, "train", 7)


def test_train_texture_rate_sets_texture_alone():
  import ml_collections
  from vlkg.data.world import build
  base = dict(caption_color_rate=0.9, captions_per_image=3, max_clauses=3,
              train_attribute_rate=0.5)
  textures = {t for t in ontology.TEXTURES} | {
      s for t in ontology.TEXTURES for s in ontology.TEXTURE_SYNONYMS.get(t, ())}
  sizes = {s for s in ontology.SIZES} | {
      w for s in ontology.SIZES for w in ontology.SIZE_SYNONYMS.get(s, ())}
  said = collections.Counter()
  for i in range(200):
    scene, default_captions = build.scene_and_captions(
        SPEC, ml_collections.ConfigDict(base), "train", i)
    _, texture_captions = build.scene_and_captions(
        SPEC, ml_collections.ConfigDict({**base, "train_texture_rate": 1.0}), "train", i)
    if len(scene.objects) > 1 or scene.objects[0].texture == "solid":
      continue
    for a, b in zip(default_captions, texture_captions):
      said["size"] += bool(sizes & set(b.split()))
      said["size before"] += bool(sizes & set(a.split()))
      said["texture"] += bool(textures & set(b.split()))
      said["texture before"] += bool(textures & set(a.split()))
      said["captions"] += 1
  assert said["captions"] >= 20
  assert said["texture"] == said["captions"] > said["texture before"]
  # Size is said about as often (a said texture's wording shifts the later draws).
  assert abs(said["size"] - said["size before"]) <= 0.1 * said["captions"]
  # At None, the captions are train_attribute_rate's.
  none = ml_collections.ConfigDict({**base, "train_texture_rate": None})
  assert build.scene_and_captions(SPEC, none, "train", 3) == \
      build.scene_and_captions(SPEC, ml_collections.ConfigDict(base), "train", 3)


@pytest.mark.parametrize("key,split,other_split", [
    ("plain_attribute_rate", "plain", "train"),
    ("train_attribute_rate", "train", "test")])
def test_attribute_rates_set_how_often_captions_say_size_and_texture(key, split,
                                                                     other_split):
  import ml_collections
  from vlkg.data.world import build

  def rates(world, split):
    """All captions, and the share of one-object scenes' captions that say size, and
    texture (of non-solid objects)."""
    words = lambda canonical: {canonical, *ontology.TEXTURE_SYNONYMS.get(
        canonical, ontology.SIZE_SYNONYMS.get(canonical, ()))}
    texts, said, counted = [], collections.Counter(), collections.Counter()
    for i in range(300):
      scene, captions = build.scene_and_captions(SPEC, world, split, i)
      texts += captions
      if len(scene.objects) > 1:
        continue
      obj = scene.objects[0]
      for text in captions:
        counted["size"] += 1
        said["size"] += bool(words(obj.size) & set(text.split()))
        if obj.texture != "solid":
          counted["texture"] += 1
          said["texture"] += bool(words(obj.texture) & set(text.split()))
    assert counted["texture"] >= 50
    return texts, {k: said[k] / counted[k] for k in counted}

  base = dict(caption_color_rate=0.9, captions_per_image=3, max_clauses=3)
  before, _ = rates(ml_collections.ConfigDict(base), split)
  default, low = rates(ml_collections.ConfigDict({**base, key: 0.5}), split)
  _, high = rates(ml_collections.ConfigDict({**base, key: 1.0}), split)
  assert default == before  # the default writes the captions written before
  assert high["size"] == 1.0 and low["size"] < 0.7
  assert high["texture"] == 1.0 and low["texture"] < 0.7
  # Other splits ignore it.
  assert rates(ml_collections.ConfigDict({**base, key: 1.0}), other_split)[0] == \
      rates(ml_collections.ConfigDict(base), other_split)[0]


def test_position_phrase_hand_worked():
  obj = lambda cx, cy: scene_lib.WorldObject("square", "red", "small", "solid", cx, cy,
                                             5.0, 0.0, (255, 0, 0))
  # 64 pixels: the middle is 32 and the margin 0.12 * 64 = 7.68.
  assert cap.position_phrase(obj(10, 10), 64) == "at the top left"
  assert cap.position_phrase(obj(50, 55), 64) == "at the bottom right"
  assert cap.position_phrase(obj(50, 30), 64) == "on the right"
  assert cap.position_phrase(obj(24.0, 30), 64) == "on the left"
  assert cap.position_phrase(obj(24.5, 30), 64) == "in the middle"
  assert cap.position_phrase(obj(33, 41), 64) == "at the bottom"
  wordings = {cap.position_phrase(obj(10, 10), 64, np.random.default_rng(i))
              for i in range(20)}
  assert wordings == {"at the top left", "in the top left corner"}


def test_position_rate_ends_one_object_captions_with_where_the_object_is():
  import ml_collections
  from vlkg.data.world import build

  base = dict(caption_color_rate=0.9, captions_per_image=3, max_clauses=3)
  world = lambda **kw: ml_collections.ConfigDict({**base, **kw})
  said = 0
  for i in range(60):
    scene, before = build.scene_and_captions(SPEC, world(), "plain", i)
    assert build.scene_and_captions(SPEC, world(position_rate=0.0), "plain",
                                    i)[1] == before
    _, after = build.scene_and_captions(SPEC, world(position_rate=1.0), "plain", i)
    obj = scene.objects[0]
    true_phrases = {p.format(h=h, v=v) for p in itertools.chain(
        *cap.POSITION_PHRASES.values()) for h in ("left", "right") for v in ("top", "bottom")}
    for old, new in zip(before, after):
      # The caption is the one written without the key, then where its object is.
      assert new.startswith(old + " ")
      phrase = new[len(old) + 1:]
      assert phrase in true_phrases
      assert phrase in {cap.position_phrase(obj, 64, np.random.default_rng(k))
                        for k in range(20)}
      said += 1
  assert said == 180
  # In the other splits, one-object scenes say it too, and the others do not.
  counts = collections.Counter()
  for i in range(40):
    scene, before = build.scene_and_captions(SPEC, world(), "train", i)
    _, after = build.scene_and_captions(SPEC, world(position_rate=1.0), "train", i)
    one = len(scene.objects) == 1
    counts[one] += 1
    assert all(a.startswith(b + " ") for a, b in zip(after, before)) if one else (
        after == before)
  assert counts[True] > 0 and counts[False] > 0


def test_caption_wording_varies_with_synonyms_and_templates():
  rng = np.random.default_rng(2)
  texts = [t for s in scenes("train", 300) for t in cap.sample_captions(s, rng, 3)]
  words = {w for t in texts for w in t.split()}
  assert {"big", "little", "oval", "there", "picture"} <= words
  assert len({len(t.split()) for t in texts}) >= 10


@pytest.mark.parametrize("suite", suites.SUITES)
@pytest.mark.parametrize("split", ["test", "test_comp"])
def test_every_suite_item_is_true_vs_false(suite, split):
  made = 0
  for s in scenes(split, 150):
    rng = np.random.default_rng([s.index, 5])
    item = suites.make_item(suite, s, rng, 0 if split == "test_comp" else None)
    if item is None:
      continue
    made += 1
    assert item.false_captions and all(f != item.true_caption for f in item.false_captions)
    if suite == "order":
      assert sorted(item.false_captions[0].split()) == sorted(item.true_caption.split())
      continue
    assert ref.is_true(item.true_caption, s), item
    for false in item.false_captions:
      assert ref.is_clearly_false(false, s), (item, false)
    if split == "test_comp" and suite != "knowledge":
      # The item is about the held-out object: its color and shape are both named.
      o = s.objects[0]
      assert o.color in item.true_caption and o.shape in item.true_caption or any(
          syn in item.true_caption for syn in ontology.surface_forms(o.shape)), item
  assert made >= 40, (suite, made)


def test_knowledge_captions_use_no_training_words_for_color_or_shape():
  rng = np.random.default_rng(3)
  training_words = {w for form, c in ontology.lexicon().items()
                    if c in ontology.COLOR_BY_NAME or c in ontology.SHAPE_BY_NAME
                    for w in form.split()}
  for s in scenes("test", 100):
    item = suites.make_item("knowledge", s, rng)
    if item:
      assert not set(item.true_caption.split()) & training_words, item.true_caption


def test_knowledge_example_by_hand():
  red_square = scene_lib.WorldObject("square", "red", "large", "solid", 20, 20, 10, 0,
                                     (214, 39, 40))
  s = scene_lib.Scene("test", 0, 64, (red_square,), 0)
  np_ = cap.NounPhrase(None, (), (("family", "warm"), ("corners", "4")))
  assert cap.realise_np(np_) == "a warm-colored shape with four corners"
  assert cap.caption_value((np_,), s) == scene_lib.TRUE
  cool = cap.NounPhrase(None, (), (("family", "cool"), ("corners", "4")))
  assert cap.caption_value((cool,), s) == scene_lib.FALSE


def test_a_world_with_position_phrases_keeps_the_tokenizer_of_the_world_without(tmp_path):
  from configs import clip
  from vlkg.data import world as world_lib
  from vlkg.data.world import build
  descs, captions = [], []
  for rate in (0.0, 1.0):
    config = clip.get_config(f"smoke,world.num_train=64,world.position_rate={rate}")
    world_cfg = world_lib.settings(config)
    spec = build.world_spec(world_cfg)
    out = tmp_path / str(rate)
    out.mkdir()
    descs.append(build._train_tokenizer(str(out), spec, world_cfg, [], config.input.text_len))
    captions.append([t for i in range(64)
                     for t in build.scene_and_captions(spec, world_cfg, "train", i)[1]])
  assert captions[0] != captions[1]  # the training captions differ ...
  assert descs[0]["model_sha256"] == descs[1]["model_sha256"]  # ... the tokenizer not
