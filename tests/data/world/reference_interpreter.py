"""An independent reader of world captions, used only by tests.

It parses caption text with its own small grammar and evaluates it against raw object
geometry, sharing nothing with ``vlkg.data.world.captions`` but the vocabulary. A
caption is "true" if every clause has a witness; "false" if some clause clearly has
none (relations need the geometric margin's dead zone to be clearly violated).
"""

from __future__ import annotations

import re

from vlkg.data.world import ontology, scene as scene_lib

_LEX = ontology.lexicon()
_RELATION_PHRASES = sorted((f for f, c in _LEX.items() if c in ontology.RELATIONS),
                           key=len, reverse=True)
_ALIASES = {a: ("color", c.name) for c in ontology.COLORS for a in c.aliases}
_ALIASES.update({a: ("shape", s.name) for s in ontology.SHAPES for a in s.aliases})
_NUMBERS = {"no": 0, "three": 3, "four": 4, "five": 5, "six": 6, "ten": 10, "twelve": 12}
_LEADS = ("there is ", "a picture of ", "an image of ")


def parse_np(text: str) -> list:
  """-> list of (kind, value) constraints."""
  text = re.sub(r"^(a|an|the) ", "", text.strip())
  cons = []
  m = re.search(r" with (\w+) corners$", text)
  if m:
    cons.append(("corners", _NUMBERS[m.group(1)]))
    text = text[:m.start()]
  for alias in sorted(_ALIASES, key=len, reverse=True):
    if re.search(rf"(^| ){alias}$", text) or re.search(rf"(^| ){alias} ", text):
      cons.append(_ALIASES[alias])
      text = re.sub(rf"(^| ){alias}( |$)", " ", text).strip()
  for word in text.split():
    if word.endswith("-colored"):
      cons.append(("family", word[:-len("-colored")]))
    elif word == "round":
      cons.append(("round", True))
    elif word == "polygonal":
      cons.append(("round", False))
    elif word == "shape":
      pass
    else:
      concept = _LEX[word]
      kind = ("shape" if concept in ontology.SHAPE_BY_NAME else
              ontology.KIND_OF_VALUE[concept])
      cons.append((kind, concept))
  return cons


def parse(text: str) -> list:
  """-> list of clauses: ("np", cons) or ("rel", cons_s, predicate, cons_o)."""
  for lead in _LEADS:
    if text.startswith(lead):
      text = text[len(lead):]
  clauses = []
  for part in re.split(r", | and ", text):
    for phrase in _RELATION_PHRASES:
      m = re.search(rf" (is )?{phrase} (a|an|the) ", part)
      if m:
        clauses.append(("rel", parse_np(part[:m.start()]), _LEX[phrase],
                        parse_np(part[m.end() - len(m.group(2)) - 1:])))
        break
    else:
      clauses.append(("np", parse_np(part)))
  return clauses


def _matches(obj, cons) -> bool:
  shape = ontology.SHAPE_BY_NAME[obj.shape]
  for kind, value in cons:
    if kind == "shape" and obj.shape != value: return False
    if kind == "color" and obj.color != value: return False
    if kind == "size" and obj.size != value: return False
    if kind == "texture" and obj.texture != value: return False
    if kind == "family" and ontology.COLOR_BY_NAME[obj.color].family != value: return False
    if kind == "corners" and shape.corners != value: return False
    if kind == "round" and (shape.corners == 0) != value: return False
  return True


def _signed_gap(a, pred, b):
  """Positive when ``a pred b`` holds geometrically, with pixel units."""
  return {"left of": b.cx - a.cx, "right of": a.cx - b.cx,
          "above": b.cy - a.cy, "below": a.cy - b.cy}[pred]


def _holds(a, pred, b, size, strict: bool) -> bool:
  if pred in ("bigger than", "smaller than"):
    big = (a.size, b.size) == ("large", "small")
    small = (a.size, b.size) == ("small", "large")
    return big if pred == "bigger than" else small
  threshold = scene_lib.RELATION_MARGIN * size if strict else scene_lib.RELATION_MARGIN * size / 3
  return _signed_gap(a, pred, b) > (threshold if strict else threshold - 1e-9)


def is_true(text: str, scene) -> bool:
  for clause in parse(text):
    objs = scene.objects
    if clause[0] == "np":
      if not any(_matches(o, clause[1]) for o in objs):
        return False
    else:
      _, cs, pred, co = clause
      if not any(_holds(a, pred, b, scene.image_size, True)
                 for a in objs for b in objs if a is not b
                 and _matches(a, cs) and _matches(b, co)):
        return False
  return True


def is_clearly_false(text: str, scene) -> bool:
  for clause in parse(text):
    objs = scene.objects
    if clause[0] == "np":
      if not any(_matches(o, clause[1]) for o in objs):
        return True
    else:
      _, cs, pred, co = clause
      if not any(_holds(a, pred, b, scene.image_size, False)
                 for a in objs for b in objs if a is not b
                 and _matches(a, cs) and _matches(b, co)):
        return True
  return False
