"""Visual Genome v1.4 (Krishna et al., IJCV 2017): region descriptions as captions and
the annotated scene graphs as their ground truth.

``config.input.path`` is the folder with the release's files (field names as
released):

* ``image_data.json``: ``[{"image_id" (or "id"), "url", "width", "height", ...}]``;
* ``objects.json``: ``[{"image_id", "objects": [{"object_id", "names": [...], "x",
  "y", "w", "h"}]}]``;
* ``attributes.json``: ``[{"image_id", "attributes": [{"object_id", "names",
  "attributes": [...], ...}]}]``;
* ``relationships.json``: ``[{"image_id", "relationships": [{"predicate",
  "subject": {object}, "object": {object}}]}]``;
* ``region_descriptions.json``: ``[{"id" (or "image_id"), "regions": [{"phrase",
  "x", "y", "width", "height"}]}]`` (``w``/``h`` accepted too).

Images are ``<input.images>/<the url's last two parts>`` (``VG_100K/1.jpg``),
else ``<input.images>/<image_id>.jpg``; ``input.images`` defaults to ``path``.
VG has no official split: the last ``input.val_size`` images are held out.

How a region description gets its ground-truth graph (``region_graph``): VG's
graphs are per image, not per phrase, so the graph of a phrase is the part of the
image's graph that the phrase names inside its region. An object belongs to it when
its name (or its plural) occurs among the phrase's words and at least half of its
box lies in the region's box; of several such objects with the same name, the one
most inside the region. Its attributes are those whose words occur in the phrase;
the relations those between two kept objects whose predicate words occur in the
phrase. So "a man riding a brown horse" gets man, horse, (horse, brown) and (man,
riding, horse) from the annotations, named as VG names them. A phrase that names no
annotated object gets None, and is parsed (with the VG vocabulary) at build time.

The graph of the whole image goes into each record's ``scene_graph`` field. The
vocabulary (``vocabulary``) lists object names, attributes and predicates seen at
least ``MIN_COUNT`` times; it extends the general parser's lexicon and the words that
replacement negatives draw from.
"""

from __future__ import annotations

import collections
import os

from vlkg import files
from vlkg.data import corpora
from vlkg.graphs import general_parser
from vlkg.graphs.scene_graph import SceneGraph

FILES = ("image_data.json", "objects.json", "attributes.json", "relationships.json",
         "region_descriptions.json")
MIN_COUNT = 5  # vocabulary: VG's long tail is mostly misspellings
MIN_INSIDE = 0.5  # share of an object's box inside the region


def annotation_files(options: corpora.Options) -> list[str]:
  return [os.path.join(options.path, f) for f in FILES]


def _words(text: str) -> str:
  return " ".join(text.lower().split())


def _name(obj: dict, path: str, where: str) -> str:
  if "names" in obj:
    names = corpora.list_field(obj, "names", path, where)
    if not names or not isinstance(names[0], str):
      raise corpora.CorpusError(path, "field 'names' must hold at least one string", where)
    return _words(names[0])
  return _words(corpora.field(obj, "name", path, where, str))


def _box(obj: dict, path: str, where: str) -> tuple[float, float, float, float]:
  w = "w" if "w" in obj else "width"
  h = "h" if "h" in obj else "height"
  return tuple(float(corpora.field(obj, k, path, where, (int, float)))
               for k in ("x", "y", w, h))


def _per_image(path: str, list_key: str) -> dict[int, list]:
  data = corpora.load_json(path)
  if not isinstance(data, list):
    raise corpora.CorpusError(path, "must be a JSON list of images")
  out = {}
  for i, entry in enumerate(data):
    where = f"[{i}]"
    key = "image_id" if isinstance(entry, dict) and "image_id" in entry else "id"
    image_id = corpora.field(entry, key, path, where, int)
    out[image_id] = corpora.list_field(entry, list_key, path, where)
  return out


class _ImageGraph:
  """The annotated objects of one image, by VG object id."""

  def __init__(self):
    self.names, self.boxes, self.index = [], [], {}
    self.attributes: list[list[str]] = []
    self.relations: list[tuple[int, str, int]] = []

  def add(self, obj: dict, path: str, where: str) -> int:
    object_id = obj.get("object_id", obj.get("id"))
    if object_id is not None and object_id in self.index:
      return self.index[object_id]
    self.names.append(_name(obj, path, where))
    self.boxes.append(_box(obj, path, where))
    self.attributes.append([])
    k = len(self.names) - 1
    if object_id is not None:
      self.index[object_id] = k
    return k

  def graph(self) -> SceneGraph:
    return SceneGraph(tuple(self.names),
                      tuple((i, a) for i, attrs in enumerate(self.attributes) for a in attrs),
                      tuple(dict.fromkeys(self.relations)))


def _inside(box, region) -> float:
  x, y, w, h = box
  rx, ry, rw, rh = region
  iw = max(0.0, min(x + w, rx + rw) - max(x, rx))
  ih = max(0.0, min(y + h, ry + rh) - max(y, ry))
  return iw * ih / max(w * h, 1e-6)


def _mentions(words: list[str], phrase: str) -> bool:
  """Whether the multi-word ``phrase`` occurs in ``words``; its last word may be
  plural ("two men" mentions "man")."""
  parts = phrase.split()
  if not parts:
    return False
  forms = {parts[-1], *general_parser.plural_forms(parts[-1])}
  n = len(parts)
  for start in range(len(words) - n + 1):
    if words[start:start + n - 1] == parts[:-1] and words[start + n - 1] in forms:
      return True
  return False


