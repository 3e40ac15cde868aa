"""REAVL's evaluation encoder: knowledge-augmented answers, entity links, retrieval.

Rao et al., "Retrieval-based Knowledge Augmented Vision Language Pre-training",
ACM MM 2023, §4 evaluates on knowledge-based VQA (OK-VQA, A-OKVQA) and multimodal
entity linking (WikiDiverse). The encoder keeps the two towers for
``encode_images`` / ``encode_texts`` (retrieval and the world's suites score them
as every method's) and adds the optional capabilities of
``vlkg.evaluators.encoder``:

* ``answer_scores(images, questions, answers)``: knowledge-augmented closed-answer
  VQA. The image and the question retrieve k items (the query is the model's
  fused query of image and question); each answer is scored by the matching head
  on (image, "question answer", the items): the logit of "match" minus that of
  "no match". With ``reavl.eval_distractors`` = p, a share p of each input's
  items is replaced by uniformly drawn entities (the gate's claim): seeded random
  slots (``reavl.eval_distractor_slots="random"``) or the round(p k) lowest-ranked
  ones (``"lowest"``, which keeps the best items); ``reavl.eval_distractor_fill=
  "empty"`` empties those slots instead (no item, gate 0), which tells the
  knowledge that the replaced items held from the noise that replaces them.
* ``question_features(images, questions, fit=False)``: the fusion's [FUSE] output
  for (image, question) with its retrieved items, beside the two towers'
  embeddings: the features of the VQA head (``vlkg.evaluators.vqa_head``).
  Distractors apply to the scored features only (``fit=False``): the head is
  fitted on clean ones, as a model fine-tuned on clean retrieval then meets
  noisy retrieval.
* entity linking: with ``reavl.eval_link_scorer="towers"`` (the default) the
  encoder has no scorer of its own, and a mention's candidates are scored as
  every dual encoder's are (``vlkg.evaluators.entity_linking``). With ``"retriever"``
  (`RetrieverLinking`), linking is retrieval: ``link_scores(images, contexts,
  mentions, candidates)`` embeds each candidate's text ("name: description") as
  the index embeds an entity's name and gloss, and scores it by its inner
  product with the retriever's query of the image and "mention context". That
  query is trained to find all of a pair's entities at once, not the one a
  mention names, and linked worse than the towers (docs/results.md, REAVL).
* ``retrieve(images, token_ids)`` and ``gold_rows(hashes)``: the indices of the
  top-n entities and a caption's gold entities in the index
  (``vlkg.evaluators.knowledge_recall`` reads them: ``reavl/recall@n``).

The index's embeddings are computed from the current params once per params (the
trainer sets ``params`` before each evaluation).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vlkg import api
from vlkg.methods import reavl_index as index_lib
from vlkg.methods import reavl_step
from vlkg.methods.knowledge_clip_step import pool_grid
from vlkg.models import retriever
from vlkg.preprocess import normalize_images

_SEED = 8713


def _items(module, memory, c, q, idx):
  """Items of retrieved entities ``idx`` [N, k] (no masking); with k = 0 one empty
  item, gated 0, as in training."""
  t = c["triple_valid"].shape[-1]
  if idx.shape[1] == 0:
    n, d = q.shape
    return (jnp.zeros((n, 1, 1 + t, d)), jnp.zeros((n, 1, 1 + t), jnp.int32),
            jnp.zeros((n, 1, 1 + t), bool), jnp.zeros((n, 1)))
  item_keys = memory["keys"][idx]
  items = jnp.concatenate([item_keys[:, :, None], memory["triples"][idx]], axis=2)
  valid = jnp.concatenate([c["valid"][idx][..., None], c["triple_valid"][idx]], axis=2)
  types = jnp.broadcast_to(jnp.array([reavl_step.ENTITY] + [reavl_step.TRIPLE] * t),
                           valid.shape)
  gates = module.gates(q, item_keys)
  return items, types, valid, gates


def _query_fn(module, images, ids):
  return module.query(module.embed_images(normalize_images(images)),
                      module.embed_texts(ids))


# A slot of ``distract`` that keeps its retrieved item, and one that is emptied.
KEEP, EMPTY = -1, -2


def _retrieved_items(module, zimg, zq, memory, c, distract, k):
  """The items of the top-k entities for the query of (image, question), with the
  distractors ``distract`` [N, k] (an entity, `KEEP` or `EMPTY`) in their slots."""
  q = module.query(zimg, zq)
  idx = jnp.zeros((q.shape[0], 0), jnp.int32)
  if not k:
    return _items(module, memory, c, q, idx)
  _, idx = retriever.search(q, memory["keys"], k, valid=c["valid"])
  items, types, valid, gates = _items(module, memory, c, q,
                                      jnp.where(distract >= 0, distract, idx))
  kept = distract != EMPTY
  return items, types, valid & kept[..., None], jnp.where(kept, gates, 0.0)


def _question_fn(module, images, q_ids, memory, c, distract, *, k, pad_id, pool):
  """[N, 3D] features of (image, question): the fusion's [FUSE] output with the
  retrieved items, and the two towers' embeddings."""
  zimg, img_tok = module.embed_images(images, return_tokens=True)
  zq, txt_tok = module.embed_texts(q_ids, return_tokens=True)
  items, types, valid, gates = _retrieved_items(module, zimg, zq, memory, c, distract, k)
  fused = module.fuse(zimg, pool_grid(img_tok, pool), txt_tok, q_ids != pad_id,
                      jnp.zeros(q_ids.shape, bool), items, types, valid, gates)
  return jnp.concatenate([fused["fused"], zimg, zq], -1).astype(jnp.float32)


