"""Text tokenizers: the interface the data pipeline and models use, and SentencePiece.

Every tokenizer turns a batch of strings into a fixed-shape int32 array
``[N, max_len]`` and back. Sequences always end in EOS (truncation drops tokens
before it, never EOS itself) and are right-padded with ``pad_id``.

A tokenizer describes itself with a JSON-able dict (``describe()``), which runs save
next to their checkpoints; ``from_description`` rebuilds the same tokenizer from it.

SentencePiece models trained here use the id layout pad=0, unk=1, bos=2, eos=3, and
no text normalisation: the world's captions are already lowercase and clean, and a
tokenizer that silently rewrote text (case folding, NFKC, whitespace squeezing) would
make ``decode(encode(x))`` differ from ``x``, which the semantic checks of generated
captions rely on. Characters never seen in training become ``unk``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import hashlib
import io
import os
import pathlib
import typing
from typing import Any

import numpy as np
import sentencepiece as spm

from vlkg.data import clip_bpe
from vlkg import files
from vlkg.files import atomic_write

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MODEL_TYPES = ("unigram", "bpe", "char", "word")


@typing.runtime_checkable
class Tokenizer(typing.Protocol):
  """What the rest of the code base may assume about a tokenizer.

  Attributes:
    vocab_size: number of ids; every id in an encoded array is in [0, vocab_size).
    pad_id: id used to right-pad sequences to ``max_len``.
    eos_id: id that ends every encoded sequence.
    bos_id: id that starts every encoded sequence, or ``None`` if none is added.
    max_len: length of every encoded sequence, padding included.
  """

  vocab_size: int
  pad_id: int
  eos_id: int
  bos_id: int | None
  max_len: int

  def encode(self, texts: Sequence[str]) -> np.ndarray:
    """Encodes a batch to int32 ``[N, max_len]``: tokens, EOS, then ``pad_id``s.

    Over-long texts are truncated so that EOS is still the last real token.
    """
    ...

  def decode(self, ids: Any) -> list[str]:
    """Decodes ``[N, L]`` ids to N strings, stopping at each row's first EOS."""
    ...

  def describe(self) -> dict[str, Any]:
    """A JSON-able dict with a "type" key, enough for ``from_description``."""
    ...


def id_rows(ids: Any) -> list[list[int]]:
  """The rows of ``decode``'s input: ``[N, L]`` ids as an array (numpy, jax, tf) or
  nested sequences (rows may differ in length); a 1-D input is one row."""
  if not isinstance(ids, (list, tuple)) and hasattr(ids, "__array__"):
    ids = np.asarray(ids)  # jax / tf arrays
  if isinstance(ids, np.ndarray):
    if ids.ndim == 1:
      ids = ids[None]
    elif ids.ndim != 2:
      raise ValueError(f"decode needs [N, L] ids, got shape {ids.shape}")
    return ids.tolist()
  rows = list(ids)
  if rows and isinstance(rows[0], (int, np.integer)):
    rows = [rows]
  return rows


def _encode_pieces(sp, texts: list[str]) -> list[list[int]]:
  """Token ids of each text. sentencepiece's batch call starts a thread pool, which
  costs ~10x a caption's encoding; a few captions are encoded one by one."""
  if len(texts) < 64:
    return [sp.encode(t, out_type=int) for t in texts]
  return sp.encode(texts, out_type=int, num_threads=-1)


