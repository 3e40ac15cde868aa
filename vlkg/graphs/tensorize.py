"""Scene graphs as fixed-size arrays, built once at prepare time.

Structure-CLIP's knowledge-enhanced encoder (Structure-CLIP, Huang et al., AAAI 2024) reads at most ``T`` (6)
triples per caption, each of head, relation and tail tokenised separately into at
most ``S`` (5) tokens. Shapes are fixed by the config so the training step keeps
static shapes; what does not fit is counted, never silently cut.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np

from vlkg.graphs.scene_graph import SceneGraph


@dataclasses.dataclass(frozen=True)
class GraphShape:
  max_triples: int = 6
  triple_tokens: int = 5


def triple_arrays(graphs: Sequence[SceneGraph], tokenizer, shape: GraphShape,
                  counts: collections.Counter | None = None) -> tuple[np.ndarray, np.ndarray]:
  """-> (ids int32 [N, T, 3, S] padded with the tokenizer's pad id, mask bool [N, T]).

  ``counts`` (if given) receives ``graphs_truncated`` (graphs with more than T
  triples), ``elements_truncated`` (h/r/t strings longer than S tokens) and
  ``empty_graphs``.
  """
  t, s = shape.max_triples, shape.triple_tokens
  ids = np.full((len(graphs), t, 3, s), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(graphs), t), bool)
  strings = sorted({x for g in graphs for triple in g.triples()[:t] for x in triple})
  pieces = dict(zip(strings, tokenizer.token_ids(strings)))
  counts = collections.Counter() if counts is None else counts
  for n, g in enumerate(graphs):
    triples = g.triples()
    counts["empty_graphs"] += not triples
    counts["graphs_truncated"] += len(triples) > t
    for k, triple in enumerate(triples[:t]):
      mask[n, k] = True
      for j, element in enumerate(triple):
        p = pieces[element]
        counts["elements_truncated"] += len(p) > s
        ids[n, k, j, :min(len(p), s)] = p[:s]
  return ids, mask
