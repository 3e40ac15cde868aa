"""A caption's object phrases, found from its scene graph, as the tokens the text
tower sees.

LOUPE's semantics-level game (Li et al., "Fine-Grained Semantically Aligned
Vision-Language Pre-Training", NeurIPS 2022, the semantics-level game and its
region-phrase alignment) has regions and phrases as players; a phrase is kept or
dropped through the text tower's ``token_mask``. The phrases are the caption's objects: each object of
the caption's scene graph is looked up in the caption's words (its noun, a synonym
of it or a plural), and its phrase reaches back over the object's own attribute
words and a determiner ("a big pink striped cross", "two fire hydrants"). So one
piece of code serves every dataset: the world (its parser's canonical words meet
the caption's synonyms through the dataset's vocabulary) and real captions (the
general parser's lexicon words, plurals, multi-word nouns) alike.

Token positions are exact when the caption's tokens are its words' tokens side by
side, which holds for the SentencePiece models trained here (they never merge
across whitespace) and is checked: a caption where it fails gets no spans and is
counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vlkg.graphs import general_parser
from vlkg.graphs.scene_graph import SceneGraph

# Punctuation that may stick to a word; a phrase's span leaves it out.
STRIP = ",.;:!?\"'()"
# Words that may open an object phrase before its attributes.
DETERMINERS = frozenset("a an the two three four five several some many".split())


def _same(word: str, graph_word: str, synonyms: Mapping[str, Sequence[str]]) -> bool:
  return word == graph_word or word in synonyms.get(graph_word, ())


def _noun_length(words: list[str], k: int, name: str,
                 synonyms: Mapping[str, Sequence[str]]) -> int:
  """How many words from ``words[k]`` say the object ``name`` (0: they do not)."""
  *first, last = name.split()
  n = len(first) + 1
  if k + n > len(words) or words[k:k + n - 1] != first:
    return 0
  word = words[k + n - 1]
  if _same(word, last, synonyms) or word in general_parser.plural_forms(last):
    return n
  return 0


def object_phrase_words(text: str, graph: SceneGraph,
                        synonyms: Mapping[str, Sequence[str]] | None = None
                        ) -> list[tuple[int, int]]:
  """[(first word, end word)) of each object's phrase, in the graph's object order.

  Words are ``text.split()`` with punctuation stripped and lowercased. Object i's
  noun is the first occurrence, after the previous phrase, of ``graph.objects[i]``
  (or a synonym, or a plural of its last word); its phrase extends left over the
  words that say one of its attributes and then over one determiner. An object
  whose noun is not in the text (a ground-truth graph that uses other words) has
  no phrase.

  Args:
    text: the caption.
    graph: the caption's scene graph.
    synonyms: word -> words that mean the same (``negatives.Vocabulary.synonyms``),
      so that a canonical graph word ("large") finds the caption's ("big").
  """
  synonyms = synonyms or {}
  words = [w.strip(STRIP).lower() for w in text.split()]
  spans, pos = [], 0
  for i, name in enumerate(graph.objects):
    found = next(((k, n) for k in range(pos, len(words))
                  if (n := _noun_length(words, k, name, synonyms))), None)
    if found is None:
      continue
    k, n = found
    attributes = graph.attributes_of(i)
    start = k
    while start > pos and any(_same(words[start - 1], a, synonyms) for a in attributes):
      start -= 1
    if start > pos and words[start - 1] in DETERMINERS:
      start -= 1
    spans.append((start, k + n))
    pos = k + n
  return spans


def token_spans_of_words(tokenizer, text: str, word_spans: list[tuple[int, int]],
                         max_phrases: int, stats=None) -> np.ndarray:
  """[max_phrases, 2] int64 (start, end) token positions of ``word_spans`` (each
  [first word, end word) of ``text.split()``), as the tokenizer's ``encode`` places
  them (after BOS if it adds one); (0, 0) pads.

  Phrases beyond ``max_phrases`` or past the text length are left out and counted in
  ``stats["phrases_truncated"]``; a caption whose words tokenise differently alone
  than together, or a tokenizer without ``token_ids``, gives no spans
  (``stats["phrases_unaligned"]``).
  """
  out = np.zeros((max_phrases, 2), np.int64)
  if not word_spans:
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
  room = tokenizer.max_len - 1  # the last position is always EOS
  kept = 0
  for first, end in word_spans:
    a, b = offset + starts[first], offset + starts[end]
    noun = words[end - 1]
    if noun != noun.rstrip(STRIP):  # "dog," : leave the comma's pieces out
      core = token_ids([noun.rstrip(STRIP)])[0]
      if list(pieces[end - 1][:len(core)]) == list(core):
        b = offset + starts[end - 1] + len(core)
    if kept == max_phrases or b > room:
      if stats is not None:
        stats["phrases_truncated"] += 1
      continue
    out[kept] = (a, b)
    kept += 1
  return out


def token_spans(tokenizer, text: str, graph: SceneGraph, max_phrases: int,
                synonyms: Mapping[str, Sequence[str]] | None = None,
                stats=None) -> np.ndarray:
  """[max_phrases, 2] int64 token spans of the caption's object phrases
  (``object_phrase_words`` mapped by ``token_spans_of_words``); (0, 0) pads."""
  return token_spans_of_words(tokenizer, text, object_phrase_words(text, graph, synonyms),
                              max_phrases, stats)


def span_mask(spans, length: int):
  """[..., P, 2] (start, end) -> [..., P, length] bool token membership (jnp or np)."""
  import jax.numpy as jnp
  pos = jnp.arange(length)
  return (pos >= spans[..., :1]) & (pos < spans[..., 1:2])
