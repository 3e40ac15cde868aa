"""Tests for the world's knowledge graph (vlkg/data/world/knowledge.py).

The graph must agree with ontology.py exactly, since it is the only route by which
a model can learn the knowledge-only aliases.
"""

from __future__ import annotations

import pytest

from vlkg.data.world import knowledge, knowledge_queries
from vlkg.data.world import ontology


@pytest.fixture(scope="module")
def graph():
  return knowledge.build_knowledge_graph()


def _all_aliases() -> dict[str, str]:
  out = {}
  for item in (*ontology.SHAPES, *ontology.COLORS):
    for alias in item.aliases:
      out[alias] = item.name
  return out


def test_number_word():
  assert knowledge.number_word(0) == "no"
  assert knowledge.number_word(3) == "three"
  assert knowledge.number_word(10) == "ten"
  assert knowledge.number_word(12) == "twelve"
  assert knowledge.corners_phrase(4) == "four corners"
  assert knowledge.corners_phrase(0) == "no corners"
  assert knowledge.corners_phrase(1) == "one corner"
  for bad in (-1, 21, 2.0, True):
    with pytest.raises(ValueError):
      knowledge.number_word(bad)


def test_members_of_families(graph):
  assert knowledge_queries.members(graph, "warm color") == {"red", "orange", "yellow", "pink"}
  assert knowledge_queries.members(graph, "cool color") == {"green", "cyan", "blue", "purple"}
  assert knowledge_queries.members(graph, "color") == {c.name for c in ontology.COLORS}
  assert knowledge_queries.members(graph, "size") == {"small", "large"}
  assert knowledge_queries.members(graph, "texture") == {"solid", "striped", "hollow"}
  assert knowledge_queries.members(graph, "relation") == set(ontology.RELATIONS)
  assert knowledge_queries.members(graph, "red") == set()
  with pytest.raises(KeyError, match="nope"):
    knowledge_queries.members(graph, "nope")


def test_members_of_shape_classes(graph):
  assert knowledge_queries.members(graph, "four corners") == {"square", "diamond"}
  assert knowledge_queries.members(graph, "no corners") == {"circle", "ellipse"}
  assert knowledge_queries.members(graph, "twelve corners") == {"cross"}
  assert knowledge_queries.members(graph, "round shape") == {"circle", "ellipse"}
  assert knowledge_queries.members(graph, "polygon") == {
      "triangle", "square", "diamond", "pentagon", "hexagon", "star", "cross"}
  assert knowledge_queries.members(graph, "non-convex") == {"star", "cross"}
  assert knowledge_queries.members(graph, "convex") == {
      "circle", "ellipse", "triangle", "square", "diamond", "pentagon", "hexagon"}
  assert knowledge_queries.members(graph, "shape") == {s.name for s in ontology.SHAPES}


def test_corners_of_every_shape_match_ontology(graph):
  for shape in ontology.SHAPES:
    facts = knowledge_queries.concepts_of(graph, shape.name)
    assert facts["corners"] == knowledge.corners_phrase(shape.corners), shape.name
    assert graph.nodes[facts["corners"]]["kind"] == "corners"
    assert graph.nodes[facts["corners"]]["count"] == shape.corners
    assert facts["round"] == (shape.corners == 0), shape.name
    assert facts["polygon"] == (shape.corners >= 3), shape.name
    assert facts["convex"] == (shape.name not in ("star", "cross")), shape.name
  assert set(knowledge_queries.nodes_of_kind(graph, "corners")) == {
      "no corners", "three corners", "four corners", "five corners", "six corners",
      "ten corners", "twelve corners"}


def test_concepts_of_examples(graph):
  assert knowledge_queries.concepts_of(graph, "red") == {
      "family": "warm color", "aliases": ("scarlet",)}
  assert knowledge_queries.concepts_of(graph, "blue") == {
      "family": "cool color", "aliases": ("azure",)}
  assert knowledge_queries.concepts_of(graph, "square") == {
      "corners": "four corners", "round": False, "polygon": True, "convex": True,
      "aliases": ("quadrate",)}
  assert knowledge_queries.concepts_of(graph, "star")["corners"] == "ten corners"
  assert knowledge_queries.concepts_of(graph, "small") == {"opposite": "large", "aliases": ()}
  assert knowledge_queries.concepts_of(graph, "left of") == {
      "converse": "right of", "aliases": ()}
  assert knowledge_queries.concepts_of(graph, "striped") == {"aliases": ()}
  with pytest.raises(KeyError, match="resolve"):
    knowledge_queries.concepts_of(graph, "scarlet")
  with pytest.raises(KeyError, match="polygon"):
    knowledge_queries.concepts_of(graph, "polygon")


def test_every_alias_resolves(graph):
  all_aliases = _all_aliases()
  assert len(all_aliases) == 17
  for alias, canonical in all_aliases.items():
    assert knowledge_queries.resolve(graph, alias) == canonical
    assert graph.nodes[alias]["kind"] == "word"
  for item in (*ontology.SHAPES, *ontology.COLORS):
    assert knowledge_queries.aliases(graph, item.name) == tuple(sorted(item.aliases))


