"""vlkg.graphs.kg.read on small files written in the real formats."""

from __future__ import annotations

import gzip
import json

import pytest

from vlkg import errors
from vlkg.graphs import kg

CONCEPTNET = [
    "/a/[/r/IsA/,/c/en/ice_cream/n/,/c/en/dessert/]\t/r/IsA\t/c/en/ice_cream/n"
    "\t/c/en/dessert\t{\"dataset\": \"/d/conceptnet/4/en\", \"weight\": 2.0}",
    "/a/[/r/IsA/,/c/en/ice_cream/n/wn/food/,/c/en/dessert/n/]\t/r/IsA"
    "\t/c/en/ice_cream/n/wn/food\t/c/en/dessert/n\t{\"weight\": 3.5}",
    "/a/[/r/Synonym/,/c/de/eis/,/c/en/ice_cream/]\t/r/Synonym\t/c/de/eis"
    "\t/c/en/ice_cream\t{\"weight\": 1.0}",
    "/a/[/r/dbpedia/genre/,/c/en/x/,/c/en/y/]\t/r/dbpedia/genre\t/c/en/x\t/c/en/y"
    "\t{\"weight\": 0.5}",
]


def test_tsv(tmp_path):
  path = tmp_path / "kg.tsv"
  path.write_text("# facts\nred\tis a\tcolor\n\nsquare\thas\tfour corners\t0.5\n"
                  "red\tis a\tcolor\n")
  g = kg.read(path, "tsv")
  assert kg.triples(g) == [("red", "is a", "color"), ("square", "has", "four corners")]
  assert g["square"]["four corners"]["has"] == {"relation": "has", "weight": 0.5}
  assert "weight" not in g["red"]["color"]["is a"]


@pytest.mark.parametrize("line, problem", [
    ("red\tis a", "line 2: expected head, relation, tail[, weight] separated by tabs, "
     "got 2 fields"),
    ("red\t\tcolor", "line 2: relation '' is empty or not trimmed"),
    ("red\tis a\tcolor\tmuch", "line 2: weight 'much' is not a number"),
])
def test_tsv_errors_name_file_and_line(tmp_path, line, problem):
  path = tmp_path / "kg.tsv"
  path.write_text(f"a\tb\tc\n{line}\n")
  with pytest.raises(kg.KGFormatError) as e:
    kg.read(path, "tsv")
  assert str(e.value) == f"{path}: {problem}"
  assert errors.user_message(e.value) == f"{path}: {problem}"


def test_conceptnet_terms_relations_weights_and_languages(tmp_path):
  path = tmp_path / "assertions.csv"
  path.write_text("\n".join(CONCEPTNET) + "\n")
  g = kg.read(path, "conceptnet")
  assert kg.triples(g) == [("ice cream", "IsA", "dessert"), ("x", "dbpedia/genre", "y")]
  # The same fact under two senses keeps the larger weight; German ends are left out.
  assert g["ice cream"]["dessert"]["IsA"]["weight"] == 3.5
  both = kg.read(path, "conceptnet", languages=("en", "de"))
  assert ("eis", "Synonym", "ice cream") in kg.triples(both)
  gz = tmp_path / "assertions.csv.gz"
  with gzip.open(gz, "wt", encoding="utf-8") as f:
    f.write("\n".join(CONCEPTNET) + "\n")
  assert kg.triples(kg.read(gz, "conceptnet")) == kg.triples(g)


@pytest.mark.parametrize("bad, problem", [
    ("/a/x\t/r/IsA\t/c/en/a\t/c/en/b", "expected 5 tab-separated fields"),
    ("/a/x\tIsA\t/c/en/a\t/c/en/b\t{\"weight\": 1}", "relation 'IsA' does not start"),
    ("/a/x\t/r/IsA\t/c/en\t/c/en/b\t{\"weight\": 1}", "start '/c/en' is not a"),
    ("/a/x\t/r/IsA\t/c/en/a\t/c/en/b\t{weight: 1}", "info is not JSON"),
    ("/a/x\t/r/IsA\t/c/en/a\t/c/en/b\t{\"w\": 1}", "info has no 'weight'"),
])
def test_conceptnet_errors_name_file_and_line(tmp_path, bad, problem):
  path = tmp_path / "assertions.csv"
  path.write_text(CONCEPTNET[0] + "\n" + bad + "\n")
  with pytest.raises(kg.KGFormatError, match=problem) as e:
    kg.read(path, "conceptnet")
  assert str(e.value).startswith(f"{path}: line 2: ")


def _visualsem(tmp_path, nodes=None, tuples=None):
  nodes = nodes if nodes is not None else {
      "bn:01n": {"ms": "dog", "se": ["dog", "domestic_dog"], "ims": ["ab12", "cd34"]},
      "bn:02n": {"ms": "canine", "se": [], "ims": []},
      "bn:03n": {"ms": "tail", "se": ["tail"], "ims": ["ef56"]}}
  tuples = tuples if tuples is not None else {
      "bn:02n": [{"s": "bn:01n", "r": "is-a", "r_id": 7}],
      "bn:01n": [{"s": "bn:03n", "r": "part-of", "r_id": 8}]}
  (tmp_path / kg.VISUALSEM_NODES).write_text(json.dumps(nodes))
  (tmp_path / kg.VISUALSEM_TUPLES).write_text(json.dumps(tuples))
  return tmp_path


def test_visualsem_nodes_images_glosses(tmp_path):
  root = _visualsem(tmp_path)
  (root / "gloss_files").mkdir()
  (root / kg.VISUALSEM_GLOSSES).write_text(json.dumps(
      [{"header": 1}, {"bn:01n": {"en": ["a domesticated canid"], "de": ["Hund"]}}]))
  g = kg.read(root, "visualsem")
  assert kg.triples(g) == [("bn:01n", "is-a", "bn:02n"), ("bn:03n", "part-of", "bn:01n")]
  dog = g.nodes["bn:01n"]
  assert dog["name"] == "dog" and dog["senses"] == ["dog", "domestic dog"]
  assert dog["images"] == [str(root / "images" / "ab" / "ab12.jpg"),
                           str(root / "images" / "cd" / "cd34.jpg")]
  assert dog["glosses"] == ["a domesticated canid"]
  # The nodes file itself names the directory too.
  assert kg.triples(kg.read(root / kg.VISUALSEM_NODES, "visualsem")) == kg.triples(g)


def test_visualsem_errors_name_file_and_key(tmp_path):
  root = _visualsem(tmp_path, tuples={"bn:02n": [{"s": "bn:09n", "r": "is-a"}]})
  with pytest.raises(kg.KGFormatError) as e:
    kg.read(root, "visualsem")
  assert str(e.value) == (f"{root / kg.VISUALSEM_TUPLES}: key 'bn:02n', tuple 0: "
                          "head 'bn:09n' is not a node")
  root = _visualsem(tmp_path, nodes={"bn:01n": {"se": []}}, tuples={})
  with pytest.raises(kg.KGFormatError, match="key 'bn:01n': no main sense 'ms'"):
    kg.read(root, "visualsem")
  (root / kg.VISUALSEM_NODES).write_text("{")
  with pytest.raises(kg.KGFormatError, match="nodes.v2.json: line 1: not JSON"):
    kg.read(root, "visualsem")


def test_unknown_format_and_missing_file(tmp_path):
  with pytest.raises(ValueError, match="unknown knowledge-graph format 'rdf'"):
    kg.read(tmp_path / "x", "rdf")
  with pytest.raises(FileNotFoundError):
    kg.read(tmp_path / "missing.tsv", "tsv")
