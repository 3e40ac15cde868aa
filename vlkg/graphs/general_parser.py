"""A fast rule- and lexicon-based scene-graph parser for free English captions.

Structure-CLIP parses each caption into objects, attributes and relations with a
rule-based text scene-graph parser before it builds its negatives and its triple
encoder's input (Structure-CLIP, Huang et al., AAAI 2024). This is vlkg's parser for real captions (COCO, Visual
Genome, CC): no spaCy, no model, only lexicons precompiled into dicts, so that
preparing a million captions costs seconds, not hours, and the result is the same on
every machine.

How a caption is read:
  1. lowercase; commas become a soft boundary "," and ".;:!?" a hard one "."; other
     punctuation and non-ASCII characters are dropped; "there's" becomes "there is"
     and any other "'s" a possessive; a lead-in such as "a picture of" or "there
     is" is dropped from the start.
  2. tokens are matched left to right against the lexicon, longest phrase first
     ("on top of" before "on"); a verb-led phrase yields to a longer phrase that
     starts inside it ("parked" + "in front of", not "parked in" + "front of"). Plural
     nouns map to their singular (rules plus an irregular table: "men" -> "man",
     "knives" -> "knife"). Unknown words are skipped.
  3. a small state machine builds the graph:
     * BINDING. Attributes wait for the next noun and bind to it ("a white dog and
       a black cat": white -> dog, black -> cat); "X and Y" between attributes keeps
       the noun phrase open ("a black and white dog"); after a copula they bind to
       the subject ("the dog is brown").
     * A word that is both a noun and an attribute ("orange", "glass", "square") is
       an attribute when another attribute or a noun follows, else a noun; a word
       that is both an attribute and a relation ("standing") is a relation when a
       noun phrase or a relation follows, else an attribute.
     * Two adjacent nouns form a compound named by both ("laptop keyboard"); a
       possessive is the relation "has" ("a man's hat": man has hat), as Visual
       Genome writes it.
     * Adjacent relation words form one predicate ("standing" + "around").
     * ATTACHMENT RULE. A relation's subject is the noun phrase just before it,
       except when the clause already holds a complete "NP rel NP" chain and the
       relation is verbal (its first word ends in -ing/-ed or is a verb such as
       "has", "holds"): then it is the first noun phrase of the clause. So in "a man
       in a red shirt riding a brown horse" the man rides, while in "a dog with a
       frisbee in its mouth" the frisbee is in the mouth.
     * COORDINATION. "and" or "," before a relation keeps the clause ("riding a
       horse and holding a whip": the man holds). Before a bare noun phrase it
       shares the previous relation ("wearing a hat and sunglasses"). Before a
       determiner it starts a new clause, and the relation that follows is not
       distributed over the conjoined noun phrases ("a cat and a dog on a sofa"
       gives dog-on-sofa only): that never invents a relation, and it is the
       world's grammar, where "and" joins independent clauses.

``GeneralParser(objects=..., attributes=..., relations=...)`` extends the packaged
lexicons (``lexicon/*.txt`` plus the synthetic world's words, `vlkg.graphs.lexicon`);
``parse(text)`` uses a cached default instance. Parsing never raises on text: bad input gives an empty or
partial graph.
"""

from __future__ import annotations

import functools
from typing import Iterable

from vlkg.graphs.lexicon import (LEAD_INS, LEXICON_DIR, POSSESSIVE, plural_forms,
                                 read_lexicon, tokenize, world_vocabulary)
from vlkg.graphs.scene_graph import SceneGraph

_DETERMINERS = ("a an the this that these those his her their its my your our some any "
                "each every another other no which who whose whom").split()  # relative pronouns too
_CONJUNCTIONS = ("and", "or", ",")  # not "plus": the world uses it as a shape noun
_HARD_STOPS = (".", "while", "but", "whilst", "where", "when", "although", "though")
_COPULAS = ("is", "are", "was", "were", "be", "been", "being", "am", "seems", "looks")
_SKIP_PHRASES = (
    "there is", "there are", "theres", "there was", "there were", "each other",
    "one another", "a group of", "group of", "groups of", "a bunch of", "bunch of",
    "a couple of", "couple of", "a pair of", "pair of", "a lot of", "lots of",
    "a herd of", "herd of", "a flock of", "flock of", "a number of", "a set of",
    "a row of", "rows of", "a pile of", "a stack of", "a variety of", "a kind of",
    "some kind of", "a type of")
