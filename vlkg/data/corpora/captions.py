"""Generic image-caption lists (CC3M / CC12M style): a ``.tsv`` or a ``.jsonl`` file.

* ``.tsv`` (or ``.txt``): ``image path <TAB> caption`` per line; an optional first
  line ``image<TAB>caption`` (any of image/filepath/file/path/url, then any of
  caption/text/title) is a header;
* ``.jsonl``: one object per line, ``{"image": ..., "caption": "..."}`` (or
  ``"captions": [...]``).

Lines that name the same image are one item with several captions, in file order.
Relative image paths resolve against ``config.input.images`` if set, else the file's
folder. There is no split in the file: ``input.eval_split`` may name a second file
of the same format for the held-out split; otherwise the last ``input.val_size``
images are held out. Blank lines are skipped.
"""

from __future__ import annotations

import json
import os

from vlkg import files
from vlkg.data import corpora

_IMAGE_HEADERS = ("image", "filepath", "file", "path", "url", "image_path")
_CAPTION_HEADERS = ("caption", "text", "title", "captions")


def _eval_file(options: corpora.Options) -> str:
  if not options.eval_split:
    return ""
  path = options.eval_split
  if not os.path.isabs(path):
    path = os.path.join(os.path.dirname(options.path), path)
  return path


def annotation_files(options: corpora.Options) -> list[str]:
  return [p for p in (options.path, _eval_file(options)) if p]


def _rows(path: str):
  """(line number, image, [captions]) of each non-blank line."""
  if not files.isfile(path):
    raise corpora.CorpusError(path, "file not found")
  jsonl = path.endswith((".jsonl", ".json"))
  with files.open(path, "rb") as f:
    try:
      lines = f.read().decode("utf-8", errors="strict").splitlines()
    except UnicodeDecodeError as e:
      raise corpora.CorpusError(path, f"not UTF-8 text ({e.reason})") from None
  for n, line in enumerate(lines, 1):
    where = f"line {n}"
    if not line.strip():
      continue
    if jsonl:
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise corpora.CorpusError(path, f"invalid JSON ({e.msg})", where) from None
      image = corpora.field(row, "image", path, where, str)
      if "captions" in row and "caption" not in row:
        caps = corpora.list_field(row, "captions", path, where)
        for j, c in enumerate(caps):
          if not isinstance(c, str):
            raise corpora.CorpusError(path, "field 'captions' must hold strings",
                                      f"{where}.captions[{j}]")
      else:
        caps = [corpora.field(row, "caption", path, where, str)]
      yield n, image, caps
    else:
      parts = line.split("\t")
      if len(parts) < 2:
        raise corpora.CorpusError(path, "expected 'image path<TAB>caption'", where)
      if n == 1 and (parts[0].strip().lower() in _IMAGE_HEADERS
                     and parts[1].strip().lower() in _CAPTION_HEADERS):
        continue  # header
      yield n, parts[0].strip(), ["\t".join(parts[1:])]


def read_file(path: str, images: str) -> list[corpora.Item]:
  root = images or os.path.dirname(path)
  order: dict[str, list[str]] = {}
  for n, image, caps in _rows(path):
    if not image:
      raise corpora.CorpusError(path, "empty image path", f"line {n}")
    order.setdefault(image, []).extend(caps)
  return [corpora.Item(key=image, image=os.path.join(root, image), captions=tuple(caps),
                       source=path)
          for image, caps in order.items()]


def read(options: corpora.Options) -> corpora.Corpus:
  items = read_file(options.path, options.images)
  held_out = _eval_file(options)
  if held_out:
    return corpora.Corpus({"train": items, "val": read_file(held_out, options.images)})
  return corpora.Corpus(corpora.hold_out(items, options.val_size, options.path))
