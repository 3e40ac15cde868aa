"""Knowledge-CLIP's evaluation encoder: the two towers, and the fusion encoder for
knowledge-graph queries.

Pan et al., "Contrastive Language-Image Pre-Training with Knowledge Graphs",
NeurIPS 2022, §3.3, E2E: the fusion encoder reads a triplet with one entity masked
and predicts that entity's embedding. A tail query (h, r, ?) is that prediction
with the tail masked, so the kg evaluator (`vlkg.evaluators.kg`) ranks tails for
Knowledge-CLIP through the module it trained for it, while images and texts are
embedded by the towers, as in every other evaluation. The query's inputs are the
training step's (`knowledge_clip_step.forward`): the head's token sequence
(``entity_len`` text tokens, or the patch grid pooled by ``fusion_image_pool``),
the relation pooled by the text tower at ``entity_len`` tokens, and the masked
tail (the zero vector with the tail's role embedding). The fusion encoder has no
position embeddings, so the slots' order is not an input.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vlkg import api
from vlkg.data import kg_table
from vlkg.methods import knowledge_clip_step as kc_step
from vlkg.models import knowledge_fusion as F
from vlkg.models.two_towers import l2_normalize
from vlkg.preprocess import normalize_images

Array = jax.Array


def _tail_query(module, head: Array, head_valid: Array, head_kind: int,
                relation: Array) -> Array:
  """[K, D] unit predictions of the masked tail of (head, relation, ?)."""
  k, _, d = head.shape
  heads = jnp.full((k,), F.HEAD, jnp.int32)
  no, yes = jnp.zeros((k,), bool), jnp.ones((k,), bool)
  fused = module.fuse(head, head_valid, head_kind, heads, no, relation, no,
                      jnp.zeros((k, 1, d), head.dtype), jnp.ones((k, 1), bool), F.TEXT,
                      heads + (F.TAIL - F.HEAD), yes)
  return l2_normalize(fused["e2e_b"])


def text_head_queries(module, heads: Array, relations: Array, pad_id: int) -> Array:
  """Tail queries of text heads: ``heads``, ``relations`` [K, entity_len] token ids."""
  z, seq = module.embed_texts(jnp.concatenate([heads, relations]), return_tokens=True)
  k = heads.shape[0]
  return _tail_query(module, seq[:k], heads != pad_id, F.TEXT, z[k:])


def image_head_queries(module, images: Array, relations: Array, image_pool: int) -> Array:
  """Tail queries of image heads: normalised ``images`` [K, H, W, 3], ``relations``
  [K, entity_len] token ids."""
  _, seq = module.embed_images(images, return_tokens=True)
  seq = kc_step.pool_grid(seq, image_pool)
  return _tail_query(module, seq, jnp.ones(seq.shape[:2], bool), F.IMAGE,
                     module.embed_texts(relations))


class TripletQueryModel(api.Model):
  """``api.Model`` with `vlkg.evaluators.encoder.KGQueryEncoder.encode_kg_queries`
  through Knowledge-CLIP's fusion encoder (the module docstring)."""

  def __init__(self, module, params, tokenizer, image_size: int, batch_size: int, *,
               entity_len: int, image_pool: int):
    super().__init__(module, params, tokenizer, image_size, batch_size)
    self.entity_len = entity_len
    pad_id = tokenizer.pad_id
    self._text_queries = jax.jit(lambda p, h, r: module.apply(
        {"params": p}, h, r, pad_id, method=text_head_queries))
    self._image_queries = jax.jit(lambda p, x, r: module.apply(
        {"params": p}, normalize_images(x), r, image_pool, method=image_head_queries))

  def _ids(self, texts: Sequence[str]) -> np.ndarray:
    return kg_table.text_ids(list(texts), self.tokenizer, self.entity_len)

  def encode_kg_queries(self, relations: Sequence[str], *,
                        texts: Sequence[str] | None = None,
                        images: np.ndarray | None = None) -> np.ndarray:
    if (texts is None) == (images is None):
      raise ValueError("encode_kg_queries takes head texts or head images, not both")
    n = len(texts) if images is None else len(images)
    if len(relations) != n:
      raise ValueError(f"encode_kg_queries: {n} heads but {len(relations)} relations")
    if images is None:
      return self._batched(self._text_queries, self._ids(texts), self._ids(relations))
    return self._batched(self._image_queries, self._images(images),
                         self._ids(relations))

