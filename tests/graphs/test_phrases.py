"""Object phrases from a caption's scene graph: world captions (canonical graph words
against the caption's synonyms) and free captions (plurals, multi-word nouns)."""

import numpy as np

from vlkg import config as config_lib
from vlkg.data import world as world_lib
from vlkg.data.world import build, scene as scene_lib
from vlkg.graphs import general_parser, negatives, phrases, world_parser
from vlkg.graphs.scene_graph import SceneGraph

WORLD = negatives.world_vocabulary().synonyms


def words_of(text, spans):
  return [" ".join(text.split()[a:b]) for a, b in spans]


def test_world_phrases_are_each_objects_own_words():
  text = "a big pink striped cross to the left of a small disc, and a teal star"
  graph = world_parser.parse(text)  # "large", "circle", "cyan": canonical words
  spans = phrases.object_phrase_words(text, graph, WORLD)
  assert words_of(text, spans) == ["a big pink striped cross", "a small disc,",
                                   "a teal star"]
  # Without the synonyms "big" is not "large", "disc" not "circle", "teal" not "cyan".
  assert words_of(text, phrases.object_phrase_words(text, graph)) == [
      "pink striped cross", "star"]


def test_every_world_phrase_says_exactly_its_object():
  cfg = world_lib.settings(config_lib.base_config("smoke"))
  spec = build.world_spec(cfg)
  checked = 0
  for index in range(100):
    scene = scene_lib.sample_scene(spec, "train", index)
    for text in build.scene_captions(spec, cfg, scene):
      graph = world_parser.parse(text)
      spans = phrases.object_phrase_words(text, graph, WORLD)
      assert len(spans) == len(graph.objects), text
      for i, said in enumerate(words_of(text, spans)):
        assert said.split()[0] in ("a", "an", "the"), said
        alone = world_parser.parse(said.rstrip(","))
        assert alone == SceneGraph((graph.objects[i],),
                                   tuple((0, a) for a in graph.attributes_of(i))), said
        checked += 1
  assert checked > 300


def test_free_caption_phrases_plurals_and_compound_nouns():
  parser = general_parser.default_parser()
  cases = {
      "Two people holding umbrellas in the rain.": ["Two people", "umbrellas", "the rain."],
      "two fire hydrants on a sidewalk": ["two fire hydrants", "a sidewalk"],
      "a black and white cat on a red sofa": ["white cat", "a red sofa"],
      "A bathroom with a toilet, sink and mirror.": ["A bathroom", "a toilet,", "sink",
                                                      "mirror."],
  }
  for text, want in cases.items():
    assert words_of(text, phrases.object_phrase_words(text, parser.parse(text))) == want


def test_an_object_the_text_does_not_name_has_no_phrase():
  truth = SceneGraph(("puppy", "ball"), ((0, "small"),), ((0, "chasing", 1),))
  text = "a small dog chasing a ball"
  assert words_of(text, phrases.object_phrase_words(text, truth)) == ["a ball"]


def test_span_mask_marks_the_tokens_of_each_span():
  mask = np.asarray(phrases.span_mask(np.array([[1, 3], [0, 0]]), 5))
  assert mask.tolist() == [[False, True, True, False, False], [False] * 5]
