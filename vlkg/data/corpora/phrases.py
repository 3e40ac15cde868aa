"""Object phrases of free captions as token spans: LOUPE's phrase players on real data.

The world knows its phrases exactly (``vlkg.data.world.phrases``); a real caption's
are found with the general parser's lexicon: an optional determiner or number,
attribute words, then one or more nouns ("a small brown dog", "two fire hydrants"). As on the
world, spans are token positions as the tokenizer's ``encode`` places them, exact
only when the caption's tokens are its words' tokens side by side (true of the
sentencepiece models trained here, which never merge across whitespace); a caption
where they differ gets no spans and is counted.
"""

from __future__ import annotations

import functools

import numpy as np

from vlkg.graphs import general_parser

STARTS = frozenset("a an the two three four five several some many".split())
_STRIP = ",.;:!?\"'()"


@functools.lru_cache(maxsize=4)
def _word_sets(parser: general_parser.GeneralParser) -> tuple[frozenset, frozenset]:
  attributes = frozenset(a for a in parser.attributes if " " not in a)
  nouns = set()
  for phrase in parser.objects:
    *first, last = phrase.split()
    nouns.update((*first, last, *general_parser.plural_forms(last)))  # "fire hydrant"
  return attributes, frozenset(nouns)


def phrase_words(text: str, parser: general_parser.GeneralParser) -> list[tuple[int, int]]:
  """[(first word, end word)) of each object phrase, words split on whitespace: an
  optional determiner or number, attribute words, then nouns. Region descriptions
  ("small white dog") often have no determiner, so none is required."""
  attributes, nouns = _word_sets(parser)
  words = [w.strip(_STRIP).lower() for w in text.split()]
  spans, start = [], 0
  while start < len(words):
    end = start + (words[start] in STARTS)
    while end < len(words) and words[end] in attributes and words[end] not in nouns:
      end += 1
    last = end
    while last < len(words) and words[last] in nouns:
      last += 1
    if last > end:
      spans.append((start, last))
      start = last
    else:
      start += 1
  return spans


def token_spans(tokenizer, text: str, parser: general_parser.GeneralParser,
                max_phrases: int, stats=None) -> np.ndarray:
  """[max_phrases, 2] int64 (start, end) token positions of the object phrases; (0, 0)
  pads. Phrases beyond ``max_phrases`` or the text length are counted in
  ``stats["phrases_truncated"]``, unaligned captions in ``stats["phrases_unaligned"]``."""
  out = np.zeros((max_phrases, 2), np.int64)
  spans = phrase_words(text, parser)
  if not spans:
    return out
  words = text.split()
  token_ids = getattr(tokenizer, "token_ids", None)
  pieces = token_ids(words) if token_ids else None
  if pieces is None or [p for w in pieces for p in w] != list(token_ids([text])[0]):
    if stats is not None:
      stats["phrases_unaligned"] += 1
    return out
  starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(int)
  offset = 0 if tokenizer.bos_id is None else 1
  kept = 0
  for first, end in spans:
    a, b = offset + starts[first], offset + starts[end]
    noun = words[end - 1]
    if noun != noun.rstrip(_STRIP):  # "dog," : leave the comma's pieces out
      core = token_ids([noun.rstrip(_STRIP)])[0]
      if list(pieces[end - 1][:len(core)]) == list(core):
        b = offset + starts[end - 1] + len(core)
    if kept == max_phrases or b > tokenizer.max_len - 1:  # the last position is EOS
      if stats is not None:
        stats["phrases_truncated"] += 1
      continue
    out[kept] = (a, b)
    kept += 1
  return out
