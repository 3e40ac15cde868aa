"""OpenAI CLIP's byte-level BPE tokenizer, with no dependency beyond the stdlib.

Follows Radford et al. 2021 (CLIP) §2.4 ("a lower-cased byte pair encoding (BPE)
representation of the text with a 49,152 vocab size [...] bracketed with [SOS] and
[EOS] tokens") and the released code ``clip/simple_tokenizer.py``, which open_clip
(Ilharco et al. 2021, ``open_clip/tokenizer.py``) reuses. It reads the same vocabulary
file, ``bpe_simple_vocab_16e6.txt.gz``: gzip'd UTF-8 text whose first line is a
header and whose next lines are BPE merges ``"a b"`` in priority order. The ids are

  * 0..255: the 256 bytes, each as a printable unicode character (GPT-2's
    byte-to-unicode table), in the table's order;
  * 256..511: the same characters with the end-of-word marker ``</w>``;
  * then the first 48,894 merges, each the concatenation of its two halves;
  * 49406 ``<|startoftext|>`` (SOT, our ``bos_id``) and 49407 ``<|endoftext|>``
    (EOT, our ``eos_id``).

Padding is id 0, as in open_clip's ``tokenize``. Id 0 is also the character "!", so
a model must not mask id-0 keys inside a caption (see ``TextTransformer.mask_pad``),
and ``decode`` only treats zeros after EOT (or trailing zeros of a row without EOT)
as padding.

Two dependencies of the original are replaced, so encodings can differ from
open_clip's in these places only:

  * ftfy's ``fix_text``: we redo its cheap, deterministic steps ourselves (HTML
    unescaping when the text holds no "<", C1 controls read as Windows-1252, Latin
    ligatures, full/half-width forms, curly quotes, ANSI terminal escapes, invisible
    control characters, NFC), but not its mojibake repair (``fix_encoding``), i.e.
    text decoded with the wrong codec ("cafÃ©") stays as it is, where ftfy would
    turn it into "café". ftfy also takes the "<" decision line by line and decodes
    a few all-caps entities (``&EACUTE;``) that ``html.unescape`` leaves alone.
  * the ``regex`` module's ``\\p{L}`` and ``\\p{N}``: stdlib ``re`` has no Unicode
    property classes, so the letter and number classes are built from
    ``unicodedata`` categories (L* and N*). They differ from ``regex``'s only where
    the two libraries ship different Unicode versions (characters assigned in one
    version and not the other).

Literal special-token strings in a caption (open_clip's ``<start_of_text>`` and
``<end_of_text>``) are tokenised as ordinary text, never as SOT/EOT: a caption must
not be able to end itself early.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
import gzip
import hashlib
import html
import os
import re
import unicodedata
from typing import Any

import numpy as np

from vlkg import files

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
# OpenAI keeps 49152 - 256 - 2 merges, so that bytes, their </w> forms, merges and
# the two special tokens make 49408 ids.
NUM_MERGES = 49152 - 256 - 2
CONTEXT_LENGTH = 77
PAD_ID = 0
END_OF_WORD = "</w>"


def _printable(b: int) -> bool:
  return 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF


@functools.lru_cache(maxsize=None)
def byte_to_symbol() -> tuple[str, ...]:
  """``table[b]`` is the printable symbol that stands for byte ``b`` in the BPE.

  Bytes that are printable Latin-1 characters (``!``..``~``, ``¡``..``¬``,
  ``®``..``ÿ``) stand for themselves; the other 68 (controls, space, soft hyphen,
  ...) move to code points 256, 257, ... in byte order, so that no symbol is
  whitespace or a control character.
  """
  moved = [b for b in range(256) if not _printable(b)]
  table = {b: chr(256 + i) for i, b in enumerate(moved)}
  return tuple(chr(b) if _printable(b) else table[b] for b in range(256))


@functools.lru_cache(maxsize=None)
def byte_symbols() -> tuple[str, ...]:
  """The 256 byte symbols in vocabulary order: printable bytes, then moved ones."""
  table = byte_to_symbol()
  return (tuple(table[b] for b in range(256) if _printable(b))
          + tuple(table[b] for b in range(256) if not _printable(b)))


# --- text cleaning (what OpenAI does with ftfy + html, done with the stdlib) --------

_LATIN_LIGATURES = str.maketrans({
    "\u0132": "IJ", "\u0133": "ij", "\u0149": "\u02bcn",
    "\u01f1": "DZ", "\u01f2": "Dz", "\u01f3": "dz",
    "\u01c4": "D\u017d", "\u01c5": "D\u017e", "\u01c6": "d\u017e",
    "\u01c7": "LJ", "\u01c8": "Lj", "\u01c9": "lj",
    "\u01ca": "NJ", "\u01cb": "Nj", "\u01cc": "nj",
    "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
    "\ufb05": "\u017ft", "\ufb06": "st",
})
# Fullwidth ASCII and halfwidth katakana/hangul back to their usual forms; the
# ideographic space becomes a plain space.
_WIDTH = str.maketrans(
    {0x3000: " ", **{i: unicodedata.normalize("NFKC", chr(i)) for i in range(0xFF01, 0xFFF0)
                     if unicodedata.normalize("NFKC", chr(i)) != chr(i)}})
_QUOTES = str.maketrans({"\u02bc": "'", "\u2018": "'", "\u2019": "'", "\u201a": "'",
                         "\u201b": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
                         "\u201f": '"'})
# Controls with no visible effect: C0 except tab/newline/form feed/CR, DEL, the
# deprecated Arabic format controls, BOM and the interlinear annotation marks.
_INVISIBLE = dict.fromkeys(
    [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070),
     0xFEFF, *range(0xFFF9, 0xFFFD)])
_ANSI_ESCAPE = re.compile("\x1b\\[[0-9;]*[a-zA-Z]")
_C1 = re.compile("[\x80-\x9f]")


def _c1_as_cp1252(match: re.Match[str]) -> str:
  # Browsers read stray C1 controls as Windows-1252; the five bytes that code page
  # leaves undefined stay as they are.
  try:
    return match.group(0).encode("latin-1").decode("cp1252")
  except UnicodeDecodeError:
    return match.group(0)


def _fix_text(text: str) -> str:
  """ftfy.fix_text's default steps minus mojibake repair, to a fixed point."""
  unescape = "<" not in text  # text with "<" may be real HTML; keep its entities
  for _ in range(8):
    before = text
    if unescape:
      text = html.unescape(text)
    text = _C1.sub(_c1_as_cp1252, text)
    text = text.translate(_LATIN_LIGATURES).translate(_WIDTH).translate(_QUOTES)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _ANSI_ESCAPE.sub("", text).translate(_INVISIBLE)
    text = unicodedata.normalize("NFC", text)
    if text == before:
      break
  return text


