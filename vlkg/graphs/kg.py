"""Knowledge graphs from files: ``read(path, fmt) -> networkx.MultiDiGraph``.

Knowledge-CLIP (Pan et al., "Contrastive Language-Image Pre-Training with Knowledge
Graphs", NeurIPS 2022, §3.1 "Data preparation") trains on triplets (h, r, t) from
ConceptNet (text, rel, text), VisualSem ((image, rel, image), (text, rel, image),
(text, rel, text)) and Visual Genome scene graphs. This module reads the first two
in their released formats, and a plain TSV; Visual Genome's ``relationships.json``
comes through the corpus reader (``vlkg.data.corpora.visual_genome``).

Every reader returns a ``networkx.MultiDiGraph`` whose edges carry ``relation`` (a
string, also the edge key, so one fact read twice is one edge) and ``weight`` (a
float) where the source gives one. Nodes are strings.

Formats (``FORMATS``):

* ``"tsv"``: UTF-8 lines ``head<TAB>relation<TAB>tail[<TAB>weight]``; blank lines
  and lines starting with ``#`` are skipped.
* ``"conceptnet"``: ConceptNet 5 assertion CSVs (plain or ``.gz``), tab-separated:
  assertion URI, ``/r/Relation``, start ``/c/<lang>/<term>[/<pos>[/...]]``, end, and
  a JSON object with ``weight``. Only assertions whose two ends are in
  ``languages`` (English by default) are kept. A node is the term with its
  part-of-speech suffix and sense dropped and underscores made spaces
  (``/c/en/ice_cream/n`` -> ``"ice cream"``); the relation is the name after
  ``/r/`` (``"IsA"``; ``/r/dbpedia/genre`` -> ``"dbpedia/genre"``). One fact found
  under several senses keeps the largest weight.
* ``"visualsem"``: the VisualSem release (Alberts et al., 2021): ``nodes.v2.json``
  (BabelNet id -> ``{"ms": main sense, "se": senses, "ims": image ids}``) and
  ``tuples.v2.json`` (tail id -> ``[{"s": head id, "r": relation, "r_id": id}]``),
  in the directory ``path`` or beside the ``nodes.v2.json`` that ``path`` names.
  Nodes are the ids, with ``name`` (the main sense, underscores made spaces),
  ``senses``, ``images`` (paths ``images/<id[:2]>/<id>.jpg`` under the directory)
  and ``glosses`` (from ``gloss_files/nodes.glosses.json`` when it is there).

A malformed line or entry is a ``KGFormatError`` that names the file and the line
(1-based) or the JSON key; nothing is half-read.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
from typing import Iterator, Sequence

import networkx as nx

from vlkg import files

FORMATS = ("tsv", "conceptnet", "visualsem")
VISUALSEM_NODES = "nodes.v2.json"
VISUALSEM_TUPLES = "tuples.v2.json"
VISUALSEM_GLOSSES = os.path.join("gloss_files", "nodes.glosses.json")


class KGFormatError(ValueError):
  """A knowledge-graph file that does not follow its format; the message names the
  file and the line or key."""

  def __init__(self, path: str, where: str, problem: str):
    self.path, self.where, self.problem = str(path), where, problem
    super().__init__(": ".join(p for p in (self.path, where, problem) if p))

  def __reduce__(self):  # crosses process boundaries from prepare workers
    return (KGFormatError, (self.path, self.where, self.problem))


def read(path: str | os.PathLike[str], fmt: str, *,
         languages: Sequence[str] = ("en",)) -> nx.MultiDiGraph:
  """The knowledge graph in ``path`` (DESIGN contract).

  Args:
    path: a file (``tsv``, ``conceptnet``) or the VisualSem directory (or its
      ``nodes.v2.json``).
    fmt: one of ``FORMATS``.
    languages: ConceptNet languages both ends must be in.

  Returns:
    A ``MultiDiGraph``: edges keyed by their ``relation``, with ``weight`` where
    the source has one.

  Raises:
    ValueError: for an unknown ``fmt``.
    FileNotFoundError: if a file is missing.
    KGFormatError: naming the file and line or key of the first malformed entry.
  """
  path = os.fspath(path)
  if fmt == "tsv":
    return _read_tsv(path)
  if fmt == "conceptnet":
    return _read_conceptnet(path, tuple(languages))
  if fmt == "visualsem":
    return _read_visualsem(path)
  raise ValueError(f"unknown knowledge-graph format {fmt!r}; expected one of {FORMATS}")


def add_fact(graph: nx.MultiDiGraph, head: str, relation: str, tail: str,
             weight: float | None = None) -> None:
  """Adds (head, relation, tail) once; a repeated fact keeps its largest weight."""
  if weight is None:
    graph.add_edge(head, tail, key=relation, relation=relation)
    return
  old = graph.get_edge_data(head, tail, key=relation)
  if old is not None and old.get("weight", -math.inf) >= weight:
    return
  graph.add_edge(head, tail, key=relation, relation=relation, weight=float(weight))


def triples(graph: nx.MultiDiGraph) -> list[tuple[str, str, str]]:
  """The graph's (head, relation, tail) facts, sorted."""
  return sorted((h, d["relation"], t) for h, t, d in graph.edges(data=True))


