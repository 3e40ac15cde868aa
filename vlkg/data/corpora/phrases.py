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

from vlkg.data import phrase_tokens
from vlkg.graphs import general_parser

STARTS = frozenset("a an the two three four five several some many".split())
_STRIP = phrase_tokens.STRIP


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
  """[max_phrases, 2] int64 (start, end) token positions of the object phrases
  (``vlkg.data.phrase_tokens.token_spans_of_words``); (0, 0) pads."""
  return phrase_tokens.token_spans_of_words(
      tokenizer, text, phrase_words(text, parser), max_phrases, stats)