def region_graph(image: _ImageGraph, phrase: str, region) -> SceneGraph | None:
  """The ground-truth graph of one region description (module docstring)."""
  words = general_parser.tokenize(phrase)
  best: dict[str, tuple[float, int]] = {}
  for k, name in enumerate(image.names):
    if not _mentions(words, name):
      continue
    inside = _inside(image.boxes[k], region)
    if inside >= MIN_INSIDE and inside > best.get(name, (-1.0, -1))[0]:
      best[name] = (inside, k)
  if not best:
    return None
  kept = sorted(k for _, k in best.values())
  new = {k: j for j, k in enumerate(kept)}
  attributes = [(new[k], a) for k in kept for a in dict.fromkeys(image.attributes[k])
                if _mentions(words, a)]
  relations = [(new[s], p, new[o]) for s, p, o in dict.fromkeys(image.relations)
               if s in new and o in new and s != o and _mentions(words, p)]
  return SceneGraph(tuple(image.names[k] for k in kept), tuple(attributes),
                    tuple(relations))


def _image_path(root: str, entry: dict, image_id: int) -> str:
  url = entry.get("url")
  if isinstance(url, str) and "/" in url:
    parts = url.rstrip("/").split("/")
    nested = os.path.join(root, parts[-2], parts[-1])
    flat = os.path.join(root, parts[-1])
    return nested if files.exists(nested) or not files.exists(flat) else flat
  return os.path.join(root, f"{image_id}.jpg")


def read_all(options: corpora.Options) -> tuple[list[corpora.Item], dict]:
  """All images with their regions and graphs, and the vocabulary counts."""
  folder = options.path
  paths = dict(zip(FILES, annotation_files(options)))
  for p in paths.values():
    if not files.isfile(p):
      raise corpora.CorpusError(p, "file not found (Visual Genome needs "
                                f"{', '.join(FILES)} in config.input.path)")
  root = options.images or folder
  path = paths["image_data.json"]
  image_data = corpora.load_json(path)
  if not isinstance(image_data, list):
    raise corpora.CorpusError(path, "must be a JSON list of images")
  entries = {}
  for i, entry in enumerate(image_data):
    key = "image_id" if isinstance(entry, dict) and "image_id" in entry else "id"
    entries[corpora.field(entry, key, path, f"[{i}]", int)] = entry
  graphs = {image_id: _ImageGraph() for image_id in entries}
  counts = {"objects": collections.Counter(), "attributes": collections.Counter(),
            "relations": collections.Counter()}

  # One file at a time, reduced before the next is loaded: VG's JSON is gigabytes.
  path = paths["objects.json"]
  for image_id, objects in _per_image(path, "objects").items():
    if image_id in graphs:
      for j, obj in enumerate(objects):
        graphs[image_id].add(obj, path, f"image {image_id}: objects[{j}]")
  path = paths["attributes.json"]
  for image_id, objects in _per_image(path, "attributes").items():
    if image_id not in graphs:
      continue
    for j, obj in enumerate(objects):
      where = f"image {image_id}: attributes[{j}]"
      k = graphs[image_id].add(obj, path, where)
      for a in obj.get("attributes") or ():
        if not isinstance(a, str):
          raise corpora.CorpusError(path, "field 'attributes' must hold strings", where)
        if _words(a) and _words(a) not in graphs[image_id].attributes[k]:
          graphs[image_id].attributes[k].append(_words(a))
  path = paths["relationships.json"]
  for image_id, rels in _per_image(path, "relationships").items():
    if image_id not in graphs:
      continue
    g = graphs[image_id]
    for j, rel in enumerate(rels):
      where = f"image {image_id}: relationships[{j}]"
      predicate = _words(corpora.field(rel, "predicate", path, where, str))
      s = g.add(corpora.field(rel, "subject", path, where, dict), path, where + ".subject")
      o = g.add(corpora.field(rel, "object", path, where, dict), path, where + ".object")
      if predicate and s != o:
        g.relations.append((s, predicate, o))
  for g in graphs.values():
    counts["objects"].update(g.names)
    counts["attributes"].update(a for attrs in g.attributes for a in attrs)
    counts["relations"].update(p for _, p, _ in g.relations)

  path = paths["region_descriptions.json"]
  regions = _per_image(path, "regions")
  items = []
  for image_id, entry in entries.items():
    g = graphs[image_id]
    captions, caption_graphs = [], []
    for j, region in enumerate(regions.get(image_id, ())):
      where = f"image {image_id}: regions[{j}]"
      phrase = corpora.field(region, "phrase", path, where, str)
      captions.append(phrase)
      caption_graphs.append(region_graph(g, phrase, _box(region, path, where)))
    items.append(corpora.Item(key=str(image_id), image=_image_path(root, entry, image_id),
                              captions=tuple(captions), graphs=tuple(caption_graphs),
                              image_graph=g.graph(), source=path))
  return items, counts


def vocabulary(counts: dict, min_count: int = MIN_COUNT) -> dict[str, list[str]]:
  """Object names, attributes and predicates seen at least ``min_count`` times, most
  frequent first: what extends the parser's lexicon and the replacement words."""
  return {kind: [w for w, n in c.most_common() if n >= min_count]
          for kind, c in counts.items()}


def read(options: corpora.Options) -> corpora.Corpus:
  items, counts = read_all(options)
  return corpora.Corpus(corpora.hold_out(items, options.val_size, options.path),
                        vocabulary(counts))
