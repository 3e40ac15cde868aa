"""CLIP's BPE tokenizer: a hand-made vocabulary with hand-worked ids, the stdlib
pre-tokeniser, and (optional) id-for-id agreement with open_clip's tokenizer."""

from __future__ import annotations

import gzip
import os
import random
import sys
import unicodedata

import numpy as np
import pytest

from vlkg.data import clip_bpe
from vlkg.data import tokenizer as tok_lib

# A vocabulary in the real file's format: a header line, then merges by priority.
MERGES = ["l l", "h e", "he ll", "hell o</w>"]
# Ids: 256 byte symbols, their </w> forms, then one id per merge, then SOT, EOT.
LL, HE, HELL, HELLO_W = 512, 513, 514, 515
SOT, EOT = 516, 517


def sym(ch: str) -> int:
  """Id of a printable ASCII character's byte symbol (vocabulary starts at "!")."""
  return ord(ch) - ord("!")


def end(ch: str) -> int:
  """Id of the same symbol with the end-of-word marker."""
  return 256 + sym(ch)


@pytest.fixture(scope="module")
def vocab_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("bpe") / "tiny_vocab.txt.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "\n".join(MERGES) + "\n")
  return path


@pytest.fixture(scope="module")
def tok(vocab_path):
  return clip_bpe.ClipBpeTokenizer(vocab_path)


def row(*ids, length=77):
  out = np.zeros(length, np.int32)
  out[:len(ids)] = ids
  return out


def test_layout_and_protocol(tok):
  assert isinstance(tok, tok_lib.Tokenizer)
  assert tok.vocab_size == 518
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.max_len) == (SOT, EOT, 0, 77)


def test_byte_symbols():
  table = clip_bpe.byte_to_symbol()
  assert table[ord("!")] == "!" and table[0xFF] == "\u00ff"
  # Space, the first moved byte after the 32 C0 controls, and the soft hyphen last.
  assert table[0x20] == chr(256 + 32) and table[0xAD] == chr(256 + 67)
  order = clip_bpe.byte_symbols()
  assert len(set(order)) == 256 and order[0] == "!" and order[187] == "\u00ff"


@pytest.mark.parametrize("text, ids", [
    # h e l l o</w> -> h e ll o</w> -> he ll o</w> -> hell o</w> -> hello</w>
    ("Hello", [HELLO_W]),
    # "l l</w>" is not the merge "l l", so "hell" stops at he l l</w>; "!" is a word.
    ("hell!", [HE, sym("l"), end("l"), end("!")]),
    ("it's", [sym("i"), end("t"), sym("'"), end("s")]),  # the "'s" contraction
    ("42", [end("4"), end("2")]),  # every digit is its own word
    ("...!?", [sym("."), sym("."), sym("."), sym("!"), end("?")]),  # one word
    # UTF-8 bytes C3 A9 are the printable symbols at vocabulary positions 127, 102.
    ("\u00e9", [127, 256 + 102]),
    ("&lt;b&gt;", [end("<"), end("b"), end(">")]),  # entities unescaped
    ("&amp;amp;", [end("&")]),  # twice
    ("\u201chello\u201d", [end('"'), HELLO_W, end('"')]),  # curly quotes uncurled
    ("\uff28\uff25\uff2c\uff2c\uff2f", [HELLO_W]),  # fullwidth letters
    ("  hello\t\n hello  ", [HELLO_W, HELLO_W]),  # whitespace squeezed
    ("", []),
])
def test_hand_worked_ids(tok, text, ids):
  np.testing.assert_array_equal(tok.encode([text])[0], row(SOT, *ids, EOT))


def test_truncation_keeps_eot_last(vocab_path):
  short = clip_bpe.ClipBpeTokenizer(vocab_path, context_length=6)
  out = short.encode(["hello " * 10, "hello"])
  np.testing.assert_array_equal(out[0], [SOT] + [HELLO_W] * 4 + [EOT])
  np.testing.assert_array_equal(out[1], [SOT, HELLO_W, EOT, 0, 0, 0])
  assert short.unpadded_lengths(["hello " * 10]) == [12]


def test_decode(tok):
  ids = tok.encode(["Hello hell!", "wow!?"])
  # "!" inside a word is id 0, the pad id too: zeros before EOT are text.
  assert sym("!") == 0 and 0 in ids[1, :6].tolist()
  assert tok.decode(ids) == ["hello hell !", "wow !?"]
  # Without an EOT, trailing zeros are padding.
  assert tok.decode([SOT, HELLO_W, 0, 0]) == ["hello"]
  assert tok.decode(np.array([SOT, HELLO_W, EOT, HELLO_W])) == ["hello"]


