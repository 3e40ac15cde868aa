"""Tokens and lexicons of the caption parser (`vlkg.graphs.general_parser`).

Structure-CLIP (Huang et al., "Structure-CLIP: Towards Scene Graph Knowledge to
Enhance Multi-modal Structured Representations", AAAI 2024) parses captions with a
rule-based scene-graph parser. Ours reads lexicons precompiled into dicts; this
module holds what feeds them: the tokenizer (lowercase words, "," and "." as
boundary tokens, possessives and "there's"), the packaged lexicon files, the
synthetic world's words, plural spellings, and the lead-ins stripped from the start
of a caption.
"""

from __future__ import annotations

import pathlib
import re

from vlkg.data.world import ontology

LEXICON_DIR = pathlib.Path(__file__).parent / "lexicon"

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _punctuation_table() -> dict[int, str]:
  table = {}
  for ch in "!\"#$%&()*+,./:;<=>?@[\\]^_`{|}~":
    table[ord(ch)] = " "
  table[ord(",")] = " , "
  for ch in ".;:!?":
    table[ord(ch)] = " . "
  table[ord("&")] = " and "
  return table


_PUNCTUATION = _punctuation_table()
POSSESSIVE = "'s"  # the token ``tokenize`` emits for a possessive
_IS_CONTRACTIONS = frozenset(("there", "it", "that", "here", "what", "he", "she", "who"))


def tokenize(text: str) -> list[str]:
  """Lowercase word tokens with "," and "." as boundary tokens; never raises."""
  if not isinstance(text, str):
    return []
  text = text.lower()
  if not text.isascii():
    text = _NON_ASCII.sub(" ", text.replace("\u2019", "'"))
  out = []
  for tok in text.translate(_PUNCTUATION).split():
    if "'" in tok:
      if tok.endswith("'s"):
        base = tok[:-2].replace("'", "").strip("-")
        if base:
          out.append(base)
        # "there's" is "there is"; any other "'s" is taken as a possessive.
        out.append("is" if base in _IS_CONTRACTIONS else POSSESSIVE)
        continue
      tok = tok.replace("'", "")
    tok = tok.strip("-")
    if tok:
      out.append(tok)
  return out



# Only the nouns the packaged lexicon or a user adds get plurals from this table.
IRREGULAR_PLURALS: dict[str, str] = {
    "men": "man", "women": "woman", "people": "person", "persons": "person",
    "children": "child", "mice": "mouse", "geese": "goose", "feet": "foot",
    "teeth": "tooth", "knives": "knife", "leaves": "leaf", "shelves": "shelf",
    "wolves": "wolf", "halves": "half", "loaves": "loaf", "calves": "calf",
    "scarves": "scarf", "wives": "wife", "lives": "life", "thieves": "thief",
    "oxen": "ox", "dice": "die", "cacti": "cactus", "sheep": "sheep", "deer": "deer",
    "fish": "fish", "hooves": "hoof", "bookshelves": "bookshelf", "policemen": "policeman",
}

# Always stripped from the start of a caption: they say how the picture is shown,
# not what it shows. Matched only at the start so "a man taking a picture of a dog"
# keeps its picture.
LEAD_INS = tuple(tuple(p.split()) for p in (
    "a picture of", "an image of", "a photo of", "a photograph of", "a close up of",
    "a closeup of", "close up of", "closeup of", "a view of", "a shot of",
    "a black and white photo of", "a black and white picture of", "an old photo of",
    "there is", "there are", "this is", "these are", "here is", "it is"))


def read_lexicon(path: str | pathlib.Path) -> list[str]:
  """Phrases of a lexicon file: one per line, '#' comments and blank lines skipped."""
  out = []
  for line in pathlib.Path(path).read_text().splitlines():
    line = " ".join(line.split()).lower()
    if line and not line.startswith("#"):
      out.append(line)
  return out


def world_vocabulary() -> tuple[list[str], list[str], list[str]]:
  """The synthetic world's (objects, attributes, relations), aliases and concepts included."""
  objects = ["shape"]
  for shape in ontology.SHAPES:
    objects += [shape.name, *shape.synonyms, *shape.aliases]
  attributes = ["round", "polygonal"]
  attributes += sorted({f"{c.family}-colored" for c in ontology.COLORS})
  for color in ontology.COLORS:
    attributes += [color.name, *color.synonyms, *color.aliases]
  for value in (*ontology.SIZES, *ontology.TEXTURES):
    attributes += list(ontology.surface_forms(value))
  relations = [form for r in ontology.RELATIONS for form in ontology.surface_forms(r)]
  return objects, attributes, relations


def plural_forms(noun: str) -> set[str]:
  """Plural spellings of a singular noun (last word of a phrase), by rule and table."""
  forms = {p for p, s in IRREGULAR_PLURALS.items() if s == noun}
  if noun.endswith("man"):
    forms.add(noun[:-3] + "men")
  if noun.endswith(("s", "x", "z", "ch", "sh")):
    forms.add(noun + "es")
  elif noun.endswith("y") and len(noun) > 1 and noun[-2] not in "aeiou":
    forms.add(noun[:-1] + "ies")
  elif noun.endswith("o"):
    forms.update((noun + "s", noun + "es"))
  else:
    forms.add(noun + "s")
  forms.discard(noun)
  return forms

