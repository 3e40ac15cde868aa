"""A method's data fields: what it adds to each caption's record, and how it is made.

A method module declares ``fields(config) -> tuple[Field, ...]``. A ``Field`` names
its record features (``Feature``: name, batch dtype, per-caption shape computed
from the config) and a builder that ``vlkg.data.prepare`` runs once per caption, for
the built-in world and for real corpora alike, long before training:

    build(caption: Caption, rng: np.random.Generator) -> {feature name: value}

``Caption`` gives the builder the caption's text, its scene graph (parsed on first
use), the dataset's tokenizer and ``GraphText`` (how the dataset says a graph in
words: vocabulary, realiser, rejected graphs) and a statistics counter; ``rng`` is
seeded by (seed, split, image index, the field's ``stream``) and shared by the
captions of one image in order, so a dataset is a pure function of the config.
Everything a builder reads from the config is closed over by ``fields(config)`` and
listed in ``Field.reads``: it joins the dataset's fingerprint with the features'
names, dtypes and shapes, so changing it prepares a new dataset.

The data layer loops over the declared fields and names none of them: records hold
each feature as ``[captions_per_image, *shape]``, the input pipeline picks the same
caption for all of them, and the batch key is the feature's name. Bool features
(validity flags) are bool in the batch. A field with ``eval_texts=True`` is also
built for the dataset's evaluation texts (``vlkg.data.records.EVAL_TABLE``), which a
method's evaluation encoder reads instead of parsing again (Structure-CLIP's
triples).

The builders below are the ones several methods share (triples, hard negatives,
object phrases, MosaiCLIP's sub-graph slots); a method names them with its own
config values.

How a new method adds a field (the number of characters of each caption, say):

    from vlkg.graphs import fields as F

    def fields(config):
      return (F.Field((F.Feature("num_chars", "int32"),),
                      lambda caption, rng: {"num_chars": len(caption.text)}),)

and its loss reads ``batch["num_chars"]`` ([B] int32). That is one file, the method
module (two when the builder is shared and goes here); before fields were declared,
a new field touched five to eight (the method, ``records``' layout and builders,
``prepare``'s field table, the input pipeline's parser, both dataset builders and
the config). ``tests/methods/test_toy_method.py`` proves it with a method defined in
the test alone.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vlkg.graphs.scene_graph import SceneGraph

# Batch dtype -> numpy dtype. Records store ints and bools as int64, floats as float32.
DTYPES = {"int32": np.int32, "bool": np.bool_, "float32": np.float32}
# Record and batch keys of every dataset; a feature may not take one.
RESERVED = frozenset({"image", "text", "texts", "text_ids", "captions", "index",
                      "num_objects", "object_attributes", "boxes", "scene_graph",
                      "objects", "_mask"})


@dataclasses.dataclass(frozen=True)
class Feature:
  """One record feature of a field, per caption.

  Attributes:
    name: the record key and the batch key.
    dtype: the batch dtype, a key of ``DTYPES``.
    shape: per caption; ``()`` is one value per caption.
  """
  name: str
  dtype: str
  shape: tuple[int, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
    if self.dtype not in DTYPES:
      raise ValueError(f"feature {self.name!r}: dtype {self.dtype!r} is not one of "
                       f"{sorted(DTYPES)}")
    if self.name in RESERVED or not self.name.isidentifier():
      raise ValueError(f"feature name {self.name!r} is reserved or not an identifier")
    if any(n < 0 for n in self.shape):
      raise ValueError(f"feature {self.name!r}: negative size in shape {self.shape}")

  @property
  def numpy_dtype(self):
    return DTYPES[self.dtype]

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  def to_json(self) -> dict:
    return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> Feature:
    return cls(data["name"], data["dtype"], tuple(data["shape"]))


@dataclasses.dataclass(frozen=True)
class GraphText:
  """How a dataset says a scene graph in words, for its negatives and sub-captions.

  Attributes:
    vocab: ``vlkg.graphs.negatives.Vocabulary``: synonyms, converses and the words
      that replacements draw from.
    realise: (graph, rng) -> text; the world's own realiser on the world, the
      template realiser of ``vocab`` on real captions.
    reject: graphs a training text must never show (the world's held-out pairs on
      its training split), or None.
  """
  vocab: Any
  realise: Callable[[SceneGraph, np.random.Generator], str]
  reject: Callable[[SceneGraph], bool] | None = None


class Caption:
  """One caption as a field builder sees it.

  Attributes:
    text: the caption.
    graph: its scene graph, from ``graph_fn`` on first use (the corpus's ground
      truth or its parser), so a method without graph fields never parses.
    tokenizer: the dataset's tokenizer (``encode`` gives ``[N, text_len]`` ids).
    graph_text: the dataset's ``GraphText``.
    stats: counts that prepare reports in the dataset's statistics.
  """

  def __init__(self, text: str, graph_fn: Callable[[], SceneGraph], tokenizer,
               graph_text: GraphText, stats: collections.Counter | None = None):
    self.text, self._graph_fn = text, graph_fn
    self.tokenizer, self.graph_text = tokenizer, graph_text
    self.stats = collections.Counter() if stats is None else stats

  @functools.cached_property
  def graph(self) -> SceneGraph:
    return self._graph_fn()


Builder = Callable[[Caption, np.random.Generator], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class Field:
  """Features a method adds to each caption, and the builder that makes them.

  Attributes:
    features: what ``build`` returns, by name.
    build: (caption, rng) -> {feature name: value of the feature's shape}.
    reads: the config values ``build`` reads (part of the dataset's fingerprint).
    stream: the rng stream of the field; 0 derives one from the first feature's
      name. Fields of one method must not share a stream that consumes randomness.
    eval_texts: also build the features for the dataset's evaluation texts (the
      suites' captions, the held-out records' captions), for the method's
      evaluation encoder.
  """
  features: tuple[Feature, ...]
  build: Builder
  reads: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  stream: int = 0
  eval_texts: bool = False

  def __post_init__(self):
    object.__setattr__(self, "features", tuple(self.features))
    if not self.features:
      raise ValueError("a field needs at least one feature")
    if not self.stream:
      # Clear of the streams the datasets use themselves (captions, suites: < 1000).
      object.__setattr__(self, "stream",
                         1000 + zlib.crc32(self.features[0].name.encode()) % 1_000_000)

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(f.name for f in self.features)

  def make(self, caption: Caption, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``build``'s values, checked against the features and cast to their dtypes."""
    values = self.build(caption, rng)
    extra = set(values) - set(self.names)
    if extra:
      raise ValueError(f"field {self.names}: builder returned undeclared {sorted(extra)}")
    out = {}
    for f in self.features:
      if f.name not in values:
        raise ValueError(f"field {self.names}: builder returned no {f.name!r}")
      value = np.asarray(values[f.name])
      if value.shape != f.shape:
        raise ValueError(f"feature {f.name!r}: builder gave shape {value.shape}, "
                         f"declared {f.shape}")
      out[f.name] = value.astype(f.numpy_dtype)
    return out

  def fingerprint(self) -> dict:
    fn = getattr(self.build, "func", self.build)  # a functools.partial's function
    return {"features": [f.to_json() for f in self.features],
            "reads": {k: _jsonable(v) for k, v in self.reads.items()},
            "stream": self.stream, "eval_texts": self.eval_texts,
            "builder": f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}"}


def _jsonable(value):
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  return value


def check(fields: Sequence[Field]) -> tuple[Field, ...]:
  """``fields`` as a tuple; two features of one name are an error that names it."""
  names = [n for field in fields for n in field.names]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise ValueError(f"features declared twice: {twice}")
  return tuple(fields)


# ------------------------------------------------------------------ shared builders


def _triples(caption: Caption, rng, *, max_triples: int, triple_tokens: int) -> dict:
  del rng
  from vlkg.graphs import tensorize
  ids, mask = tensorize.triple_arrays([caption.graph], caption.tokenizer,
                                      tensorize.GraphShape(max_triples, triple_tokens),
                                      caption.stats)
  return {"triples": ids[0], "triples_valid": mask[0]}


def triples(max_triples: int, triple_tokens: int, *, eval_texts: bool = False) -> Field:
  """The caption's scene-graph triples as token ids: ``triples`` [T, 3, S] (head,
  relation, tail, each at most S tokens) and ``triples_valid`` [T]; what does not fit
  is counted (``vlkg.graphs.tensorize``)."""
  return Field((Feature("triples", "int32", (max_triples, 3, triple_tokens)),
                Feature("triples_valid", "bool", (max_triples,))),
               functools.partial(_triples, max_triples=max_triples,
                                 triple_tokens=triple_tokens),
               reads={"max_triples": max_triples, "triple_tokens": triple_tokens},
               eval_texts=eval_texts)


def _negative(caption: Caption, rng, *, kinds, fallbacks) -> dict:
  from vlkg.graphs import negatives as neg_lib
  text = caption.graph_text
  negative = None
  for group in (kinds, fallbacks):  # the paper's kinds first, then the fallbacks
    if negative is None and group:
      negative = neg_lib.make_negative(caption.graph, group, rng, text.vocab,
                                       reject=text.reject)
  if negative is None:
    caption.stats["captions_without_negative"] += 1
    return {"neg_text": caption.tokenizer.encode([""])[0], "neg_valid": False}
  caption.stats[f"negatives_{negative.kind}"] += 1
  said = text.realise(negative.graph, rng)
  return {"neg_text": caption.tokenizer.encode([said])[0], "neg_valid": True}


def negatives(kinds: Sequence[str], fallbacks: Sequence[str], text_len: int) -> Field:
  """One hard negative per caption, made in graph space (``vlkg.graphs.negatives``:
  attribute swaps, relation swaps, replacements) and said by the dataset's realiser:
  ``neg_text`` [L] token ids and ``neg_valid``. ``fallbacks`` are tried only when no
  kind of ``kinds`` exists; a caption without any negative gets a blank one, invalid,
  counted in ``captions_without_negative``."""
  kinds, fallbacks = tuple(kinds), tuple(fallbacks)
  return Field((Feature("neg_text", "int32", (text_len,)), Feature("neg_valid", "bool")),
               functools.partial(_negative, kinds=kinds, fallbacks=fallbacks),
               reads={"negatives": kinds, "fallback_negatives": fallbacks}, stream=2)


def _phrase_spans(caption: Caption, rng, *, max_phrases: int) -> dict:
  del rng
  from vlkg.graphs import phrases
  return {"phrase_spans": phrases.token_spans(
      caption.tokenizer, caption.text, caption.graph, max_phrases,
      caption.graph_text.vocab.synonyms, caption.stats)}


def phrase_spans(max_phrases: int) -> Field:
  """The token spans of the caption's object phrases, ``phrase_spans`` [P, 2]
  (start, end), (0, 0) padding (``vlkg.graphs.phrases``)."""
  return Field((Feature("phrase_spans", "int32", (max_phrases, 2)),),
               functools.partial(_phrase_spans, max_phrases=max_phrases),
               reads={"max_phrases": max_phrases})


def _mosaic(caption: Caption, rng, *, max_pos: int, max_neg: int, p1: float) -> dict:
  from vlkg.graphs import decompose
  text, stats = caption.graph_text, caption.stats
  ex = decompose.build_example(caption.graph, rng, vocab=text.vocab,
                               realise_fn=text.realise, max_pos=max_pos,
                               max_neg=max_neg, p1=p1, reject=text.reject)
  pos, neg = list(ex.positives), list(ex.negatives)
  slots = ([*pos, *[""] * (max_pos - len(pos))] + [*neg, *[""] * (max_neg - len(neg))]
           + [ex.whole_negative or ""])
  valid = ([True] * len(pos) + [False] * (max_pos - len(pos)) + [True] * len(neg)
           + [False] * (max_neg - len(neg)) + [ex.whole_negative is not None])
  stats["mosaic_positives"] += len(pos)
  stats["mosaic_negatives"] += len(neg)
  stats["mosaic_whole_negatives"] += int(ex.whole_negative is not None)
  for category in ex.categories:
    stats[f"mosaic_negatives_{category}"] += 1
  return {"mosaic_texts": caption.tokenizer.encode(slots), "mosaic_valid": valid}


def mosaic_slots(max_pos: int, max_neg: int, p1: float, text_len: int) -> Field:
  """MosaiCLIP's texts of the caption (Singh et al., "Coarse-to-Fine Contrastive
  Learning in Image-Text-Graph Space for Improved Vision-Language
  Compositionality", EMNLP 2023, scene-graph decomposition and negative mining;
  ``vlkg.graphs.decompose``), in the slot layout of
  ``vlkg.methods.mosaiclip_loss.slot_layout`` without the caption itself:
  ``mosaic_texts`` [max_pos + max_neg + 1, L] (sub-captions, sub-graph negatives,
  the whole-caption negative) and ``mosaic_valid``; empty slots are blank, invalid."""
  slots = max_pos + max_neg + 1
  return Field((Feature("mosaic_texts", "int32", (slots, text_len)),
                Feature("mosaic_valid", "bool", (slots,))),
               functools.partial(_mosaic, max_pos=max_pos, max_neg=max_neg, p1=p1),
               reads={"max_pos": max_pos, "max_neg": max_neg, "p1": p1}, stream=3)