def test_every_training_word_resolves(graph):
  for form, canonical in ontology.lexicon().items():
    assert knowledge_queries.resolve(graph, form) == canonical, form
  assert knowledge_queries.resolve(graph, "disc") == "circle"
  assert knowledge_queries.resolve(graph, "to the left of") == "left of"
  assert knowledge_queries.synonyms(graph, "small") == ("little", "tiny")
  assert knowledge_queries.resolve(graph, "warm color") is None
  assert knowledge_queries.resolve(graph, "polygon") is None
  assert knowledge_queries.resolve(graph, "zebra") is None


def test_no_alias_is_a_training_surface_form():
  lexicon = ontology.lexicon()
  clashes = sorted(set(_all_aliases()) & set(lexicon))
  assert clashes == []


def test_node_kinds(graph):
  kinds = dict(graph.nodes(data="kind"))
  assert set(kinds.values()) == set(knowledge.KINDS)
  assert kinds["red"] == "color"
  assert kinds["square"] == "shape"
  assert kinds["left of"] == "relation"
  assert kinds["warm color"] == "family"
  assert kinds["polygon"] == "category"
  assert kinds["color"] == "category"
  assert kinds["disc"] == "word"
  assert knowledge_queries.nodes_of_kind(graph, "family") == ["cool color", "warm color"]


def test_specific_facts(graph):
  facts = set(knowledge.triples(graph))
  for fact in [
      ("red", "is a", "color"), ("red", "is a", "warm color"),
      ("square", "is a", "shape"), ("circle", "is a", "round shape"),
      ("square", "is a", "polygon"), ("star", "is a", "polygon"),
      ("small", "is a", "size"), ("striped", "is a", "texture"),
      ("left of", "is a", "relation"), ("square", "has", "four corners"),
      ("circle", "has", "no corners"), ("disc", "synonym of", "circle"),
      ("scarlet", "alias of", "red"), ("warm color", "opposite of", "cool color"),
      ("small", "opposite of", "large"), ("square", "is", "convex"),
      ("star", "is", "non-convex")]:
    assert fact in facts, fact
  assert {r for _, r, _ in facts} == set(knowledge.RELATIONS)
  # Every training synonym is in the graph.
  synonyms = {(form, canonical) for form, canonical in ontology.lexicon().items()
              if form != canonical}
  assert synonyms == {(h, t) for h, r, t in facts if r == "synonym of"}


def test_converse_and_opposite_symmetry(graph):
  facts = set(knowledge.triples(graph))
  converses = {(h, t) for h, r, t in facts if r == "converse of"}
  assert converses == set(ontology.CONVERSE.items())
  assert all((t, h) in converses for h, t in converses)
  opposites = {(h, t) for h, r, t in facts if r == "opposite of"}
  assert all((t, h) in opposites for h, t in opposites)


def test_triples_sorted_and_deterministic(graph):
  first = knowledge.triples(graph)
  assert first == sorted(first)
  assert len(first) == len(set(first)) == graph.number_of_edges()
  assert knowledge.triples(knowledge.build_knowledge_graph()) == first


def test_tsv_round_trip(graph, tmp_path):
  path = tmp_path / "sub" / "kg.tsv"
  knowledge.write_triples_tsv(graph, path)
  lines = path.read_text(encoding="utf-8").splitlines()
  assert lines[0].split("\t") == list(knowledge.triples(graph)[0])
  assert all(line.count("\t") == 2 for line in lines)
  again = knowledge.read_triples_tsv(path)
  assert knowledge.triples(again) == knowledge.triples(graph)
  assert dict(again.nodes(data="kind")) == dict(graph.nodes(data="kind"))
  assert dict(again.nodes(data="count")) == dict(graph.nodes(data="count"))
  second = tmp_path / "kg2.tsv"
  knowledge.write_triples_tsv(again, second)
  assert second.read_bytes() == path.read_bytes()
  assert knowledge_queries.concepts_of(again, "red") == knowledge_queries.concepts_of(graph, "red")


@pytest.mark.parametrize("bad_line, message", [
    ("red\tis a", "expected 3"),
    ("red\tis a\tcolor\textra", "expected 3"),
    ("", "expected 3"),
    ("red\t\tcolor", "relation"),
    ("\tis a\tcolor", "head"),
    ("red\tis_a\tcolor", "unknown relation"),
])
def test_malformed_tsv_line_names_file_and_line(tmp_path, bad_line, message):
  path = tmp_path / "bad.tsv"
  path.write_text(
      "red\tis a\tcolor\nblue\tis a\tcolor\n" + bad_line + "\ngreen\tis a\tcolor\n",
      encoding="utf-8")
  with pytest.raises(knowledge.KnowledgeGraphError, match=message) as info:
    knowledge.read_triples_tsv(path)
  assert f"{path}:3" in str(info.value)


def test_unknown_relation_allowed_when_asked(tmp_path):
  path = tmp_path / "extra.tsv"
  path.write_text("red\tsimilar to\torange\n", encoding="utf-8")
  graph = knowledge.read_triples_tsv(path, known_relations=None)
  assert knowledge.triples(graph) == [("red", "similar to", "orange")]
  assert graph.nodes["red"]["kind"] == "color"


def test_missing_tsv_names_path(tmp_path):
  path = tmp_path / "missing.tsv"
  with pytest.raises(FileNotFoundError, match="missing.tsv"):
    knowledge.read_triples_tsv(path)