def _answer_fn(module, images, q_ids, qa_ids, memory, c, distract, *, k, pad_id, pool):
  """[N, A] answer scores (see the module docstring)."""
  n, a, length = qa_ids.shape
  zimg, img_tok = module.embed_images(images, return_tokens=True)
  img_tok = pool_grid(img_tok, pool)
  items, types, valid, gates = _retrieved_items(module, zimg, module.embed_texts(q_ids),
                                                memory, c, distract, k)
  zqa, txt_tok = module.embed_texts(qa_ids.reshape(n * a, length), return_tokens=True)
  rep = lambda x: jnp.repeat(x, a, axis=0)
  fused = module.fuse(rep(zimg), rep(img_tok), txt_tok,
                      qa_ids.reshape(n * a, length) != pad_id,
                      jnp.zeros((n * a, length), bool), rep(items), rep(types),
                      rep(valid), rep(gates))
  logits = module.itm_logits(fused["fused"], jnp.sum(rep(zimg) * zqa, -1))
  return (logits[:, 1] - logits[:, 0]).reshape(n, a)


def _padded(rows: np.ndarray, size: int, fill: int = 0) -> np.ndarray:
  """``rows`` with ``fill`` rows appended up to ``size``: one compiled batch shape."""
  pad = size - len(rows)
  if not pad:
    return rows
  return np.concatenate([rows, np.full((pad,) + rows.shape[1:], fill, rows.dtype)])