def test_encode_rejects_bad_input(tok):
  with pytest.raises(TypeError, match="single string"):
    tok.encode("hello")
  with pytest.raises(TypeError, match="texts\\[1\\]"):
    tok.encode(["a", 3])


def test_description_round_trip(tok, vocab_path, tmp_path):
  desc = tok.describe()
  assert desc == {"type": "clip_bpe", "vocab_path": str(vocab_path),
                  "vocab_sha256": tok.vocab_sha256, "context_length": 77}
  again = tok_lib.from_description(desc)
  np.testing.assert_array_equal(again.encode(["hello hell"]), tok.encode(["hello hell"]))
  # Relative paths resolve against base_dir, as for sentencepiece.
  rel = dict(desc, vocab_path=os.path.basename(vocab_path))
  assert tok_lib.from_description(rel, base_dir=os.path.dirname(vocab_path)).vocab_size == 518
  with pytest.raises(ValueError, match="sha256"):
    tok_lib.from_description(dict(desc, vocab_sha256="0" * 64))
  with pytest.raises(FileNotFoundError, match="nowhere.txt.gz"):
    tok_lib.from_description(dict(desc, vocab_path=str(tmp_path / "nowhere.txt.gz")))
  with pytest.raises(ValueError, match="unknown keys"):
    tok_lib.from_description(dict(desc, merges=3))


def test_bad_vocabulary_files(tmp_path):
  plain = tmp_path / "plain.txt"
  plain.write_text("#version\na b\n")
  with pytest.raises(ValueError, match="plain.txt"):
    clip_bpe.ClipBpeTokenizer(plain)
  bad = tmp_path / "bad.txt.gz"
  with gzip.open(bad, "wt") as f:
    f.write("#version\na b c\n")
  with pytest.raises(ValueError, match="line 2"):
    clip_bpe.ClipBpeTokenizer(bad)


def test_clean_text():
  assert clip_bpe.clean_text("  Tom &amp;amp; JERRY\u2019s\r\n ﬁsh  ") == "tom & jerry's fish"
  assert clip_bpe.clean_text("e\u0301") == "\u00e9"  # NFC
  assert clip_bpe.clean_text("\x1b[31mred\x1b[0m\ufeff") == "red"
  assert clip_bpe.clean_text("a\x85b") == "a\u2026b"  # C1 as Windows-1252
  # With a "<" the text may be HTML; ftfy keeps its entities, html.unescape still
  # decodes two levels.
  assert clip_bpe.clean_text("<b> &amp;amp;amp;") == "<b> &amp;"


@pytest.mark.parametrize("text, words", [
    ("caf\u00e9 na\u00efve", ["caf\u00e9", "na\u00efve"]),
    ("\u6771\u4eac2024", ["\u6771\u4eac", "2", "0", "2", "4"]),
    ("\u0661\u0662\u00bd", ["\u0661", "\u0662", "\u00bd"]),  # Arabic digits, No
    ("they're we've i'm you'll he'd", ["they", "'re", "we", "'ve", "i", "'m", "you",
                                       "'ll", "he", "'d"]),
    ("x--y!!", ["x", "--", "y", "!!"]),
    ("\U0001f600\U0001f600 ok", ["\U0001f600\U0001f600", "ok"]),
    ("\u0438\u0432\u0430\u043d_\u0434\u0430", ["\u0438\u0432\u0430\u043d", "_",
                                               "\u0434\u0430"]),
    ("a\u0345b", ["a", "b"]),  # as the regex module under IGNORECASE: dropped
])
def test_word_pattern(text, words):
  assert clip_bpe.word_pattern().findall(text) == words


def test_word_pattern_matches_the_regex_module():
  regex = pytest.importorskip("regex")
  ref = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                      regex.IGNORECASE)
  ours = clip_bpe.word_pattern()
  # The BMP and a sample of the other planes; characters our unicodedata does not
  # know yet may differ (a newer Unicode in regex).
  rng = random.Random(0)
  cps = list(range(0x10000)) + rng.sample(range(0x10000, 0x110000), 20000)
  bad = []
  for cp in cps:
    c = chr(cp)
    if 0xD800 <= cp < 0xE000 or unicodedata.category(c) == "Cn":
      continue
    s = f"a{c}b 1{c}2 .{c}. {c}{c} '{c}"
    if ours.findall(s) != ref.findall(s):
      bad.append(hex(cp))
  assert not bad, bad[:20]


# --- optional: id-for-id agreement with open_clip -----------------------------