def clean_text(text: str) -> str:
  """OpenAI's cleaning: fix_text, HTML-unescape twice, squeeze whitespace, lowercase."""
  text = html.unescape(html.unescape(_fix_text(text))).strip()
  return " ".join(text.split()).lower()


# --- pre-tokenisation ---------------------------------------------------------


# The ``regex`` module's \s (the Unicode White_Space property). Stdlib ``re``'s \s
# also has U+001C..U+001F, which ``regex`` files under "other" characters.
_WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f"
               "\u205f\u3000")


def _ranges(members: bytearray) -> str:
  """A character-class body for the code points ``cp`` with ``members[cp]``."""
  parts, start = [], None
  for cp in range(len(members) + 1):
    inside = cp < len(members) and members[cp]
    if inside and start is None:
      start = cp
    elif not inside and start is not None:
      parts.append(f"\\U{start:08x}" if start == cp - 1
                   else f"\\U{start:08x}-\\U{cp - 1:08x}")
      start = None
  return "".join(parts)


@functools.lru_cache(maxsize=None)
def word_pattern() -> re.Pattern[str]:
  r"""The pre-tokeniser: OpenAI's ``'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
  [^\s\p{L}\p{N}]+`` (``regex`` module, IGNORECASE) with the classes spelled out.

  Letters are taken whole, every digit is its own word, and runs of other
  non-space characters (punctuation, symbols, marks) group together.

  IGNORECASE is applied by hand rather than by ``re``, because the two libraries
  disagree on it: under ``regex`` a character that is not itself a letter or a
  number but whose case partner is (U+0345, whose capital is iota) matches neither
  the letter class nor the negated class and is dropped, while ``re`` would put it
  in the letter class. The contractions also match their capitals and the long s
  (U+017F), which folds to "s".

  Built once per process; walking every code point takes about a second.
  """
  n = 0x110000
  letter, number, other = bytearray(n), bytearray(n), bytearray(n)
  for cp in range(n):
    c = chr(cp)
    kind = unicodedata.category(c)[0]
    if kind == "L":
      letter[cp] = 1
    elif kind == "N":
      number[cp] = 1
    else:
      other[cp] = 1
  for cp in range(n):
    if other[cp]:
      c = chr(cp)
      for m in (c.upper(), c.lower()):
        if len(m) == 1 and m != c and unicodedata.category(m)[0] in "LN":
          other[cp] = 0
  space = re.compile(f"[{_WHITESPACE}]")
  for cp in range(0x3001):  # no whitespace above U+3000; it never joins a word
    if space.match(chr(cp)):
      other[cp] = 0
  contractions = "'[sS\u017f]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]"
  return re.compile(f"{contractions}|[{_ranges(letter)}]+|[{_ranges(number)}]|"
                    f"[{_ranges(other)}]+")


