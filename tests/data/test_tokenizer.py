"""Tests for vlkg/data/tokenizer.py: SentencePiece training, encoding, rebuilding."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from vlkg.data import tokenizer as tok
from vlkg.data.world import ontology

CAPTION = "a large red circle to the left of a small blue square"


def _world_captions() -> list[str]:
  """World-like captions covering every surface form, in a fixed order."""
  shapes = [f for s in ontology.SHAPES for f in ontology.surface_forms(s.name)]
  colors = [f for c in ontology.COLORS for f in ontology.surface_forms(c.name)]
  sizes = [f for s in ontology.SIZES for f in ontology.surface_forms(s)]
  textures = [f for t in ontology.TEXTURES for f in ontology.surface_forms(t)]
  relations = [f for r in ontology.RELATIONS for f in ontology.surface_forms(r)]
  out = []
  for i in range(300):
    a = (f"a {sizes[i % len(sizes)]} {textures[i % len(textures)]} "
         f"{colors[i % len(colors)]} {shapes[i % len(shapes)]}")
    b = f"a {colors[(3 * i + 1) % len(colors)]} {shapes[(5 * i + 2) % len(shapes)]}"
    out.append(f"{a} {relations[i % len(relations)]} {b}")
  out.append(CAPTION)
  out.append("there are 2 objects")
  return out


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
  prefix = tmp_path_factory.mktemp("spm") / "world"
  return tok.train_sentencepiece(_world_captions(), str(prefix), vocab_size=96)


@pytest.fixture(scope="module")
def tokenizer(model_path):
  return tok.SentencePieceTokenizer(model_path, max_len=32)


def test_training_is_deterministic(tmp_path, model_path):
  first = tok.train_sentencepiece(_world_captions(), tmp_path / "a" / "m", 96, seed=0)
  second = tok.train_sentencepiece(
      iter(_world_captions()), str(tmp_path / "b" / "other"), 96, seed=0)
  assert first.endswith("m.model") and second.endswith("other.model")
  with open(first, "rb") as f1, open(second, "rb") as f2, open(model_path, "rb") as f3:
    data = f1.read()
    assert data == f2.read() == f3.read()
  assert len(data) > 100
  assert (tmp_path / "a" / "m.vocab").read_text(encoding="utf-8").startswith(
      "<pad>\t0\n<unk>\t0\n<s>\t0\n</s>\t0\n")


def test_special_ids_and_protocol(tokenizer):
  assert isinstance(tokenizer, tok.Tokenizer)
  assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id) == (0, 3, None)
  assert 20 < tokenizer.vocab_size <= 96
  with_bos = tok.SentencePieceTokenizer(tokenizer.model_path, 8, add_bos=True)
  assert with_bos.bos_id == 2


def test_encode_shape_padding_and_eos(tokenizer):
  ids = tokenizer.encode([CAPTION, "a red disc", ""])
  assert ids.dtype == np.int32 and ids.shape == (3, 32)
  assert ids.min() >= 0 and ids.max() < tokenizer.vocab_size
  for row in ids:
    n = int(np.argmax(row == tokenizer.eos_id))
    assert row[n] == 3
    assert np.all(row[n + 1:] == 0)
    assert np.all((row[:n] != 0) & (row[:n] != 3))
  assert ids[2].tolist() == [3] + [0] * 31
  assert tokenizer.encode([]).shape == (0, 32)
  with pytest.raises(TypeError, match="single string"):
    tokenizer.encode(CAPTION)


def test_bos(tokenizer):
  with_bos = tok.SentencePieceTokenizer(tokenizer.model_path, 8, add_bos=True)
  ids = with_bos.encode(["", CAPTION])
  assert ids[0].tolist() == [2, 3, 0, 0, 0, 0, 0, 0]
  assert ids[1, 0] == 2 and ids[1, -1] == 3
  assert with_bos.decode(ids)[0] == ""


def test_truncation_keeps_eos(tokenizer):
  full = tokenizer.encode([CAPTION])[0]
  n = int(np.argmax(full == 3))
  assert n > 6
  short = tok.SentencePieceTokenizer(tokenizer.model_path, max_len=6)
  ids = short.encode([CAPTION, "a"])
  assert ids.shape == (2, 6)
  assert ids[0].tolist() == full[:5].tolist() + [3]
  assert ids[1, -1] == 0 and 3 in ids[1].tolist()
  assert CAPTION.startswith(short.decode(ids)[0])
  one = tok.SentencePieceTokenizer(tokenizer.model_path, max_len=1)
  assert one.encode([CAPTION]).tolist() == [[3]]


def test_decode_inverts_encode(tokenizer):
  captions = [CAPTION, "a tiny striped violet plus beneath a big hollow teal oval",
              "a red disc", "there are 2 objects", ""]
  ids = tokenizer.encode(captions)
  assert tokenizer.decode(ids) == captions
  assert tokenizer.decode(ids.tolist()) == captions
  assert tokenizer.decode(ids[0]) == [CAPTION]
  # Anything after the first EOS is ignored.
  row = ids[2].copy()
  row[-3:] = ids[0][:3]
  assert tokenizer.decode(row[None]) == ["a red disc"]
  # Text is not lowercased: "R" never occurs in training, so it must become unk.
  assert tok.UNK_ID in tokenizer.encode(["a Red disc"])[0].tolist()
  assert tok.UNK_ID not in tokenizer.encode(["a red disc"])[0].tolist()


def test_from_description_round_trip(tokenizer, model_path, tmp_path):
  desc = tokenizer.describe()
  assert desc["type"] == "sentencepiece" and desc["max_len"] == 32
  rebuilt = tok.from_description(json.loads(json.dumps(desc)))
  assert isinstance(rebuilt, tok.SentencePieceTokenizer)
  assert rebuilt.describe() == desc
  np.testing.assert_array_equal(
      rebuilt.encode([CAPTION]), tokenizer.encode([CAPTION]))

  run_dir = tmp_path / "run"
  run_dir.mkdir()
  (run_dir / "tok.model").write_bytes(open(model_path, "rb").read())
  relative = dict(desc, model_path="tok.model", max_len=12)
  rebuilt = tok.from_description(relative, base_dir=run_dir)
  assert rebuilt.max_len == 12
  assert rebuilt.decode(rebuilt.encode(["a red disc"])) == ["a red disc"]


def test_from_description_errors(tokenizer, tmp_path):
  desc = tokenizer.describe()
  with pytest.raises(ValueError, match="'type'.*bpe_magic|bpe_magic.*'type'"):
    tok.from_description(dict(desc, type="bpe_magic"))
  with pytest.raises(ValueError, match="'type'"):
    tok.from_description({"model_path": "x"})
  with pytest.raises(ValueError, match="max_len"):
    tok.from_description({"type": "sentencepiece", "model_path": desc["model_path"]})
  with pytest.raises(ValueError, match="changed"):
    tok.from_description(dict(desc, model_sha256="0" * 64))
  with pytest.raises(ValueError, match="unknown keys"):
    tok.from_description(dict(desc, maxlen=3))
  missing = tmp_path / "nowhere" / "gone.model"
  with pytest.raises(FileNotFoundError, match="gone.model"):
    tok.from_description(dict(desc, model_path=str(missing)))


def test_missing_model_and_bad_arguments(tokenizer, tmp_path):
  missing = tmp_path / "absent.model"
  with pytest.raises(FileNotFoundError, match=str(missing)):
    tok.SentencePieceTokenizer(missing, max_len=8)
  with pytest.raises(ValueError, match="max_len"):
    tok.SentencePieceTokenizer(tokenizer.model_path, max_len=0)
  with pytest.raises(ValueError, match="max_len"):
    tok.SentencePieceTokenizer(tokenizer.model_path, max_len=1, add_bos=True)
  with pytest.raises(ValueError, match="model_type"):
    tok.train_sentencepiece(["a b"], str(tmp_path / "x"), 32, model_type="wordpiece")
  with pytest.raises(ValueError, match="no non-empty"):
    tok.train_sentencepiece(["", ""], str(tmp_path / "x"), 32)


def test_pickle(tokenizer):
  again = pickle.loads(pickle.dumps(tokenizer))
  assert again.describe() == tokenizer.describe()
  np.testing.assert_array_equal(again.encode([CAPTION]), tokenizer.encode([CAPTION]))