class REAVLEncoder(api.Model):
  """``api.Model`` with REAVL's index and fusion (see the module docstring)."""

  def __init__(self, module, params, tokenizer, image_size: int, batch_size: int,
               index: dict, *, k: int, pad_id: int, image_pool: int,
               distractors: float = 0.0, distractor_slots: str = "random",
               distractor_fill: str = "random"):
    self._memory = None
    super().__init__(module, params, tokenizer, image_size, batch_size)
    self.index = jax.device_put(index)
    self.k, self.distractors = k, distractors
    self.distractor_slots, self.distractor_fill = distractor_slots, distractor_fill
    self._compute = jax.jit(lambda p, c: module.apply(
        {"params": p}, c, 0, method=index_lib.compute_memory))
    self._answer, self._question = (jax.jit(
        lambda p, *args, fn=fn: module.apply({"params": p}, *args, k=k, pad_id=pad_id,
                                             pool=image_pool, method=fn))
        for fn in (_answer_fn, _question_fn))
    self._query = jax.jit(lambda p, x, t: module.apply({"params": p}, x, t,
                                                       method=_query_fn))
    self._search = jax.jit(lambda q, keys, valid, n: retriever.search(q, keys, n,
                                                                      valid=valid),
                           static_argnums=3)

  @property
  def params(self):
    return self._params

  @params.setter
  def params(self, value):
    self._params, self._memory = value, None

  def memory(self) -> dict:
    """The index's embeddings under the current params (computed once per params)."""
    if self._memory is None:
      self._memory = self._compute(self._params, self.index)
    return self._memory

  def _queries(self, images, texts: Sequence[str]) -> np.ndarray:
    ids = self.tokenizer.encode(list(texts))
    return self._batched(self._query, self._images(images), ids)

  def _distractors(self, n: int) -> np.ndarray:
    """[n, k]: in a share of the slots (seeded random ones, or the lowest-ranked)
    random entities, or `EMPTY`; `KEEP` elsewhere."""
    rng = np.random.default_rng(_SEED)
    valid = np.flatnonzero(np.asarray(self.index["valid"]))
    # Drawn whatever the fill, so that "empty" takes the very slots that "random"
    # fills: the two fills' scores are paired.
    out = rng.choice(valid, size=(n, self.k))
    if self.distractor_slots == "lowest":
      replaced = np.arange(self.k) >= self.k - round(self.distractors * self.k)
      replaced = np.broadcast_to(replaced, (n, self.k))
    else:
      replaced = rng.random((n, self.k)) < self.distractors
    fill = out if self.distractor_fill == "random" else EMPTY
    return np.where(replaced, fill, KEEP).astype(np.int32)

  def answer_scores(self, images, questions: Sequence[str],
                    answers: Sequence[str]) -> np.ndarray:
    images = self._images(images)
    answers = list(answers)
    if len(images) != len(questions):
      raise ValueError(f"{len(images)} images for {len(questions)} questions")
    memory = self.memory()
    distract = self._distractors(len(images))
    chunk = max(1, min(len(images), self.batch_size // max(len(answers), 1)))
    out = []
    for s in range(0, len(images), chunk):
      qs = list(questions[s:s + chunk])
      pad = chunk - len(qs)
      q_ids = self.tokenizer.encode(qs + [""] * pad)
      qa = self.tokenizer.encode([f"{q} {a}" for q in qs + [""] * pad for a in answers])
      img = _padded(images[s:s + chunk], chunk)
      dis = _padded(distract[s:s + chunk], chunk, KEEP)
      scores = self._answer(self._params, normalize_images(img), q_ids,
                            qa.reshape(chunk, len(answers), -1), memory, self.index, dis)
      out.append(np.asarray(scores)[:chunk - pad])
    return np.concatenate(out)

  def question_features(self, images, questions: Sequence[str], *,
                        fit: bool = False) -> np.ndarray:
    images = self._images(images)
    if len(images) != len(questions):
      raise ValueError(f"{len(images)} images for {len(questions)} questions")
    memory = self.memory()
    distract = self._distractors(len(images))
    if fit:  # the head fits on clean items; distractors are a test-time change
      distract = np.full_like(distract, KEEP)
    out = []
    b = self.batch_size
    for s in range(0, len(images), b):
      n = len(images[s:s + b])
      ids = self.tokenizer.encode(list(questions[s:s + n]) + [""] * (b - n))
      img, dis = _padded(images[s:s + b], b), _padded(distract[s:s + b], b, KEEP)
      out.append(np.asarray(self._question(self._params, normalize_images(img), ids,
                                           memory, self.index, dis))[:n])
    return np.concatenate(out)

  def retrieve(self, images, token_ids: np.ndarray, n: int) -> np.ndarray:
    """[N, n] the indices of the top-n entities for (image, caption ids)."""
    q = self._batched(self._query, self._images(images), np.asarray(token_ids, np.int32))
    memory = self.memory()
    return np.asarray(self._search(q, memory["keys"], self.index["valid"], n)[1])

  def gold_rows(self, hashes: np.ndarray) -> np.ndarray:
    """Index rows of ``reavl_gold`` hashes, -1 where none."""
    return np.asarray(index_lib.gold_rows(jnp.asarray(hashes), self.index))


class RetrieverLinking(REAVLEncoder):
  """REAVL's encoder, linking entities through the retriever's query."""

  def link_scores(self, images, contexts: Sequence[str], mentions: Sequence[str],
                  candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
    q = self._queries(images, [f"{m} {c}" for m, c in zip(mentions, contexts)])
    flat = [text for group in candidates for text in group]
    z = self.encode_texts(flat) if flat else np.zeros((0, q.shape[1]), np.float32)
    out, start = [], 0
    for i, group in enumerate(candidates):
      out.append(z[start:start + len(group)] @ q[i])
      start += len(group)
    return out


def make(module, params, tokenizer, config, *, image_size: int, batch_size: int,
         dataset_dir: str | None, section: dict):
  """The encoder of a REAVL run, or None (the plain towers) without a dataset
  whose knowledge graph makes the index."""
  import os
  from vlkg.data import kg_table
  if tokenizer is None or not dataset_dir or not os.path.exists(
      os.path.join(dataset_dir, kg_table.TABLE)):
    return None
  table = kg_table.read(dataset_dir)
  index = index_lib.constants(table, tokenizer, entity_len=section["entity_len"],
                              item_tokens=section["item_tokens"], pad_multiple=1)
  k = min(section["k"], int(index["valid"].sum()))
  retriever_links = section["eval_link_scorer"] == "retriever"
  encoder = RetrieverLinking if retriever_links else REAVLEncoder
  return encoder(module, params, tokenizer, image_size, batch_size, index,
                 k=k, pad_id=config.model.text.get("pad_id", 0),
                 image_pool=section["fusion_image_pool"],
                 distractors=section["eval_distractors"],
                 distractor_slots=section["eval_distractor_slots"],
                 distractor_fill=section["eval_distractor_fill"])
