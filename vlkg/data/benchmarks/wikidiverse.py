"""WikiDiverse: its files (annotations, mentions with candidates, entity KB), read and
written.

WikiDiverse is the multimodal entity linking benchmark of Wang, Tian, Gui, Li, Wang,
Yan, Chen and Xiao, "WikiDiverse: A Multimodal Entity Linking Dataset with
Diversified Contextual Topics and Entity Types", ACL 2022
(github.com/wangxw5/wikiDiverse). Its release has:

* the annotated data (passage level): a JSON list of ``[text, img_url, topic,
  [[mention, type, start, end, wiki_url], ...]]`` (`read_passages`), ``start:end``
  the mention's character span in ``text``;
* the data with 10 retrieved candidates (mention level),
  ``{train,valid,test}_w_10cands.json``: a JSON list of ``[sentence, img_url,
  mention, mention_type, left_context, right_context, entity_url, candidates, topic,
  start, end]`` (`read_mentions`); this is what is scored, since it holds the
  candidate lists;
* ``entity2desc``, the entities' Wikipedia descriptions, "split with '@@@@'": read
  here as one ``entity@@@@description`` per line (or a JSON object entity ->
  description) (`read_kb`); the entity is a name or a Wikipedia URL;
* the Wikinews images, named by the README's rule (`image_path`): the md5 of the
  URL's file name plus its extension, ``.svg`` stored as ``.png``.

NIL: a mention whose entity is ``nil`` (any case) has no entity in the KB. The
release's candidate-recall script (``eval_cands_recall.py``) leaves NIL mentions out,
and a linker that ranks candidates has no NIL answer, so NIL mentions are left out of
the accuracy and counted (`is_nil`). Entity strings are compared as that script
compares them (`same_entity`): equal raw, or equal after `clean_entity`.

The world's entity-linking suite is written with `write_passages`, `write_mentions`
and `write_kb`, and read back with the same readers; its ``img_url`` is a path
relative to the image root rather than a URL (`image_path` takes both).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from vlkg import files
from vlkg.data.benchmarks.errors import BenchmarkFormatError, load_json, type_name

CANDIDATES_SUFFIX = "_w_10cands.json"
KB_PREFIX = "entity2desc"
KB_SEPARATOR = "@@@@"
PASSAGE_FIELDS = ("text", "img_url", "topic", "mentions")
PASSAGE_MENTION_FIELDS = ("mention", "type", "start", "end", "wiki_url")
MENTION_FIELDS = ("sentence", "img_url", "mention", "mention_type", "left_context",
                  "right_context", "entity_url", "candidates", "topic", "start", "end")
_WIKI_PREFIXES = ("nhttps://en.wikipedia.org/wiki/", "hhttps://en.wikipedia.org/wiki/",
                  "]https://en.wikipedia.org/wiki/", "https://en.wikipedia.org/wiki/",
                  "ttps://en.wikipedia.org/wiki/")
_EXTENSION = re.compile(r"(\S+(?=\.(jpg|JPG|png|PNG|svg|SVG)))|(\S+(?=\.(jpeg|JPEG)))")


@dataclasses.dataclass(frozen=True)
class Mention:
  """One mention to link (a row of the mention-level files).

  Attributes:
    sentence: The caption the mention is in.
    img_url: The caption's image (a Wikinews URL, or a relative path).
    mention: The mention's text.
    mention_type: Its type ("Person", "Organization", ...; the world: "color",
      "shape").
    entity: The gold entity (a Wikipedia URL or name), or ``nil``.
    candidates: The candidate entities, in file order, repeats removed.
    topic: The caption's topic.
    start: The mention's first character in ``sentence``.
    end: One past its last character.
    left_context: The words left of the mention, as the file has them.
    right_context: The words right of it.
  """

  sentence: str
  img_url: str
  mention: str
  mention_type: str
  entity: str
  candidates: tuple[str, ...]
  topic: str = ""
  start: int = 0
  end: int = 0
  left_context: tuple[str, ...] = ()
  right_context: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Passage:
  """One annotated caption: ``(text, img_url, topic, mentions)``, each mention
  ``(mention, type, start, end, wiki_url)``."""

  text: str
  img_url: str
  topic: str
  mentions: tuple[tuple[str, str, int, int, str], ...]


def clean_entity(name: str) -> str:
  """An entity as the release's scripts compare it: the Wikipedia URL prefix (and the
  release's mistyped variants) dropped, ``_`` and ``-`` as spaces, URL-unquoted."""
  text = name.strip()
  for prefix in _WIKI_PREFIXES:
    text = text.replace(prefix, "")
  return unquote(text.replace("_", " ").replace("-", " "))