# --- the tokenizer ------------------------------------------------------------


def _read_merges(path: str) -> tuple[list[tuple[str, str]], bytes]:
  raw = files.read_bytes(path)
  try:
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
  except (OSError, EOFError, UnicodeDecodeError) as e:
    raise ValueError(f"CLIP BPE vocabulary {path} is not gzip'd UTF-8 text: {e}") from e
  merges = []
  # Line 0 is a header ("#version: 0.2"); OpenAI keeps the first NUM_MERGES merges.
  for number, line in enumerate(lines[1:NUM_MERGES + 1], start=2):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 2:
      raise ValueError(f"CLIP BPE vocabulary {path} line {number}: expected two "
                       f"symbols, got {line!r}")
    merges.append((parts[0], parts[1]))
  return merges, raw


class ClipBpeTokenizer:
  """A ``vlkg.data.tokenizer.Tokenizer`` with OpenAI CLIP's BPE.

  ``encode`` gives ``[SOT, tokens..., EOT, 0, ...]`` rows of ``context_length``;
  an over-long caption keeps its first ``context_length - 2`` tokens and ends in EOT,
  as open_clip's ``tokenize``.
  """

  def __init__(self, vocab_path: str | os.PathLike[str],
               context_length: int = CONTEXT_LENGTH):
    """Reads the vocabulary.

    Args:
      vocab_path: ``bpe_simple_vocab_16e6.txt.gz`` (or a file of the same format).
      context_length: length of every encoded row, SOT and EOT included.

    Raises:
      FileNotFoundError: the file does not exist (the message names it).
      ValueError: the file is not a BPE vocabulary, or context_length < 2.
    """
    self._vocab_path = os.fspath(vocab_path)
    if not files.isfile(self._vocab_path):
      raise FileNotFoundError(f"CLIP BPE vocabulary not found: {self._vocab_path}")
    if isinstance(context_length, bool) or not isinstance(context_length, int) \
        or context_length < 2:
      raise ValueError(f"context_length must be an int >= 2 (room for SOT and EOT), "
                       f"got {context_length!r}")
    merges, raw = _read_merges(self._vocab_path)
    self._sha256 = hashlib.sha256(raw).hexdigest()
    symbols = list(byte_symbols())
    vocab = symbols + [s + END_OF_WORD for s in symbols] + [a + b for a, b in merges]
    vocab += [SOT_TOKEN, EOT_TOKEN]
    self._encoder = {piece: i for i, piece in enumerate(vocab)}
    self._decoder = vocab
    self._ranks = {pair: i for i, pair in enumerate(merges)}
    self._byte_of = {s: b for b, s in enumerate(byte_to_symbol())}
    self._cache: dict[str, tuple[int, ...]] = {}
    self.vocab_size = len(vocab)
    self.bos_id = self._encoder[SOT_TOKEN]
    self.eos_id = self._encoder[EOT_TOKEN]
    self.pad_id = PAD_ID
    self.max_len = context_length

  def __repr__(self) -> str:
    return (f"ClipBpeTokenizer({self._vocab_path!r}, context_length={self.max_len}, "
            f"vocab_size={self.vocab_size})")

  @property
  def vocab_path(self) -> str:
    return self._vocab_path

  @property
  def vocab_sha256(self) -> str:
    return self._sha256

  def _bpe(self, word: str) -> tuple[int, ...]:
    """Ids of one pre-tokenised word (already mapped to byte symbols)."""
    cached = self._cache.get(word)
    if cached is not None:
      return cached
    parts = list(word[:-1]) + [word[-1] + END_OF_WORD]
    ranks = self._ranks
    while len(parts) > 1:
      # The adjacent pair merged earliest in training goes first; all its
      # occurrences merge left to right in one pass, as in OpenAI's loop.
      best = min(zip(parts, parts[1:]), key=lambda p: ranks.get(p, NUM_MERGES + 1))
      if best not in ranks:
        break
      merged, i = [], 0
      while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
          merged.append(parts[i] + parts[i + 1])
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      parts = merged
    ids = tuple(self._encoder[p] for p in parts)
    if len(self._cache) < 200_000:
      self._cache[word] = ids
    return ids

  def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
    """Each text's BPE ids alone: no SOT, EOT, padding or truncation."""
    table = byte_to_symbol()
    pattern = word_pattern()
    out = []
    for text in texts:
      ids: list[int] = []
      for word in pattern.findall(clean_text(text)):
        ids.extend(self._bpe("".join(table[b] for b in word.encode("utf-8"))))
      out.append(ids)
    return out

  def encode(self, texts: Sequence[str]) -> np.ndarray:
    """Encodes a batch to int32 ``[len(texts), max_len]``: SOT, tokens, EOT, zeros.

    Raises:
      TypeError: ``texts`` is a single string or holds a non-string.
    """
    if isinstance(texts, (str, bytes)):
      raise TypeError("encode takes a sequence of strings, not a single string; "
                      "wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"texts[{i}] is {type(text).__name__}, not str: {text!r}")
    out = np.full((len(texts), self.max_len), self.pad_id, np.int32)
    room = self.max_len - 2
    for row, ids in enumerate(self.token_ids(texts)):
      row_ids = [self.bos_id, *ids[:room], self.eos_id]
      out[row, :len(row_ids)] = row_ids
    return out

  def unpadded_lengths(self, texts: Sequence[str]) -> list[int]:
    """Token counts before padding or truncation (SOT and EOT included)."""
    return [len(ids) + 2 for ids in self.token_ids(list(texts))]

  def decode(self, ids: Any) -> list[str]:
    """Decodes ``[N, L]`` ids (or one row) to N cleaned, lowercase strings.

    Each row is cut at its first EOT and SOT is dropped. Zeros before EOT are the
    character "!"; a row with no EOT drops its trailing zeros as padding.
    """
    from vlkg.data import tokenizer  # tokenizer imports this module to register it
    rows = tokenizer.id_rows(ids)
    texts = []
    for row in rows:
      row = [int(t) for t in row]
      if self.eos_id in row:
        row = row[:row.index(self.eos_id)]
      else:
        while row and row[-1] == self.pad_id:
          row.pop()
      data = bytearray()
      for token in row:
        if token == self.bos_id:
          continue
        if not 0 <= token < self.vocab_size:
          raise ValueError(f"token id {token} is outside [0, {self.vocab_size})")
        piece = self._decoder[token]
        if piece.endswith(END_OF_WORD):
          data.extend(self._byte_of[c] for c in piece[:-len(END_OF_WORD)])
          data.extend(b" ")
        else:
          data.extend(self._byte_of[c] for c in piece)
      texts.append(data.decode("utf-8", errors="replace").strip())
    return texts

  def describe(self) -> dict[str, Any]:
    """``{"type": "clip_bpe", "vocab_path", "vocab_sha256", "context_length"}``.

    ``vocab_path`` is as given; a run directory that keeps the file beside its
    config should make it relative and pass ``base_dir`` to ``from_description``.
    """
    return {"type": "clip_bpe", "vocab_path": self._vocab_path,
            "vocab_sha256": self._sha256, "context_length": self.max_len}


def from_description(desc: Mapping[str, Any],
                     base_dir: str | os.PathLike[str] | None) -> ClipBpeTokenizer:
  """Rebuilds a ``ClipBpeTokenizer`` from ``describe()``; checks the file's sha256."""
  known = {"type", "vocab_path", "vocab_sha256", "context_length", "vocab_size"}
  unknown = set(desc) - known
  if unknown:
    raise ValueError(f"clip_bpe tokenizer description has unknown keys "
                     f"{sorted(unknown)}; known: {sorted(known)}")
  if "vocab_path" not in desc:
    raise ValueError(f"clip_bpe tokenizer description lacks key 'vocab_path': {dict(desc)}")
  path = files.under(base_dir, desc["vocab_path"])
  tokenizer = ClipBpeTokenizer(path, int(desc.get("context_length", CONTEXT_LENGTH)))
  want = desc.get("vocab_sha256")
  if want is not None and want != tokenizer.vocab_sha256:
    raise ValueError(f"CLIP BPE vocabulary {path} has sha256 {tokenizer.vocab_sha256}, "
                     f"but the description says {want}; the file has changed")
  if "vocab_size" in desc and desc["vocab_size"] != tokenizer.vocab_size:
    raise ValueError(f"CLIP BPE vocabulary {path} has {tokenizer.vocab_size} ids, but "
                     f"the description says vocab_size {desc['vocab_size']}")
  return tokenizer