# Verbs that do not end in -ing/-ed but still make a relation verbal (ATTACHMENT RULE).
_VERB_FORMS = frozenset(
    "has have had holds wears rides eats drinks carries contains pulls pushes "
    "watches uses throws catches hits swings flies walks runs stands sits lies lays "
    "hangs leans rests grazes feeds pets hugs kisses talks waits crosses drives shows "
    "displays cuts prepares reads covers faces follows chases jumps surfs does takes "
    "makes sees plays".split())

_WORD, _DET, _CONJ, _STOP, _COPULA, _SKIP = range(6)
_NOUN, _ATTR, _REL = 10, 11, 12


class _Entry:
  """What one lexicon phrase can be; a phrase may be several things at once."""
  __slots__ = ("noun", "attr", "rel", "verbal", "kind")

  def __init__(self, kind: int = _WORD):
    self.noun: str | None = None
    self.attr: str | None = None
    self.rel: str | None = None
    self.verbal = False
    self.kind = kind


def _is_verbal(phrase: str) -> bool:
  first = phrase.split()[0]
  return first.endswith(("ing", "ed")) or first in _VERB_FORMS


# ------------------------------------------------------------------------ parser


class GeneralParser:
  """Lexicon-driven caption parser; see the module docstring for the rules.

  Args:
    objects: extra object nouns (singular; phrases allowed), e.g. Visual Genome's.
    attributes: extra attribute words or phrases.
    relations: extra relation phrases.
    packaged: also load ``lexicon/*.txt`` and the world's words (default True).
  """

  def __init__(self, objects: Iterable[str] = (), attributes: Iterable[str] = (),
               relations: Iterable[str] = (), packaged: bool = True):
    objs, attrs, rels = list(objects), list(attributes), list(relations)
    if packaged:
      w_objs, w_attrs, w_rels = world_vocabulary()
      objs = read_lexicon(LEXICON_DIR / "objects.txt") + w_objs + objs
      attrs = read_lexicon(LEXICON_DIR / "attributes.txt") + w_attrs + attrs
      rels = read_lexicon(LEXICON_DIR / "relations.txt") + w_rels + rels
    norm = lambda xs: list(dict.fromkeys(" ".join(x.lower().split()) for x in xs if x.strip()))
    self.objects, self.attributes, self.relations = norm(objs), norm(attrs), norm(rels)
    self._vocab: dict[tuple[str, ...], _Entry] = {}
    self._build()

  def _entry(self, key: tuple[str, ...], kind: int = _WORD) -> _Entry:
    e = self._vocab.get(key)
    if e is None:
      e = self._vocab[key] = _Entry(kind)
    return e

  def _build(self) -> None:
    for phrase in self.objects:
      self._entry(tuple(phrase.split())).noun = phrase
    for phrase in self.objects:  # explicit nouns win over derived plurals ("glasses")
      words = phrase.split()
      for plural in plural_forms(words[-1]):
        e = self._entry(tuple(words[:-1]) + (plural,))
        if e.noun is None:
          e.noun = phrase
    for phrase in self.attributes:
      self._entry(tuple(phrase.split())).attr = phrase
    for phrase in self.relations:
      e = self._entry(tuple(phrase.split()))
      e.rel, e.verbal = phrase, _is_verbal(phrase)
    # "a man's hat" says the man has the hat, as Visual Genome writes it.
    e = self._entry((POSSESSIVE,))
    if e.rel is None:
      e.rel, e.verbal = "has", True
    # Function words only where the content lexicons left the phrase free.
    for words, kind in ([(w, _DET) for w in _DETERMINERS] + [(w, _CONJ) for w in _CONJUNCTIONS]
                        + [(w, _STOP) for w in _HARD_STOPS] + [(w, _COPULA) for w in _COPULAS]
                        + [(w, _SKIP) for w in _SKIP_PHRASES]):
      key = tuple(words.split())
      if key not in self._vocab:
        self._vocab[key] = _Entry(kind)
    self._longest: dict[str, int] = {}
    for key in self._vocab:
      self._longest[key[0]] = max(self._longest.get(key[0], 0), len(key))
    self._hyphenated = frozenset(k[0] for k in self._vocab if "-" in k[0])
    self._singles = {k[0]: e for k, e in self._vocab.items() if len(k) == 1}
    # The verb that starts a multi-word relation ("parked" of "parked in"), as a
    # relation on its own; used only to re-split "parked in" + "front of".
    self._verb_heads: dict[str, _Entry] = {}
    for phrase in self.relations:
      words = phrase.split()
      if len(words) > 1 and _is_verbal(words[0]):
        single = self._singles.get(words[0])
        if single is None or single.rel is None:
          single = _Entry()
          single.rel, single.verbal = words[0], True
        self._verb_heads[words[0]] = single

  def vocabulary_sizes(self) -> dict[str, int]:
    return {"objects": len(self.objects), "attributes": len(self.attributes),
            "relations": len(self.relations)}

  # ------------------------------------------------------------ reading text

  def _tokens(self, text: str) -> list[str]:
    toks = tokenize(text)
    if any("-" in t for t in toks):
      # "black-and-white" reads as three words; "warm-colored" is a lexicon word.
      toks = [p for t in toks for p in
              ((t,) if "-" not in t or t in self._hyphenated else t.split("-")) if p]
    stripped = True
    while stripped and toks:
      stripped = False
      for lead in LEAD_INS:
        if tuple(toks[:len(lead)]) == lead:
          toks, stripped = toks[len(lead):], True
          break
    return toks

  def _match(self, toks: list[str]) -> list[tuple[int, int, _Entry]]:
    """Longest-match lexicon items as (start, end, entry); unknown words leave gaps."""
    items = []
    vocab, longest, singles = self._vocab, self._longest, self._singles
    i, n = 0, len(toks)
    while i < n:
      tok = toks[i]
      span = longest.get(tok, 0)
      entry, size = None, 1
      for size in range(min(span, n - i), 1, -1):
        entry = vocab.get(tuple(toks[i:i + size]))
        if entry is not None:
          break
      else:
        size = 1
        entry = singles.get(tok) if span else None
      if size > 1 and entry.rel is not None:
        # "laying on" + "top of": when a relation phrase that starts inside this one
        # reaches further, keep only the verb, so that the relations join into
        # "laying on top of" instead of leaving "top" behind as an object.
        verb = self._verb_heads.get(tok)
        if verb is not None and i + 1 + self._relation_span(toks, i + 1) > i + size:
          entry, size = verb, 1
      if entry is not None:
        items.append((i, i + size, entry))
      i += size
    return items

  def _relation_span(self, toks: list[str], i: int) -> int:
    """Length of the longest relation phrase at ``toks[i]``, 0 if none."""
    if i >= len(toks):
      return 0
    for size in range(min(self._longest.get(toks[i], 0), len(toks) - i), 0, -1):
      e = self._vocab.get(tuple(toks[i:i + size]))
      if e is not None and e.rel is not None:
        return size
    return 0

  @staticmethod
  def _role(items: list[tuple[int, int, _Entry]], k: int) -> int:
    """The role of item ``k`` from what it can be and what follows (no parse state)."""
    e = items[k][2]
    if e.kind != _WORD:
      return e.kind
    noun, attr, rel = e.noun is not None, e.attr is not None, e.rel is not None
    if noun + attr + rel == 1:
      return _NOUN if noun else _ATTR if attr else _REL
    nxt = items[k + 1][2] if k + 1 < len(items) else None
    if noun and attr:
      if nxt is not None and nxt.kind == _WORD and (
          nxt.noun is not None or (nxt.attr is not None and nxt.rel is None)):
        return _ATTR  # "an orange cat", "a glass table"
      if (nxt is not None and nxt.kind == _CONJ and k + 2 < len(items)
          and items[k + 2][2].attr is not None and items[k + 2][2].noun is None):
        return _ATTR  # "an orange and white cat"
      return _NOUN
    # rel together with attr or noun: a relation needs something after it.
    if nxt is not None and (nxt.kind == _DET or nxt.kind == _WORD):
      return _REL
    return _NOUN if noun else _ATTR

  def parse(self, text: str) -> SceneGraph:
    """The scene graph of ``text``; empty or partial for text it cannot read."""
    items = self._match(self._tokens(text))
    objects: list[str] = []
    attributes: list[tuple[int, str]] = []
    relations: list[tuple[int, str, int]] = []
    pending: list[str] = []    # attributes waiting for their noun
    modifiers: list[str] = []  # nouns of a compound waiting for its head
    head = last = None         # first and latest object of the clause
    chain = False              # the clause holds a complete "NP rel NP"
    rel: tuple[int | None, str] | None = None  # (subject, predicate) awaiting its object
    rel_end = -1               # token position where that predicate ends
    last_rel: tuple[int, str] | None = None  # the relation whose object is ``last``
    predicative = False        # after "the dog is": attributes bind to the subject
    n = len(items)
    for k in range(n):
      start, end, e = items[k]
      role = self._role(items, k)
      if role == _NOUN:
        if k + 1 < n and items[k + 1][0] == end and self._role(items, k + 1) == _NOUN:
          modifiers.append(e.noun)
          continue
        name = " ".join(modifiers + [e.noun]) if modifiers else e.noun
        modifiers = []
        idx = len(objects)
        objects.append(name)
        if pending:
          attributes.extend((idx, a) for a in pending)
          pending = []
        last_rel = None
        if rel is not None:
          if rel[0] is not None:
            relations.append((rel[0], rel[1], idx))
            chain, last_rel = True, rel
          rel = None
          if head is None:
            head = idx
        elif head is None or last is not None:
          head, chain = idx, False  # a noun phrase with nothing linking it starts a clause
        last = idx
        predicative = False
      elif role == _ATTR:
        if predicative and last is not None:
          attributes.append((last, e.attr))
        else:
          pending.append(e.attr)
      elif role == _REL:
        predicative = False
        if rel is not None and not pending and start == rel_end:
          rel, rel_end = (rel[0], f"{rel[1]} {e.rel}"), end  # "standing" + "around"
          continue
        rel_end = end
        if pending and last is not None:
          # A state word left without a noun describes the subject: "a man (standing) near".
          attributes.extend((last, a) for a in pending)
        pending = []
        if last is None:
          rel = (None, e.rel)
        else:
          rel = (head if chain and e.verbal else last, e.rel)
      elif role == _DET:
        predicative = False
      elif role == _COPULA:
        predicative = last is not None and rel is None
      elif role == _CONJ:
        nxt_det = k + 1 < n and items[k + 1][2].kind == _DET
        if (pending and not nxt_det) or predicative:
          continue  # "black and white", "is brown and white"
        if pending and last is not None and rel is None:
          attributes.extend((last, a) for a in pending)  # "a dog, brown, and a cat"
        pending = []
        if k + 1 < n and self._role(items, k + 1) == _REL:
          continue  # "riding a horse and holding a whip": same subject
        if (last_rel is not None and not nxt_det and k + 1 < n
            and self._role(items, k + 1) in (_NOUN, _ATTR)):
          # A bare noun after "and" shares the relation of the noun before it:
          # "wearing a hat and sunglasses", "with broccoli, carrots and rice".
          rel, rel_end = last_rel, -1
          continue
        head = last = rel = None
        chain = False
      elif role == _STOP:
        if pending and last is not None and rel is None:
          attributes.extend((last, a) for a in pending)
        pending, modifiers = [], []
        head = last = rel = None
        chain = predicative = False
    if pending and last is not None and rel is None:
      attributes.extend((last, a) for a in pending)
    return SceneGraph(tuple(objects), tuple(attributes), tuple(relations))


@functools.lru_cache(maxsize=1)
def default_parser() -> GeneralParser:
  """The packaged-lexicon parser, built once per process."""
  return GeneralParser()


def parse(text: str) -> SceneGraph:
  """Parses ``text`` with the default ``GeneralParser``."""
  return default_parser().parse(text)