def same_entity(a: str, b: str) -> bool:
  """Whether two entity strings name one entity (equal raw or once cleaned)."""
  return a == b or clean_entity(a) == clean_entity(b)


def is_nil(entity: str) -> bool:
  """A mention with no entity in the knowledge base."""
  return entity.strip().lower() == "nil"


def image_path(root: str, img_url: str) -> str:
  """The local file of an item's image.

  A URL (``...://...``) follows the release's README: ``md5(file name) +
  extension`` under ``root``, with ``.svg``/``.SVG`` read as ``.png``. Anything else
  is a path relative to ``root`` (the world's files).
  """
  if "://" not in img_url:
    return os.path.join(root, img_url)
  name = img_url.split("/")[-1]
  prefix = hashlib.md5(name.encode()).hexdigest()
  local = prefix + _EXTENSION.sub("", name)
  return os.path.join(root, local.replace(".svg", ".png").replace(".SVG", ".png"))


def _list(value: Any, path: str, what: str, item: int | None = None) -> list:
  if not isinstance(value, list):
    raise BenchmarkFormatError(path, f"{what} must be a JSON list, got "
                               f"{type_name(value)}", item=item)
  return value


def _field(row: list, k: int, names: Sequence[str], kind, path: str, item: int):
  value = row[k]
  ok = (isinstance(value, int) and not isinstance(value, bool)) if kind is int else (
      isinstance(value, kind))
  if not ok:
    raise BenchmarkFormatError(
        path, f"field {k} ({names[k]!r}) must be {kind.__name__}, got "
        f"{type_name(value)}", item=item, field=names[k])
  return value


def _row(value: Any, names: Sequence[str], path: str, item: int) -> list:
  row = _list(value, path, "an item", item)
  if len(row) != len(names):
    raise BenchmarkFormatError(path, f"an item must have {len(names)} fields "
                               f"{list(names)}, got {len(row)}", item=item)
  return row


def _strs(value: list, path: str, item: int, field: str) -> tuple[str, ...]:
  if not all(isinstance(v, str) for v in value):
    raise BenchmarkFormatError(path, f"field {field!r} must be a list of strings",
                               item=item, field=field)
  return tuple(value)


def read_mentions(path: str | os.PathLike[str]) -> list[Mention]:
  """Reads a mention-level file with candidates (``test_w_10cands.json``).

  Raises:
    FileNotFoundError: If the file does not exist.
    BenchmarkFormatError: Naming the file, the item index and the field, for an
      item that is not an 11-field list of the right types, or a passage-level file
      (which has no candidates).
  """
  path = os.fspath(path)
  data = _list(load_json(path), path, "the top level")
  out = []
  for i, value in enumerate(data):
    if isinstance(value, list) and len(value) == len(PASSAGE_FIELDS):
      raise BenchmarkFormatError(
          path, "a passage-level item [text, img_url, topic, mentions]: that file has "
          f"no candidate lists; pass the *{CANDIDATES_SUFFIX} file", item=i)
    row = _row(value, MENTION_FIELDS, path, i)
    get = lambda k, kind: _field(row, k, MENTION_FIELDS, kind, path, i)
    for k in (0, 1, 2, 3, 6, 8):
      get(k, str)
    for k in (4, 5, 7):
      get(k, list)
    out.append(Mention(
        sentence=row[0], img_url=row[1], mention=row[2], mention_type=row[3],
        entity=row[6],
        candidates=tuple(dict.fromkeys(_strs(row[7], path, i, "candidates"))),
        topic=row[8], start=get(9, int), end=get(10, int),
        left_context=_strs(row[4], path, i, "left_context"),
        right_context=_strs(row[5], path, i, "right_context")))
  return out


def read_passages(path: str | os.PathLike[str]) -> list[Passage]:
  """Reads the passage-level annotated data.

  Raises:
    FileNotFoundError: If the file does not exist.
    BenchmarkFormatError: Naming the file, the item index and the field, for a
      malformed item, or a mention span that does not hold the mention's text.
  """
  path = os.fspath(path)
  out = []
  for i, value in enumerate(_list(load_json(path), path, "the top level")):
    row = _row(value, PASSAGE_FIELDS, path, i)
    for k in range(3):
      _field(row, k, PASSAGE_FIELDS, str, path, i)
    mentions = []
    for j, m in enumerate(_field(row, 3, PASSAGE_FIELDS, list, path, i)):
      if not isinstance(m, list) or len(m) != len(PASSAGE_MENTION_FIELDS):
        raise BenchmarkFormatError(path, f"mentions[{j}] must be a list "
                                   f"{list(PASSAGE_MENTION_FIELDS)}", item=i,
                                   field="mentions")
      for k, kind in enumerate((str, str, int, int, str)):
        _field(m, k, PASSAGE_MENTION_FIELDS, kind, path, i)
      if row[0][m[2]:m[3]] != m[0]:
        raise BenchmarkFormatError(
            path, f"mentions[{j}]: text[{m[2]}:{m[3]}] is {row[0][m[2]:m[3]]!r}, not "
            f"the mention {m[0]!r}", item=i, field="mentions")
      mentions.append(tuple(m))
    out.append(Passage(row[0], row[1], row[2], tuple(mentions)))
  return out