def _agreement_texts() -> list[str]:
  fixed = [
      "", " ", "a", "A photo of a cat.", "a photo of a dog", "Hello, World!",
      "it's a dog's life; they're sure we've met, I'm sure you'll see he'd go",
      "IT'S LOUD", "don't can't won't shouldn't", "rock'n'roll", "'quoted'",
      "the year 1984 and 2001: a space odyssey", "3.14159 26 535 8979", "1,000,000",
      "call +1 (555) 010-9999", "temperature -40\u00b0C", "50% off!!!", "$5.99 / \u20ac3",
      "e-mail: someone@example.com", "https://example.com/a/b?c=d&e=f#g",
      "Tom &amp; Jerry", "&lt;b&gt;bold&lt;/b&gt;", "&quot;hi&quot; &#39;there&#39;",
      "&amp;amp; twice", "&eacute;t&eacute;", "<p>keep &amp; this</p>", "a &nbsp; b",
      "caf\u00e9 na\u00efve r\u00e9sum\u00e9 co\u00f6perate", "Stra\u00dfe", "\u0130stanbul",
      "\u6771\u4eac\u30bf\u30ef\u30fc", "\u5317\u4eac\u6b22\u8fce\u4f60",
      "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
      "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5", "\u0645\u0631\u062d\u0628\u0627 \u0661\u0662\u0663",
      "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
      "emoji \U0001f600\U0001f44d\U0001f3fd \u2764\ufe0f", "\U0001f1eb\U0001f1f7 flag",
      "\u201ccurly\u201d \u2018quotes\u2019 it\u2019s", "\u00abguillemets\u00bb",
      "\ufb01ne \ufb02ow \ufb00", "\uff28\uff45\uff4c\uff4c\uff4f\uff01 \uff11\uff12\uff13",
      "e\u0301 composed", "\u212b \u2126", "tab\tand\nnewline\r\nand\u3000ideographic",
      "zero\u200bwidth", "soft\u00adhyphen", "\u00bd \u00be \u2153 \u2460 \u2167",
      "x\u00b2 + y\u00b2 = z\u00b2", "\u2026 \u2014 \u2013 \u2022", "___under___", "a_b_c",
      "#hashtag @user", "C++ and C# and F#", "snake_case camelCase PascalCase",
      "MiXeD CaSe", "multiple     spaces", "!!!???...", "(parentheses) [brackets] {braces}",
      "1st 2nd 3rd 4th", "9am-5pm", "v1.2.3-beta", "ISO-8859-1", "naive\u2019s \u2018n\u2019",
      "a" * 400, "word " * 90, "the quick brown fox jumps over the lazy dog " * 8,
      "\u00e9" * 100, "1234567890" * 12, "a b c d e f g h i j k l m n o p q r s t u v w x y z",
      "A photo of a big red apple on a small wooden table next to a window.",
      "two dogs playing in the snow", "a man riding a brown horse",
  ]
  rng = random.Random(1234)
  pool = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
          + list(" .,;:!?'\"-()[]{}&#/\\@*+=<>~^`|%$_")
          + ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "&amp;", "&lt;", "&gt;",
             "&quot;", "&#39;", "\u00e9", "\u00fc", "\u00df", "\u6771", "\u4eac",
             "\u0416", "\u03a9", "\u0661", "\U0001f600", "\u201c", "\u201d", "\u2019",
             "\ufb01", "\uff21", "\u00bd", "\u2460", "\t", "\n", "  ", "\u3000"])
  words = ["photo", "dog", "cat", "riding", "horse", "beautiful", "sunset", "over",
           "ocean", "painting", "of", "a", "the", "in", "with", "blue", "sky",
           "unbelievable", "antidisestablishmentarianism", "pneumonoultramicroscopic"]
  generated = []
  for i in range(260):
    parts = []
    for _ in range(rng.randint(1, 40 if i % 10 else 120)):
      parts.append(rng.choice(words) + " " if rng.random() < 0.5 else rng.choice(pool))
    generated.append("".join(parts))
  return fixed + generated


def test_matches_open_clip_tokenizer():
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "convert"))
  from open_clip_stub import import_open_clip
  import_open_clip()
  from open_clip import tokenizer as oc_tok
  texts = _agreement_texts()
  assert len(texts) >= 200
  ours = clip_bpe.ClipBpeTokenizer(oc_tok.default_bpe())
  theirs = oc_tok.SimpleTokenizer()
  assert ours.vocab_size == theirs.vocab_size == 49408
  got = ours.encode(texts)
  want = theirs(texts).numpy()
  differ = [t for t, a, b in zip(texts, got, want) if not np.array_equal(a, b)]
  print(f"clip_bpe agrees with open_clip on {len(texts) - len(differ)}/{len(texts)} texts")
  assert not differ, differ[:5]
  assert any(w[-1] == ours.eos_id for w in want)  # some texts were truncated
