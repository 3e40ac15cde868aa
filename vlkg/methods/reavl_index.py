"""REAVL's knowledge index: entities of the dataset's knowledge graph, their triples,
each caption's gold entities, and the memory of embeddings the step searches.

Rao et al., "Retrieval-based Knowledge Augmented Vision Language Pre-training",
ACM MM 2023, §3 "Knowledge Retriever": an index of knowledge-graph entity
embeddings. Here:

* **Entities** are the text entities of the dataset's triplet table
  (``vlkg.data.kg_table``): an entity is its name (with its gloss, where the graph
  gives one in the name) and its image where it has one: the image entity linked
  to it by a training triplet, ``kg_table.IMAGE_OF`` first (VisualSem's images of a
  node), else the first other (the world's concept images: a red object "has
  color" red). Its key is normalise(normalise(text) + normalise(image)), or the
  text's alone.
* **Triples**: an item carries its entity's first ``item_tokens - 1`` text
  neighbours along training triplets (the table's neighbourhoods), each written
  "h r t" and encoded by the text tower.
* **Gold entities** of a caption: the words of its scene graph (objects,
  attributes, predicates) that name an entity. The record holds them as hashes
  (``reavl_gold``, made at prepare time by ``gold_field``), so that prepare needs
  no table; the step maps a hash to its entity with a sorted lookup (a word that
  names no entity drops out). On the world the scene graph is the caption's own;
  on a real corpus it is the parser's, matched by exact (lower-cased) string.
* **Concepts** of an entity: the text entities one training triplet away, in
  either direction (``concepts``; the world's "square" -> "four corners",
  "polygon", "quadrate"). With ``reavl.gold_hops=1`` a caption's gold set adds
  its gold entities' concepts, so the retriever also learns the knowledge a
  caption does not name.
* **Memory**: the keys, triple and relation embeddings, computed from the params
  (``compute_memory``) and refreshed inside the training step every
  ``refresh_every`` steps (``refresh``, under ``lax.cond``: no host round trip;
  ``vlkg.train``'s loss memory). The index is padded to a multiple of the
  devices, so that it splits over them (``vlkg.models.retriever``).
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

from vlkg import preprocess
from vlkg.data import kg_table
from vlkg.graphs import fields as fields_lib
from vlkg.models import retriever
from vlkg.models.two_towers import l2_normalize

Array = jax.Array
GOLD = "reavl_gold"


def entity_hash(text: str) -> int:
  """A non-negative int32 hash of a lower-cased, stripped name."""
  return zlib.crc32(" ".join(text.lower().split()).encode()) & 0x7FFFFFFF


def gold_names(graph) -> list[str]:
  """The words of a scene graph that may name entities, each once, in order."""
  out = list(graph.objects) + [a for _, a in graph.attributes] + [
      p for _, p, _ in graph.relations]
  return list(dict.fromkeys(out))


def _gold(caption: fields_lib.Caption, rng, *, max_gold: int) -> dict:
  del rng
  names = gold_names(caption.graph)
  if len(names) > max_gold:
    caption.stats["reavl_gold_cut"] += 1
  hashes = [entity_hash(n) for n in names[:max_gold]]
  return {GOLD: np.asarray(hashes + [-1] * (max_gold - len(hashes)), np.int32)}


def gold_field(max_gold: int) -> fields_lib.Field:
  """``reavl_gold`` [max_gold] int32: the hashes of the caption's scene-graph words
  (``gold_names``), -1 padding."""
  import functools
  return fields_lib.Field((fields_lib.Feature(GOLD, "int32", (max_gold,)),),
                          functools.partial(_gold, max_gold=max_gold),
                          reads={"max_gold": max_gold})


def _entity_images(table: kg_table.Table, rows: np.ndarray) -> np.ndarray:
  """[len(rows)] the image (row of ``table.images``) of each text entity, -1 none."""
  train = table.triplets[~table.heldout]
  found: dict[int, tuple[int, int]] = {}
  image_of = list(table.relations).index(kg_table.IMAGE_OF) if (
      kg_table.IMAGE_OF in set(table.relations)) else -1
  for h, r, t in train:
    if table.is_image[h] and not table.is_image[t]:
      rank = 0 if r == image_of else 1
      if t not in found or rank < found[t][0]:
        found[t] = (rank, int(table.entity_image[h]))
  return np.array([found.get(int(e), (0, -1))[1] for e in rows], np.int32)


def _concepts(table: kg_table.Table, row_of: np.ndarray, n: int, width: int) -> np.ndarray:
  """[n, H] the rows of the text entities one training triplet away from each text
  entity (either direction; H <= ``width``, the first by row), -1 padding."""
  near = [set() for _ in range(n)]
  for h, _, t in table.triplets[~table.heldout]:
    a, b = row_of[h], row_of[t]
    if a >= 0 and b >= 0 and a != b:
      near[a].add(int(b))
      near[b].add(int(a))
  out = np.full((n, max(1, min(width, max(map(len, near))))), -1, np.int32)
  for i, rows in enumerate(near):
    rows = sorted(rows)[:out.shape[1]]
    out[i, :len(rows)] = rows
  return out


def constants(table: kg_table.Table, tokenizer, *, entity_len: int, item_tokens: int,
              pad_multiple: int, concept_width: int = 32) -> dict[str, np.ndarray]:
  """The index as the step reads it (numpy; the trainer holds it on device).

  Returns:
    ``entity_tokens`` [E, entity_len], ``entity_image`` [E] (row of ``images``,
    -1 none), ``images`` (the entities' images only), ``valid`` [E] (False on padding), ``hash_sorted`` /
    ``hash_row`` (the gold lookup), ``triple_tokens`` [E, T, entity_len],
    ``triple_valid`` [E, T], ``triple_other`` [E, T] (the other end's row),
    ``triple_relation`` [E, T], ``triple_outgoing`` [E, T] (the entity is the
    head), ``relation_tokens`` [R, entity_len], ``concepts`` [E, H] (`_concepts`,
    at most ``concept_width``); E is padded to ``pad_multiple`` and T =
    ``item_tokens`` - 1.

  Raises:
    ValueError: if the table has no text entity, or two names share a hash.
  """
  rows = np.flatnonzero(~table.is_image)
  if not len(rows):
    raise ValueError("REAVL needs a knowledge graph with text entities")
  n = len(rows)
  e = retriever.pad_to(n, pad_multiple)
  row_of = np.full(table.num_entities, -1, np.int64)
  row_of[rows] = np.arange(n)
  names = [str(t) for t in table.entity_text[rows]]
  hashes = np.array([entity_hash(t) for t in names], np.int64)
  by_hash: dict[int, str] = {}
  for h, name in zip(hashes, names):
    other = by_hash.setdefault(int(h), name)
    if " ".join(other.lower().split()) != " ".join(name.lower().split()):
      raise ValueError(f"entities {other!r} and {name!r} share a hash")
  order = np.argsort(hashes, kind="stable")
  pad = lambda x, fill: np.concatenate(
      [x, np.full((e - n,) + x.shape[1:], fill, x.dtype)])

  t = item_tokens - 1
  nbr = table.neighbours[rows][:, :t]
  types = table.neighbour_types[rows][:, :t]
  r = len(table.relations)
  if nbr.shape[1] < t:  # the table keeps fewer neighbours than asked
    nbr = np.pad(nbr, ((0, 0), (0, t - nbr.shape[1])), constant_values=-1)
    types = np.pad(types, ((0, 0), (0, t - types.shape[1])))
  outgoing = types < r
  relation = np.where(outgoing, types, types - r)
  texts = []
  for i, name in enumerate(names):
    for j in range(t):
      if nbr[i, j] < 0:
        texts.append("")
        continue
      other, rel = str(table.entity_text[nbr[i, j]]), str(table.relations[relation[i, j]])
      texts.append(f"{name} {rel} {other}" if outgoing[i, j] else f"{other} {rel} {name}")
  triple_tokens = kg_table.text_ids(texts, tokenizer, entity_len).reshape(n, t, entity_len)
  other = np.where(nbr >= 0, row_of[np.maximum(nbr, 0)], -1)
  image = _entity_images(table, rows)
  used, position = np.unique(image[image >= 0], return_inverse=True)
  image[image >= 0] = position
  return {
      "entity_tokens": pad(kg_table.text_ids(names, tokenizer, entity_len), 0),
      "entity_image": pad(image, -1),
      "images": table.images[used],
      "valid": pad(np.ones(n, bool), False),
      "hash_sorted": hashes[order].astype(np.int32),
      "hash_row": order.astype(np.int32),
      "triple_tokens": pad(triple_tokens.astype(np.int32), 0),
      "triple_valid": pad(nbr >= 0, False),
      "triple_other": pad(other.astype(np.int32), -1),
      "triple_relation": pad(relation.astype(np.int32), 0),
      "triple_outgoing": pad(outgoing, False),
      "relation_tokens": kg_table.text_ids(list(table.relations), tokenizer, entity_len),
      "concepts": pad(_concepts(table, row_of, n, concept_width), -1),
  }


def gold_rows(hashes: Array, c: dict) -> Array:
  """[B, G] index rows of gold hashes; -1 where a hash names no entity."""
  table = c["hash_sorted"]
  pos = jnp.clip(jnp.searchsorted(table, hashes), 0, table.shape[0] - 1)
  found = (table[pos] == hashes) & (hashes >= 0)
  return jnp.where(found, c["hash_row"][pos], -1)


def init_memory(num_entities: int, triples: int, num_relations: int, dim: int) -> dict:
  """Zeros, refreshed at the first step (``at`` = -1)."""
  return {"keys": jnp.zeros((num_entities, dim), jnp.float32),
          "triples": jnp.zeros((num_entities, triples, dim), jnp.float32),
          "relations": jnp.zeros((num_relations, dim), jnp.float32),
          "at": jnp.full((), -1, jnp.int32)}


def concept_rows(gold: Array, c: dict) -> Array:
  """[B, G * H] the concepts of gold rows [B, G] (``concepts``); -1 padding."""
  near = c["concepts"][jnp.maximum(gold, 0)]
  return jnp.where((gold >= 0)[..., None], near, -1).reshape(gold.shape[0], -1)


def _keys(module, c: dict, text_keys: Array) -> Array:
  """Each entity's key: its text embedding, joined with its image's where it has one."""
  if not c["images"].shape[0]:
    return text_keys
  zi = module.embed_images(preprocess.normalize_images(c["images"]))
  both = l2_normalize(text_keys + zi[jnp.maximum(c["entity_image"], 0)])
  return jnp.where((c["entity_image"] >= 0)[:, None], both, text_keys)


def compute_keys(module, c: dict, text_keys: Array | None = None) -> Array:
  """[E, D] the entities' keys from the towers, gradients flowing (the retriever
  loss's keys with ``reavl.retriever_key_grad``); ``text_keys`` [E, D], the
  entities' text embeddings where the caller computed them (packed)."""
  if text_keys is None:
    text_keys = module.embed_texts(c["entity_tokens"])
  return _keys(module, c, text_keys)


def compute_memory(module, c: dict, step) -> dict:
  """Embeddings of the index from the towers (``model.apply(method=...)``); no
  gradient flows into them."""
  e, t, length = c["triple_tokens"].shape
  texts = jnp.concatenate([c["entity_tokens"], c["triple_tokens"].reshape(e * t, length),
                           c["relation_tokens"]])
  z = module.embed_texts(texts)
  keys = _keys(module, c, z[:e])
  memory = {"keys": keys, "triples": z[e:e + e * t].reshape(e, t, -1),
            "relations": z[e + e * t:], "at": jnp.asarray(step, jnp.int32)}
  return jax.lax.stop_gradient(memory)


def refresh(model, params, memory: dict, step, c: dict, every: int) -> dict:
  """``memory``, recomputed from ``params`` when it is ``every`` steps old or was
  never computed; one branch runs (``lax.cond``)."""
  due = (memory["at"] < 0) | (step - memory["at"] >= every)
  fresh = lambda: model.apply({"params": params}, c, step, method=compute_memory)
  return jax.lax.cond(due, fresh, lambda: memory)