def read_kb(path: str | os.PathLike[str]) -> dict[str, str]:
  """Reads entity descriptions: ``entity@@@@description`` lines, or a JSON object.

  Raises:
    FileNotFoundError: If the file does not exist.
    BenchmarkFormatError: Naming the file and line for a line without the separator,
      or a JSON file that is not an object of strings.
  """
  path = os.fspath(path)
  if path.endswith(".json"):
    data = load_json(path)
    if not isinstance(data, dict) or not all(
        isinstance(v, str) for v in data.values()):
      raise BenchmarkFormatError(path, "must be a JSON object entity -> description")
    return dict(data)
  out = {}
  with files.open(path, "r", encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      line = line.rstrip("\n")
      if not line.strip():
        continue
      if KB_SEPARATOR not in line:
        raise BenchmarkFormatError(f"{path}:{lineno}", "expected "
                                   f"'entity{KB_SEPARATOR}description'")
      name, description = line.split(KB_SEPARATOR, 1)
      out[name] = description
  return out


class KnowledgeBase:
  """Entity descriptions looked up as the release compares entities (`same_entity`)."""

  def __init__(self, descriptions: Mapping[str, str]):
    self._raw = dict(descriptions)
    self._clean = {clean_entity(k): v for k, v in self._raw.items()}

  def __len__(self) -> int:
    return len(self._raw)

  def description(self, entity: str) -> str | None:
    if entity in self._raw:
      return self._raw[entity]
    return self._clean.get(clean_entity(entity))

  def text(self, entity: str) -> str:
    """``"name: description"`` (the name alone when the KB has no description)."""
    name = clean_entity(entity)
    description = self.description(entity)
    return f"{name}: {description}" if description else name


def find_files(data: str | os.PathLike[str], split: str = "test"
               ) -> tuple[str, str | None]:
  """The mention file and the KB file (None if none) that ``data`` names.

  Args:
    data: A ``*_w_10cands.json`` file, or a folder holding one (or several, of which
      ``{split}_w_10cands.json`` is taken). The KB is the ``entity2desc*`` file in
      the mention file's folder or its parent.
    split: Picks among several mention files ("test", "valid").

  Raises:
    FileNotFoundError: If no mention file is found; the message lists the folder.
  """
  data = os.fspath(data)
  if files.isdir(data):
    names = sorted(n for n in files.listdir(data) if n.endswith(CANDIDATES_SUFFIX))
    if len(names) > 1:
      names = [n for n in names if n == f"{split}{CANDIDATES_SUFFIX}"]
    if len(names) != 1:
      raise FileNotFoundError(
          f"{data}: expected one *{CANDIDATES_SUFFIX} file (or {split}"
          f"{CANDIDATES_SUFFIX}), found {sorted(files.listdir(data))}")
    data = os.path.join(data, names[0])
  folder = os.path.dirname(files.abspath(data))
  for where in (folder, os.path.dirname(folder)):
    kb = sorted(n for n in files.listdir(where) if n.startswith(KB_PREFIX))
    if kb:
      return data, os.path.join(where, kb[0])
  return data, None


def write_mentions(path: str, mentions: Sequence[Mention]) -> None:
  """Writes the mention-level file (`read_mentions`'s format)."""
  rows = [[m.sentence, m.img_url, m.mention, m.mention_type, list(m.left_context),
           list(m.right_context), m.entity, list(m.candidates), m.topic, m.start, m.end]
          for m in mentions]
  with files.open(path, "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=0)


def write_passages(path: str, passages: Sequence[Passage]) -> None:
  """Writes the passage-level annotated data (`read_passages`'s format)."""
  rows = [[p.text, p.img_url, p.topic, [list(m) for m in p.mentions]]
          for p in passages]
  with files.open(path, "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=0)


def write_kb(path: str, descriptions: Mapping[str, str]) -> None:
  """Writes ``entity@@@@description`` lines (`read_kb`)."""
  for name, text in descriptions.items():
    if KB_SEPARATOR in name or "\n" in name + text:
      raise ValueError(f"entity {name!r}: no {KB_SEPARATOR!r} in names, no newlines")
  with files.open(path, "w", encoding="utf-8") as f:
    f.write("".join(f"{k}{KB_SEPARATOR}{v}\n" for k, v in descriptions.items()))
