"""Caption -> scene-graph parsers: exact graphs on hand-written captions, and the
world parser's round trip on sampled captions (Structure-CLIP, Huang et al., AAAI 2024: Structure-CLIP's
rule-based text scene-graph parser)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vlkg import graphs
from vlkg.data.world import captions, ontology, scene
from vlkg.graphs import general_parser, world_parser
from vlkg.graphs.scene_graph import SceneGraph

REPO = pathlib.Path(__file__).resolve().parents[2]


def G(objects, attributes=(), relations=()) -> SceneGraph:
  return SceneGraph(tuple(objects), tuple(tuple(a) for a in attributes),
                    tuple(tuple(r) for r in relations))


def gparse(text: str) -> SceneGraph:
  return general_parser.parse(text)


# ------------------------------------------------------------- general parser


def test_verb_phrase_attaches_to_the_head_noun():
  assert gparse("a man in a red shirt riding a brown horse") == G(
      ["man", "shirt", "horse"], [[1, "red"], [2, "brown"]],
      [[0, "in", 1], [0, "riding", 2]])


def test_counts_plurals_and_multiword_relation():
  assert gparse("two white towels hanging by the blue shower") == G(
      ["towel", "shower"], [[0, "two"], [0, "white"], [1, "blue"]],
      [[0, "hanging by", 1]])


def test_prepositions_attach_to_the_nearest_noun():
  assert gparse("a dog with a frisbee in its mouth") == G(
      ["dog", "frisbee", "mouth"], [], [[0, "with", 1], [1, "in", 2]])


@pytest.mark.parametrize("plural,lemma", [
    ("men", "man"), ("women", "woman"), ("people", "person"), ("children", "child"),
    ("mice", "mouse"), ("geese", "goose"), ("feet", "foot"), ("teeth", "tooth"),
    ("knives", "knife"), ("leaves", "leaf"), ("shelves", "shelf"), ("dogs", "dog"),
    ("buses", "bus"), ("boxes", "box"), ("benches", "bench"),
    ("strawberries", "strawberry"), ("tomatoes", "tomato"), ("hot dogs", "hot dog"),
    ("wine glasses", "wine glass"), ("sheep", "sheep")])
def test_plurals_become_singular_lemmas(plural, lemma):
  assert gparse(f"three {plural}") == G([lemma], [[0, "three"]])


def test_plural_subject_and_object():
  assert gparse("men riding horses") == G(["man", "horse"], [], [[0, "riding", 1]])
  assert gparse("the women and children near the geese") == G(
      ["woman", "child", "goose"], [], [[1, "near", 2]])


def test_binding_follows_the_noun():
  white_dog = gparse("a white dog and a black cat")
  black_dog = gparse("a black dog and a white cat")
  assert white_dog == G(["dog", "cat"], [[0, "white"], [1, "black"]])
  assert black_dog == G(["dog", "cat"], [[0, "black"], [1, "white"]])
  assert white_dog != black_dog
  assert white_dog.canonical() != black_dog.canonical()


def test_attribute_lists_with_and():
  assert gparse("a black and white dog") == G(["dog"], [[0, "black"], [0, "white"]])
  assert gparse("a bright orange and white cat") == G(
      ["cat"], [[0, "bright"], [0, "orange"], [0, "white"]])
  assert gparse("a large, red circle") == G(["circle"], [[0, "large"], [0, "red"]])


def test_noun_phrase_conjunctions():
  # Not distributed: only the nearest noun phrase is on the sofa (module docstring).
  assert gparse("a cat and a dog on a sofa") == G(
      ["cat", "dog", "sofa"], [], [[1, "on", 2]])
  assert gparse("a man wearing a hat and sunglasses") == G(
      ["man", "hat", "sunglasses"], [], [[0, "wearing", 1], [0, "wearing", 2]])
  assert gparse("a man riding a horse and holding a whip") == G(
      ["man", "horse", "whip"], [], [[0, "riding", 1], [0, "holding", 2]])
  assert gparse("a kitchen with a white refrigerator and a black stove") == G(
      ["kitchen", "refrigerator", "stove"], [[1, "white"], [2, "black"]],
      [[0, "with", 1]])


def test_longest_relation_phrases():
  assert gparse("a lamp next to a bed") == G(["lamp", "bed"], [], [[0, "next to", 1]])
  assert gparse("a cat laying on top of a laptop keyboard") == G(
      ["cat", "laptop keyboard"], [], [[0, "laying on top of", 1]])
  assert gparse("a silver car parked in front of a brick building") == G(
      ["car", "building"], [[0, "silver"], [1, "brick"]],
      [[0, "parked in front of", 1]])
  assert gparse("a giraffe standing around a tree") == G(
      ["giraffe", "tree"], [], [[0, "standing around", 1]])


def test_noun_or_attribute_by_context():
  assert gparse("an orange cat sitting next to an orange") == G(
      ["cat", "orange"], [[0, "orange"]], [[0, "sitting next to", 1]])
  assert gparse("a glass of wine on a glass table") == G(
      ["glass", "wine", "table"], [[2, "glass"]], [[0, "of", 1], [1, "on", 2]])


def test_predicative_attributes_and_possessives():
  assert gparse("the dog is brown and the cat is black") == G(
      ["dog", "cat"], [[0, "brown"], [1, "black"]])
  assert gparse("a man's hat on a table") == G(
      ["man", "hat", "table"], [], [[0, "has", 1], [1, "on", 2]])


def test_determiners_adverbs_and_unknown_words_are_skipped():
  assert gparse("A MAN, happily riding his HORSE!!!") == G(
      ["man", "horse"], [], [[0, "riding", 1]])
  assert gparse("a picture of some people walking down a street") == G(
      ["person", "street"], [], [[0, "walking down", 1]])
  assert gparse("a zorblax riding a horse") == G(["horse"])


def test_user_vocabulary_extends_the_packaged_one():
  parser = general_parser.GeneralParser(
      objects=["zebu"], attributes=["humped"], relations=["grazing beside"])
  assert parser.parse("two humped zebus grazing beside a cow") == G(
      ["zebu", "cow"], [[0, "two"], [0, "humped"]], [[0, "grazing beside", 1]])
  assert parser.parse("a man riding a horse") == gparse("a man riding a horse")
  assert gparse("two humped zebus grazing beside a cow").objects == ("cow",)


def test_packaged_vocabulary_sizes():
  sizes = general_parser.default_parser().vocabulary_sizes()
  assert sizes["objects"] >= 300 and sizes["attributes"] >= 100
  assert sizes["relations"] >= 50
  for name, minimum in (("objects", 300), ("attributes", 100), ("relations", 50)):
    path = general_parser.LEXICON_DIR / f"{name}.txt"
    assert len(general_parser.read_lexicon(path)) >= minimum


@pytest.mark.parametrize("text", [
    "", "   ", "!!!?,.", "\u4e2d\u6587 \u2603", "caf\u00e9 au lait", "xyzzy plugh",
    "and and , of the", None, "a " * 3000])
def test_bad_input_gives_an_empty_graph(text):
  assert gparse(text) == SceneGraph()
  assert world_parser.parse(text) == SceneGraph()


def test_bad_input_gives_a_partial_graph():
  assert gparse("un caf\u00e9 near a dog\u2019s bowl") == G(
      ["dog", "bowl"], [], [[0, "has", 1]])
  long_caption = ("a man riding a brown horse next to a river, " * 120)[:5000]
  assert len(long_caption) == 5000
  g = gparse(long_caption)
  assert g.objects[:3] == ("man", "horse", "river") and len(g.objects) > 300
  assert g.relations[:2] == ((0, "riding", 1), (1, "next to", 2))
  assert world_parser.parse(long_caption) == SceneGraph()


def test_triples_of_a_parsed_caption():
  assert gparse("a man in a red shirt riding a brown horse").triples() == [
      ("shirt", "is", "red"), ("horse", "is", "brown"),
      ("man", "in", "shirt"), ("man", "riding", "horse")]


def test_backends():
  text = "a big stripy oval to the left of a tiny teal plus"
  assert graphs.parse(text) == gparse(text)
  assert graphs.parse(text, backend="world") == world_parser.parse(text)
  with pytest.raises(ValueError, match="backend"):
    graphs.parse(text, backend="nope")


def test_spacy_backend_names_spacy_when_missing():
  try:
    import spacy  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    with pytest.raises(ImportError, match="spaCy"):
      graphs.parse("a dog", backend="spacy")
  else:
    pytest.skip("spaCy is installed")


def _cli(*args: str) -> dict:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  out = subprocess.run([sys.executable, "-m", "vlkg.tools.parse", *args], cwd=REPO,
                       env=env, capture_output=True, text=True, check=True).stdout
  assert out.count("\n") == 1  # one line
  return json.loads(out)


def test_cli_prints_the_graph_json():
  text = "a man in a red shirt riding a brown horse"
  out = _cli(text)
  assert set(out) == {"objects", "attributes", "relations"}
  assert out == gparse(text).to_json()
  world = _cli("there is a big oval beneath a square", "--backend", "world")
  assert world == {"objects": ["ellipse", "square"], "attributes": [[0, "large"]],
                   "relations": [[0, "below", 1]]}


# --------------------------------------------------------------- world parser


def test_world_parser_canonical_words():
  assert world_parser.parse("a big stripy oval to the left of a tiny teal plus") == G(
      ["ellipse", "cross"], [[0, "large"], [0, "striped"], [1, "small"], [1, "cyan"]],
      [[0, "left of", 1]])
  assert world_parser.parse(
      "an image of a little green cross smaller than a big violet star, "
      "a filled hexagon and a red rhombus") == G(
          ["cross", "star", "hexagon", "diamond"],
          [[0, "small"], [0, "green"], [1, "large"], [1, "purple"], [2, "solid"],
           [3, "red"]],
          [[0, "smaller than", 1]])


def test_world_parser_aro_captions():
  assert world_parser.parse("the red circle is left of the blue square") == G(
      ["circle", "square"], [[0, "red"], [1, "blue"]], [[0, "left of", 1]])
  assert world_parser.parse("the blue square is beneath the red disc") == G(
      ["square", "circle"], [[0, "blue"], [1, "red"]], [[0, "below", 1]])
  assert world_parser.parse("the large star and the small star") == G(
      ["star", "star"], [[0, "large"], [1, "small"]])


def test_world_parser_knowledge_noun_phrases_keep_concept_words():
  assert world_parser.parse("a warm-colored shape with four corners") == G(
      ["shape"], [[0, "warm-colored"], [0, "four corners"]])
  assert world_parser.parse("a scarlet crux") == G(["crux"], [[0, "scarlet"]])
  assert world_parser.parse(
      "a round cool-colored shape above a polygonal azure shape with no corners") == G(
          ["shape", "shape"],
          [[0, "round"], [0, "cool-colored"], [1, "polygonal"], [1, "azure"],
           [1, "no corners"]],
          [[0, "above", 1]])


def test_world_parser_strict_mode():
  with pytest.raises(ValueError, match="zebra"):
    world_parser.parse("a red zebra", strict=True)
  assert world_parser.parse("a red zebra") == SceneGraph()


@pytest.fixture(scope="module")
def world_captions() -> list[tuple[captions.Caption, str]]:
  spec = scene.WorldSpec(heldout_pairs=scene.choose_heldout_pairs(0, 0.12))
  out = []
  for i in range(10_000):
    s = scene.sample_scene(spec, "train", i)
    rng = np.random.default_rng(i)
    caption = captions.sample_caption(s, rng)
    out.append((caption, captions.realise(caption, rng)))
  return out


def test_world_round_trip_on_10000_captions(world_captions):
  wrong = [text for caption, text in world_captions
           if world_parser.parse(text, strict=True) != world_parser.graph_of(caption)]
  assert not wrong, wrong[:5]
  # The sample covers every part of the grammar.
  texts = " ".join(t for _, t in world_captions)
  for phrase in ("there is", "a picture of", "an image of", ", ", " and ", "to the left of",
                 "beneath", "larger than", "stripy", "oval", "plus", "teal", "tiny"):
    assert phrase in texts, phrase


def test_world_round_trip_on_knowledge_and_aro_captions():
  spec = scene.WorldSpec(heldout_pairs=scene.choose_heldout_pairs(0, 0.12))
  checked = 0
  for i in range(500):
    s = scene.sample_scene(spec, "test", i)
    rng = np.random.default_rng(i)
    objs = s.objects
    caption: captions.Caption = (captions.knowledge_np(objs[0], rng),)
    for a, pred, b in s.true_relations()[:1]:
      caption = (captions.Relation(captions.knowledge_np(objs[a], rng), pred,
                                   captions.knowledge_np(objs[b], rng)),) + caption
      aro = captions.Relation(captions.full_np(objs[a]), pred, captions.full_np(objs[b]))
      text = captions.realise_clause(aro, definite=True, copula=True)
      assert world_parser.parse(text, strict=True) == world_parser.graph_of((aro,)), text
      checked += 1
    text = captions.realise(caption, rng, prefix=False)
    assert world_parser.parse(text, strict=True) == world_parser.graph_of(caption), text
  assert checked > 100


def _canonical_words(g: SceneGraph) -> SceneGraph:
  lexicon = ontology.lexicon()
  c = lambda w: lexicon.get(w, w)
  return SceneGraph(tuple(c(o) for o in g.objects),
                    tuple((i, c(a)) for i, a in g.attributes),
                    tuple((s, c(p), o) for s, p, o in g.relations))


def test_general_parser_agrees_with_world_parser(world_captions):
  texts = [text for _, text in world_captions]
  agree = sum(_canonical_words(gparse(t)) == world_parser.parse(t) for t in texts)
  assert agree / len(texts) >= 0.99


# ------------------------------------------------------------- conversions


def test_scene_graph_json_and_networkx_round_trips():
  g = G(["man", "horse", "hat"], [(0, "tall"), (1, "brown"), (1, "old")],
        [(0, "riding", 1), (0, "wearing", 2)])
  assert SceneGraph.from_json(json.dumps(g.to_json())) == g
  nxg = g.to_networkx()
  assert nxg.nodes[1] == {"name": "horse", "attributes": ["brown", "old"]}
  assert sorted((s, o, d["predicate"]) for s, o, d in nxg.edges(data=True)) == [
      (0, 1, "riding"), (0, 2, "wearing")]
  assert SceneGraph.from_networkx(nxg) == g
