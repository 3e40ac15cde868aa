"""Structure-CLIP's evaluation encoder: fused text features, as the paper evaluates.

Huang et al., "Structure-CLIP: Towards Scene Graph Knowledge to Enhance Multi-modal
Structured Representations", AAAI 2024, Knowledge-Enhanced Encoder: a caption's
text feature is normalise(text) + lambda * normalise(KEE(its triples)), at
evaluation as in training. So the encoder needs each caption's triples:

* a caption of the prepared dataset (a suite option, a held-out record's caption)
  takes them from the dataset, where prepare built them with the very builder of
  the training records (``vlkg.graphs.fields.triples`` with ``eval_texts``;
  ``vlkg.data.records.EVAL_TABLE``): looked up by text in ``encode_texts`` and by
  token ids in ``encode_token_ids``, with nothing decoded or parsed again;
* any other text (a user's string through ``vlkg.api``, a real benchmark's caption)
  is parsed (``vlkg.graphs.parse``, the world's parser on the world).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from vlkg import api
from vlkg.graphs.scene_graph import SceneGraph


class FusedTextModel(api.Model):
  """``api.Model`` whose texts carry their triples through the KEE, fused.

  Without a dataset table, token ids carry no graph: ``encode_token_ids`` is None
  and only text is taken. With one, ids found in it are encoded from its triples
  and other ids are decoded and parsed.
  """

  def __init__(self, module, params, tokenizer, image_size: int, graph_shape,
               parse: Callable[[str], SceneGraph], table: dict | None = None,
               batch_size: int = 256):
    super().__init__(module, params, tokenizer, image_size, batch_size)
    self.graph_shape, self.parse = graph_shape, parse
    self._fused = jax.jit(lambda p, t, tr, m: module.apply(
        {"params": p}, t, tr, m, method=type(module).fused_text))
    self._table = table
    if table is None:
      self.encode_token_ids = None
      self._by_text, self._by_ids = {}, {}
    else:
      self._by_text = {str(t): i for i, t in enumerate(table["texts"])}
      self._by_ids = {row.tobytes(): i
                      for i, row in enumerate(table["text_ids"].astype(np.int32))}

  def _triples(self, rows: list[int | None], texts: Callable[[list[int]], list[str]]):
    """(triples [N, T, 3, S], valid [N, T]) from the table's ``rows``; where a row is
    None, from parsing ``texts(those indices)``."""
    from vlkg.graphs import tensorize
    t, s = self.graph_shape.max_triples, self.graph_shape.triple_tokens
    triples = np.full((len(rows), t, 3, s), self.tokenizer.pad_id, np.int32)
    valid = np.zeros((len(rows), t), bool)
    known = [i for i, r in enumerate(rows) if r is not None]
    if known:
      idx = np.asarray([rows[i] for i in known])
      triples[known] = self._table["triples"][idx]
      valid[known] = self._table["triples_valid"][idx]
    unknown = [i for i, r in enumerate(rows) if r is None]
    if unknown:
      graphs = [self.parse(text) for text in texts(unknown)]
      triples[unknown], valid[unknown] = tensorize.triple_arrays(
          graphs, self.tokenizer, self.graph_shape)
    return triples, valid

  def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
    if isinstance(texts, str):
      raise TypeError("encode_texts takes a list of strings")
    texts = list(texts)
    rows = [self._by_text.get(text) for text in texts]
    triples, valid = self._triples(rows, lambda idx: [texts[i] for i in idx])
    return self._batched(self._fused, self.tokenizer.encode(texts), triples, valid)

  def encode_token_ids(self, ids) -> np.ndarray:  # pylint: disable=method-hidden
    ids = np.asarray(ids, np.int32)
    rows = [self._by_ids.get(row.tobytes()) for row in ids]
    triples, valid = self._triples(rows, lambda idx: self.tokenizer.decode(ids[idx]))
    return self._batched(self._fused, ids, triples, valid)


def make(module, params, tokenizer, config, *, image_size: int, batch_size: int,
         dataset_dir: str | None, max_triples: int, triple_tokens: int) -> FusedTextModel:
  """The encoder of a Structure-CLIP run; the table of ``dataset_dir`` if it has one
  with triples of this shape."""
  from vlkg import graphs
  from vlkg.data import records
  from vlkg.graphs import tensorize
  table = records.read_eval_table(dataset_dir) if dataset_dir else None
  shape = (max_triples, 3, triple_tokens)
  if table is not None and ("triples" not in table or table["triples"].shape[1:] != shape):
    table = None  # prepared for another method or other sizes
  from vlkg.data import prepare
  backend = "world" if prepare.is_world(config.input.data) else "general"
  return FusedTextModel(module, params, tokenizer, image_size,
                        tensorize.GraphShape(max_triples, triple_tokens),
                        lambda text: graphs.parse(text, backend), table, batch_size)