def _lines(path: str) -> Iterator[tuple[int, str]]:
  """Streams the lines of a (gzipped) text file, local or on a URL."""
  with contextlib.ExitStack() as stack:
    if path.endswith(".gz"):
      raw = stack.enter_context(files.open(path, "rb"))
      f = stack.enter_context(io.TextIOWrapper(gzip.GzipFile(fileobj=raw),
                                               encoding="utf-8"))
    else:
      f = stack.enter_context(files.open(path, "r", encoding="utf-8"))
    for lineno, line in enumerate(f, start=1):
      yield lineno, line.rstrip("\r\n")


def _text(value: str, what: str, path: str, where: str) -> str:
  if not value or value != value.strip():
    raise KGFormatError(path, where, f"{what} {value!r} is empty or not trimmed")
  return value


def _read_tsv(path: str) -> nx.MultiDiGraph:
  graph = nx.MultiDiGraph()
  for lineno, line in _lines(path):
    if not line.strip() or line.startswith("#"):
      continue
    where = f"line {lineno}"
    fields = line.split("\t")
    if len(fields) not in (3, 4):
      raise KGFormatError(path, where, f"expected head, relation, tail[, weight] "
                          f"separated by tabs, got {len(fields)} fields")
    head, relation, tail = (_text(v, n, path, where)
                            for v, n in zip(fields, ("head", "relation", "tail")))
    weight = None
    if len(fields) == 4:
      weight = _float(fields[3], path, where)
    add_fact(graph, head, relation, tail, weight)
  return graph


def _float(value, path: str, where: str) -> float:
  try:
    out = float(value)
  except (TypeError, ValueError):
    raise KGFormatError(path, where, f"weight {value!r} is not a number") from None
  if not math.isfinite(out):
    raise KGFormatError(path, where, f"weight {value!r} is not finite")
  return out


def conceptnet_node(uri: str) -> tuple[str, str] | None:
  """(language, term) of a ConceptNet concept URI, or None if it is not one.

  ``/c/en/ice_cream/n/wn/food`` -> ``("en", "ice cream")``.
  """
  parts = uri.split("/")
  if len(parts) < 4 or parts[0] != "" or parts[1] != "c" or not parts[2] or not parts[3]:
    return None
  return parts[2], parts[3].replace("_", " ")


def _read_conceptnet(path: str, languages: tuple[str, ...]) -> nx.MultiDiGraph:
  graph = nx.MultiDiGraph()
  for lineno, line in _lines(path):
    if not line.strip():
      continue
    where = f"line {lineno}"
    fields = line.split("\t")
    if len(fields) != 5:
      raise KGFormatError(path, where, "expected 5 tab-separated fields (assertion, "
                          f"relation, start, end, info), got {len(fields)}")
    _, rel, start, end, info = fields
    if not rel.startswith("/r/") or len(rel) == 3:
      raise KGFormatError(path, where, f"relation {rel!r} does not start with /r/")
    ends = []
    for name, uri in (("start", start), ("end", end)):
      node = conceptnet_node(uri)
      if node is None:
        raise KGFormatError(path, where, f"{name} {uri!r} is not a /c/<lang>/<term> URI")
      ends.append(node)
    try:
      data = json.loads(info)
    except json.JSONDecodeError as e:
      raise KGFormatError(path, where, f"info is not JSON ({e.msg})") from None
    if not isinstance(data, dict) or "weight" not in data:
      raise KGFormatError(path, where, "info has no 'weight'")
    weight = _float(data["weight"], path, where)
    (lang_h, head), (lang_t, tail) = ends
    if lang_h in languages and lang_t in languages:
      add_fact(graph, head, rel[3:], tail, weight)
  return graph


