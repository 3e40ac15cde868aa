"""Word spans of a caption's phrases -> the token positions the text tower sees.

LOUPE's phrase players (PAPERS.md §4 "Game") are kept or dropped through the text
tower's ``token_mask``, so each phrase, found as a span of whitespace-split words
(``vlkg.data.world.phrases`` for the world's grammar, ``vlkg.data.corpora.phrases``
for free captions), is mapped to token positions here. The mapping is exact when the
caption's tokens are its words' tokens side by side, which holds for the
SentencePiece models trained here (they never merge across whitespace) and is
checked; a caption where it fails gets no spans and is counted.
"""

from __future__ import annotations

import numpy as np

# Punctuation that may stick to a word; a phrase's span leaves it out.
STRIP = ",.;:!?\"'()"


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