class SentencePieceTokenizer:
  """A ``Tokenizer`` backed by a SentencePiece model.

  The model must use ids pad=0, unk=1, bos=2, eos=3 (as ``train_sentencepiece``
  makes them), so that padding is id 0 everywhere in the code base.

  Text is not lowercased or otherwise normalised beyond what the model itself was
  trained with (none, for models from ``train_sentencepiece``).
  """

  def __init__(self, model_path: str | os.PathLike[str], max_len: int,
               add_bos: bool = False):
    """Loads the model.

    Args:
      model_path: the ``.model`` file.
      max_len: length of encoded sequences including EOS (and BOS if added).
      add_bos: whether to start every sequence with BOS.

    Raises:
      FileNotFoundError: if ``model_path`` does not exist (the message names it).
      ValueError: if ``max_len`` cannot hold EOS (and BOS), or the model's special
        ids are not pad=0, unk=1, bos=2, eos=3.
    """
    self._model_path = os.fspath(model_path)
    if not files.isfile(self._model_path):
      raise FileNotFoundError(
          f"sentencepiece model file not found: {self._model_path}")
    min_len = 2 if add_bos else 1
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < min_len:
      raise ValueError(
          f"max_len must be an int >= {min_len} (room for EOS"
          f"{' and BOS' if add_bos else ''}), got {max_len!r}")
    self.max_len = max_len
    self._add_bos = bool(add_bos)
    self._load()

  def _load(self) -> None:
    self._model_bytes = files.read_bytes(self._model_path)
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
    except Exception as e:  # sentencepiece raises bare RuntimeError/OSError
      raise ValueError(
          f"could not load sentencepiece model {self._model_path}: {e}") from e
    layout = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
    if layout != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
      raise ValueError(
          f"sentencepiece model {self._model_path} has special ids (pad, unk, bos, "
          f"eos) = {layout}; expected {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}. Retrain it "
          "with vlkg.data.tokenizer.train_sentencepiece")
    self.vocab_size = int(self._sp.get_piece_size())
    self.pad_id = PAD_ID
    self.eos_id = EOS_ID
    self.bos_id = BOS_ID if self._add_bos else None
    self.unk_id = UNK_ID

  # The processor is a C++ object; pickle the constructor arguments instead so the
  # tokenizer can cross process boundaries (e.g. data-loading workers).
  def __getstate__(self) -> dict[str, Any]:
    return {"model_path": self._model_path, "max_len": self.max_len,
            "add_bos": self._add_bos}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self._model_path = state["model_path"]
    self.max_len = state["max_len"]
    self._add_bos = state["add_bos"]
    self._load()

  def __repr__(self) -> str:
    return (f"SentencePieceTokenizer({self._model_path!r}, max_len={self.max_len}, "
            f"add_bos={self._add_bos}, vocab_size={self.vocab_size})")

  @property
  def model_path(self) -> str:
    return self._model_path

  @property
  def model_sha256(self) -> str:
    return hashlib.sha256(self._model_bytes).hexdigest()

  def encode(self, texts: Sequence[str]) -> np.ndarray:
    """Encodes a batch of strings to int32 ``[len(texts), max_len]``.

    Each row is ``[bos]? tokens... eos pad...``. Tokens that do not fit are dropped
    from the end of the text, so EOS is always present. An empty string gives
    ``[eos, pad, ...]`` (after BOS if added).

    Raises:
      TypeError: if ``texts`` is a single string (it would be split into characters)
        or contains a non-string.
    """
    if isinstance(texts, (str, bytes)):
      raise TypeError("encode takes a sequence of strings, not a single string; "
                      "wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"texts[{i}] is {type(text).__name__}, not str: {text!r}")
    out = np.full((len(texts), self.max_len), self.pad_id, dtype=np.int32)
    if not texts:
      return out
    prefix = [BOS_ID] if self._add_bos else []
    room = self.max_len - len(prefix) - 1
    for row, pieces in enumerate(_encode_pieces(self._sp, texts)):
      ids = prefix + list(pieces[:room]) + [self.eos_id]
      out[row, :len(ids)] = ids
    return out

  def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids alone: no BOS, no EOS, no padding, no truncation."""
    return _encode_pieces(self._sp, list(texts))

  def unpadded_lengths(self, texts: Sequence[str]) -> list[int]:
    """Token counts before padding or truncation (BOS and EOS included)."""
    extra = 1 + int(self._add_bos)
    texts = list(texts)
    return [len(p) + extra for p in _encode_pieces(self._sp, texts)]

  def decode(self, ids: Any) -> list[str]:
    """Decodes rows of ids back to strings.

    Args:
      ids: ``[N, L]`` ids (array or nested sequences, rows may differ in length);
        a 1-D sequence is taken as one row. Each row is cut at its first EOS; BOS and
        padding are dropped.

    Returns:
      N strings.
    """
    rows = id_rows(ids)
    texts = []
    for row in rows:
      kept = []
      for token in row:
        token = int(token)
        if token == self.eos_id:
          break
        if token in (self.pad_id, BOS_ID):
          continue
        if not 0 <= token < self.vocab_size:
          raise ValueError(f"token id {token} is outside [0, {self.vocab_size})")
        kept.append(token)
      texts.append(self._sp.decode(kept))
    return texts

  def describe(self) -> dict[str, Any]:
    """``{"type": "sentencepiece", "model_path", "max_len", "add_bos", ...}``.

    ``model_path`` is as given to the constructor; a run directory that stores the
    model beside its description should make it relative before saving, and pass
    ``base_dir`` to ``from_description``. ``vocab_size`` and ``model_sha256`` are
    checked on rebuild, so a model retrained in place is caught.
    """
    return {
        "type": "sentencepiece",
        "model_path": self._model_path,
        "max_len": self.max_len,
        "add_bos": self._add_bos,
        "vocab_size": self.vocab_size,
        "model_sha256": self.model_sha256,
    }


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str | os.PathLike[str],
    vocab_size: int,
    seed: int = 0,
    model_type: str = "unigram",
) -> str:
  """Trains a SentencePiece model on ``texts`` and writes ``<model_prefix>.model``.

  Deterministic: the same texts, vocab size, seed and model type give a byte-identical
  ``.model`` file, wherever it is written. To get there, training is single-threaded
  (``num_threads=1``), does not shuffle or sample the input
  (``shuffle_input_sentence=False``, ``input_sentence_size=0``), seeds
  sentencepiece's global random generator with ``seed`` (the trainer has no per-run
  seed option, so later trainings in this process inherit it), and keeps the output
  path out of the model (the model proto is written by us, not by the trainer, which
  would record ``model_prefix`` in it).

  ``hard_vocab_limit=False`` lets small corpora train: the vocabulary may come out
  smaller than ``vocab_size``. ``character_coverage=1.0`` keeps every training
  character; digits are split; no normalisation is applied (see module docstring).
  A ``<model_prefix>.vocab`` file (piece<TAB>score) is written for inspection.

  Args:
    texts: training sentences; empty ones are skipped.
    model_prefix: output path without extension; parent directories are created.
    vocab_size: target vocabulary size, special pieces included (at most).
    seed: seed for sentencepiece's random generator.
    model_type: one of "unigram", "bpe", "char", "word".

  Returns:
    The path of the written ``.model`` file.

  Raises:
    ValueError: for an unknown ``model_type``, a ``vocab_size`` below 5, no
      non-empty texts, or a training failure (with sentencepiece's message).
  """
  if model_type not in MODEL_TYPES:
    raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
  if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 5:
    raise ValueError(f"vocab_size must be an int >= 5, got {vocab_size!r}")
  sentences = []
  for text in texts:
    if not isinstance(text, str):
      raise ValueError(f"texts contains a {type(text).__name__}, not str: {text!r}")
    if text:
      sentences.append(text)
  if not sentences:
    raise ValueError("train_sentencepiece got no non-empty texts")

  prefix = pathlib.Path(model_prefix)
  model_path = prefix.with_name(prefix.name + ".model")
  vocab_path = prefix.with_name(prefix.name + ".vocab")
  writer = io.BytesIO()
  spm.set_random_generator_seed(int(seed))
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=writer,
        model_type=model_type,
        vocab_size=vocab_size,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        hard_vocab_limit=False,
        character_coverage=1.0,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        minloglevel=2,  # training logs pages of INFO to stderr per call
    )
  except RuntimeError as e:
    raise ValueError(
        f"sentencepiece training for {model_path} failed (vocab_size={vocab_size}, "
        f"model_type={model_type!r}, {len(sentences)} texts): {e}") from e
  model_bytes = writer.getvalue()

  sp = spm.SentencePieceProcessor(model_proto=model_bytes)
  vocab_lines = "".join(
      f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))
  # Another host or process may be loading the model; never let it see half a file.
  atomic_write(model_path, model_bytes)
  atomic_write(vocab_path, vocab_lines)
  return str(model_path)


def train_dataset_tokenizer(dataset_dir: str, texts: Iterable[str], vocab_size: int, *,
                            seed: int, text_len: int, model_type: str) -> dict[str, Any]:
  """Trains the tokenizer of a prepared dataset (``train_sentencepiece``) into
  ``dataset_dir/tokenizer.model`` and returns its description, with the model's path
  relative to ``dataset_dir`` (a dataset does not depend on where it lies)."""
  path = train_sentencepiece(texts, os.path.join(dataset_dir, "tokenizer"), vocab_size,
                             seed=seed, model_type=model_type)
  desc = SentencePieceTokenizer(path, text_len).describe()
  desc["model_path"] = os.path.basename(path)
  return desc


def _require(desc: Mapping[str, Any], key: str) -> Any:
  if key not in desc:
    raise ValueError(
        f"tokenizer description of type {desc.get('type')!r} lacks key {key!r}: "
        f"{dict(desc)}")
  return desc[key]


def _sentencepiece_from_description(
    desc: Mapping[str, Any], base_dir: str | os.PathLike[str] | None
) -> SentencePieceTokenizer:
  known = {"type", "model_path", "max_len", "add_bos", "vocab_size", "model_sha256"}
  unknown = set(desc) - known
  if unknown:
    raise ValueError(
        f"sentencepiece tokenizer description has unknown keys {sorted(unknown)}; "
        f"known: {sorted(known)}")
  model_path = files.under(base_dir, _require(desc, "model_path"))
  tokenizer = SentencePieceTokenizer(
      model_path, max_len=_require(desc, "max_len"),
      add_bos=bool(desc.get("add_bos", False)))
  if "vocab_size" in desc and desc["vocab_size"] != tokenizer.vocab_size:
    raise ValueError(
        f"sentencepiece model {model_path} has vocab_size {tokenizer.vocab_size}, but "
        f"the description says {desc['vocab_size']}; the model file has changed")
  if "model_sha256" in desc and desc["model_sha256"] != tokenizer.model_sha256:
    raise ValueError(
        f"sentencepiece model {model_path} has sha256 {tokenizer.model_sha256}, but "
        f"the description says {desc['model_sha256']}; the model file has changed")
  return tokenizer


_FACTORIES = {"sentencepiece": _sentencepiece_from_description,
              "clip_bpe": clip_bpe.from_description}


def from_description(
    desc: Mapping[str, Any], base_dir: str | os.PathLike[str] | None = None
) -> Tokenizer:
  """Rebuilds a tokenizer from its ``describe()`` dict.

  Args:
    desc: the description; ``desc["type"]`` picks the implementation.
    base_dir: directory that relative paths in ``desc`` are relative to (e.g. the
      run directory the description was saved in); ``None`` means the current
      working directory.

  Raises:
    ValueError: if "type" is missing or unknown, a required key is missing, or the
      model file no longer matches the description.
    FileNotFoundError: if the model file is missing (the message names it).
  """
  if not isinstance(desc, Mapping):
    raise ValueError(f"tokenizer description must be a dict, got {type(desc).__name__}")
  if "type" not in desc:
    raise ValueError(f"tokenizer description lacks the key 'type': {dict(desc)}")
  kind = desc["type"]
  if kind not in _FACTORIES:
    raise ValueError(
        f"unknown tokenizer type {kind!r} in description key 'type'; known types: "
        f"{sorted(_FACTORIES)}")
  return _FACTORIES[kind](desc, base_dir)