def _load_json(path: str):
  with files.open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise KGFormatError(path, f"line {e.lineno}", f"not JSON ({e.msg})") from None


def _read_visualsem(path: str) -> nx.MultiDiGraph:
  directory = os.path.dirname(path) if files.isfile(path) else path
  nodes_path = os.path.join(directory, VISUALSEM_NODES)
  tuples_path = os.path.join(directory, VISUALSEM_TUPLES)
  nodes, tuples = _load_json(nodes_path), _load_json(tuples_path)
  if not isinstance(nodes, dict):
    raise KGFormatError(nodes_path, "", "top level must be an object of nodes")
  if not isinstance(tuples, dict):
    raise KGFormatError(tuples_path, "", "top level must be an object of tuples")
  graph = nx.MultiDiGraph()
  for node_id, entry in nodes.items():
    where = f"key {node_id!r}"
    if not isinstance(entry, dict):
      raise KGFormatError(nodes_path, where, "node is not an object")
    main = entry.get("ms")
    if isinstance(main, list):
      main = main[0] if main else None
    if not isinstance(main, str) or not main:
      raise KGFormatError(nodes_path, where, "no main sense 'ms'")
    images = entry.get("ims", [])
    senses = entry.get("se", [])
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
      raise KGFormatError(nodes_path, where, "'ims' is not a list of image ids")
    if not isinstance(senses, list):
      raise KGFormatError(nodes_path, where, "'se' is not a list")
    graph.add_node(node_id, name=main.replace("_", " "),
                   senses=[str(s).replace("_", " ") for s in senses],
                   images=[os.path.join(directory, "images", i[:2], f"{i}.jpg")
                           for i in images], glosses=[])
  for tail, entries in tuples.items():
    where = f"key {tail!r}"
    if tail not in graph:
      raise KGFormatError(tuples_path, where, "tail is not a node of nodes.v2.json")
    if not isinstance(entries, list):
      raise KGFormatError(tuples_path, where, "tuples are not a list")
    for k, entry in enumerate(entries):
      at = f"{where}, tuple {k}"
      if not isinstance(entry, dict) or not isinstance(entry.get("s"), str) \
          or not isinstance(entry.get("r"), str) or not entry["r"]:
        raise KGFormatError(tuples_path, at, "expected {'s': head, 'r': relation}")
      if entry["s"] not in graph:
        raise KGFormatError(tuples_path, at, f"head {entry['s']!r} is not a node")
      add_fact(graph, entry["s"], entry["r"], tail)
  glosses_path = os.path.join(directory, VISUALSEM_GLOSSES)
  if files.exists(glosses_path):
    _add_glosses(graph, glosses_path)
  return graph


def _add_glosses(graph: nx.MultiDiGraph, path: str) -> None:
  """``nodes.glosses.json``: a header, then ``{node id: glosses}`` objects; glosses
  a list of strings or ``{language: [strings]}`` (English kept)."""
  data = _load_json(path)
  if not isinstance(data, list):
    raise KGFormatError(path, "", "top level must be a list")
  for k, entry in enumerate(data[1:], start=1):
    if not isinstance(entry, dict) or len(entry) != 1:
      raise KGFormatError(path, f"entry {k}", "expected one {node id: glosses}")
    (node_id, glosses), = entry.items()
    if isinstance(glosses, dict):
      glosses = glosses.get("en", [])
    if not isinstance(glosses, list) or not all(isinstance(g, str) for g in glosses):
      raise KGFormatError(path, f"key {node_id!r}", "glosses are not strings")
    if node_id in graph:
      graph.nodes[node_id]["glosses"] = list(glosses)
