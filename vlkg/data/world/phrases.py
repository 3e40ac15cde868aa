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
``token_spans`` checks (a caption where they differ gets no spans and is counted).
"""

from __future__ import annotations

import numpy as np

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
  """[max_phrases, 2] int64 (start, end) token positions of the object phrases, as
  the tokenizer's ``encode`` places them (after BOS if any); (0, 0) pads.

  Phrases beyond ``max_phrases`` or past the text length are left out and counted
  in ``stats["phrases_truncated"]``; a caption whose words tokenise differently
  alone than together gets no spans (``stats["phrases_unaligned"]``).
  """
  out = np.zeros((max_phrases, 2), np.int64)
  spans = object_phrase_words(text)
  if not spans:
    return out
  words = text.split()
  pieces = tokenizer.token_ids(words)
  if [p for w in pieces for p in w] != list(tokenizer.token_ids([text])[0]):
    if stats is not None:
      stats["phrases_unaligned"] += 1
    return out
  starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])
  offset = 1 if getattr(tokenizer, "_add_bos", False) else 0
  room = tokenizer.max_len - 1  # the last position is always EOS
  kept = 0
  for first, end in spans:
    a, b = offset + starts[first], offset + starts[end]
    noun = words[end - 1]
    if noun != noun.rstrip(",.;"):  # "triangle," : leave the comma's pieces out
      core = tokenizer.token_ids([noun.rstrip(",.;")])[0]
      if list(pieces[end - 1][:len(core)]) == list(core):
        b = offset + starts[end - 1] + len(core)
    if kept == max_phrases or b > room:
      if stats is not None:
        stats["phrases_truncated"] += 1
      continue
    out[kept] = (a, b)
    kept += 1
  return out


def span_mask(spans, length: int):
  """[..., P, 2] (start, end) -> [..., P, length] bool token membership (jnp or np)."""
  import jax.numpy as jnp
  pos = jnp.arange(length)
  return (pos >= spans[..., :1]) & (pos < spans[..., 1:2])
