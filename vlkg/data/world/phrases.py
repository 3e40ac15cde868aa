"""Object phrases of world captions as token spans: LOUPE's phrase players.

LOUPE's semantics-level game (PAPERS.md §4 "Game") has regions and phrases as
players. On the world the phrases are known exactly: each noun phrase that names
one object ("a big pink striped cross") is an article, its attribute words and a
shape noun, in the world's caption grammar (``vlkg.data.world.captions``). This
module finds them in a caption and maps them to the token positions the text tower
sees, so that the trainer can keep or drop a phrase through the text tower's
``token_mask``.

Token positions are exact because the SentencePiece tokenizer never merges across
whitespace: the caption's pieces are the concatenation of its words' pieces, which
``vlkg.data.phrase_tokens`` checks (a caption where they differ gets no spans and is
counted).
"""

from __future__ import annotations

import numpy as np

from vlkg.data import phrase_tokens
from vlkg.data.world import ontology

ARTICLES = frozenset({"a", "an", "the"})


def _word_roles() -> tuple[frozenset[str], frozenset[str]]:
  attributes, nouns = set(), set()
  for form, concept in ontology.lexicon().items():
    if " " in form:
      continue
    if concept in ontology.SHAPE_BY_NAME:
      nouns.add(form)
    elif concept not in ontology.RELATIONS:
      attributes.add(form)
  return frozenset(attributes), frozenset(nouns)


_ATTRIBUTES, _NOUNS = _word_roles()


def object_phrase_words(text: str) -> list[tuple[int, int]]:
  """[(first word, end word)) of each object noun phrase, in order; words split on
  whitespace, punctuation attached to a word ignored."""
  words = [w.strip(",.;").lower() for w in text.split()]
  spans = []
  for start, word in enumerate(words):
    if word not in ARTICLES:
      continue
    end = start + 1
    while end < len(words) and words[end] in _ATTRIBUTES:
      end += 1
    if end < len(words) and words[end] in _NOUNS:
      spans.append((start, end + 1))
  return spans


def token_spans(tokenizer, text: str, max_phrases: int, stats=None) -> np.ndarray:
  """[max_phrases, 2] int64 (start, end) token positions of the object phrases
  (``vlkg.data.phrase_tokens.token_spans_of_words``); (0, 0) pads."""
  return phrase_tokens.token_spans_of_words(tokenizer, text, object_phrase_words(text),
                                            max_phrases, stats)


def span_mask(spans, length: int):
  """[..., P, 2] (start, end) -> [..., P, length] bool token membership (jnp or np)."""
  import jax.numpy as jnp
  pos = jnp.arange(length)
  return (pos >= spans[..., :1]) & (pos < spans[..., 1:2])
