"""REAVL's model: CLIP's towers, a retrieval query, and a knowledge-augmented fusion
encoder whose image and text tokens cross-attend to retrieved knowledge items
through a per-item gate.

Rao et al., "Retrieval-based Knowledge Augmented Vision Language Pre-training",
ACM MM 2023, §3: a knowledge retriever fetches knowledge for the image-text input
and a knowledge-augmented model fuses the data with it; an adaptive scheme keeps
the informative items and ignores the rest. The paper's body gives no layer-level
recipe; the forms below are vlkg's (docs/methods.md, REAVL):

* ``query``: the input's fused embedding, normalise(W [zimg; ztxt]), W initialised
  to [I; I] so that a fine-tune starts from normalise(zimg + ztxt), CLIP's own
  joint direction.
* A retrieved **item** is an entity and its triples, each compressed to one token
  (the entity's index key, each triple's text "h r t" by the text tower; REVEAL,
  Hu et al., CVPR 2023, §3.2 compresses each memory item to a few tokens too),
  plus a learned embedding of the token's slot (entity, triple 1, ...).
* **Gate**: g_j = sigmoid(MLP([q; e_j; q * e_j])) from the query q and the item's
  key e_j (its retrieval score s_j = sum(q * e_j) is a linear function of the
  features, which the first layer computes). In every cross-attention the weight of item
  j's tokens is multiplied by g_j (log g_j added to their logits, beside a learned
  null key with a zero value), so a gate at 0 removes the item exactly and a
  query whose items are all closed reads nothing.
  Through q the task losses reach the retrieval query (REVEAL's attentive
  fusion, §3.4, scales attention by retrieval scores for the same reason).
  ``gate=False`` (the ablation) fixes g = 1.
* **Fusion** (``KnowledgeFusion``): a learned [FUSE] token, the pooled image
  embedding, the image patch tokens (averaged over ``image_pool`` blocks) and the
  text tokens, each with a modality embedding (text tokens also a position), go
  through ``depth`` pre-LN blocks of self-attention, gated cross-attention to the
  item tokens, and an MLP. The [FUSE] output is the multimodal representation.
* **Read-out**: each item's entity token attends once to the fused tokens, so that
  an item has an output of its own (masked entity modelling and link prediction
  read it).
* Heads: ``itm`` (match / no match, at [FUSE], plus the towers' cosine times a
  learned scale on the match logit: without it the fresh fusion's matching head
  stayed at the majority class for 600 steps on the world), ``mlm`` (tied to the text tower's
  token embeddings), ``mem`` and ``lp`` (an entity embedding, compared with the
  index keys).

``REAVLModel`` keeps the two towers' parameter names, so CLIP checkpoints load into
it (the new modules are under ``reavl/``) and ``vlkg.api`` serves its towers.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlkg.models import attention, layers
from vlkg.models.two_towers import TwoTowers, l2_normalize

Array = jax.Array
# An item token's role (``item_type``): an entity, a triple, a triple hidden for link
# prediction whose item is its head (outgoing) or its tail (incoming), an entity
# hidden for masked entity modelling.
ENTITY, TRIPLE, MASKED_OUT, MASKED_IN, MASKED_ENTITY = range(5)
ITEM_TYPES = 5


def _stacked_identity(key, shape, dtype=jnp.float32):
  """[2D, D] kernel [I; I]: W [a; b] = a + b at initialisation."""
  del key
  d = shape[1]
  return jnp.concatenate([jnp.eye(d), jnp.eye(d)]).astype(dtype)


class CrossAttention(nn.Module):
  """Queries x attend to item tokens z, each token's weight multiplied by its gate.

  The gate enters as log g added to the token's logit, so softmax weights are
  proportional to g * exp(logit): g = 0 removes the token exactly, and the other
  tokens share its weight. A learned null key with a zero value (a sink) is always
  there, so that a query can read nothing: with every gate 0 (or no valid item)
  the output is 0.
  """

  heads: int
  out_std: float
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: Array, z: Array, z_valid: Array, z_gate: Array,
               z_ids: Array | None = None) -> Array:
    """x [B, L, W], z [B, M, W], z_valid [B, M] bool, z_gate [B, M] -> [B, L, W].

    With ``z_ids`` [B, M], z is a table [T, W] of item tokens and row b's tokens
    are z[z_ids[b]]: keys and values are projected once per table row.
    """
    b, l, w = x.shape
    m = z_valid.shape[1]
    dense = lambda n, std, name: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype,
                                          kernel_init=nn.initializers.normal(std),
                                          name=name)
    hd = w // self.heads
    q = dense(w, w**-0.5, "q")(x).reshape(b, l, self.heads, hd)
    kv = dense(2 * w, w**-0.5, "kv")(z)
    kv = (kv if z_ids is None else kv[z_ids]).reshape(b, m, 2, self.heads, hd)
    null = self.param("null_key", nn.initializers.normal(0.02), (self.heads, hd),
                      self.param_dtype).astype(kv.dtype)
    k = jnp.concatenate([jnp.broadcast_to(null, (b, 1, self.heads, hd)), kv[:, :, 0]], 1)
    v = jnp.concatenate([jnp.zeros((b, 1, self.heads, hd), kv.dtype), kv[:, :, 1]], 1)
    gate = z_gate.astype(jnp.float32)
    open_ = z_valid & (gate > 0)
    log_gate = jnp.where(open_, jnp.log(jnp.where(open_, gate, 1.0)),
                         jnp.finfo(jnp.float32).min)
    bias = jnp.concatenate([jnp.zeros((b, 1)), log_gate], 1)[:, None, None]
    mask = jnp.concatenate([jnp.ones((b, 1), bool), open_], 1)
    out = attention.dot_product_attention(q, k, v, layers.broadcast_mask(mask), bias,
                                          self.attention)
    return dense(w, self.out_std, "out")(out.reshape(b, l, w))


class KnowledgeFusion(nn.Module):
  """``depth`` blocks: self-attention over x, gated cross-attention to the items,
  MLP; pre-LN with the towers' blocks' inits.

  The items z are each row's tokens [B, M, W], or, with ``z_ids`` [B, M], a table
  [T, W] of tokens, row b's being z[z_ids[b]] (a batch's items share their
  entities, so a table of the distinct tokens is normalised and projected once).

  ``full_rows`` R: the rows after the first R need only their first position's
  output (a hard negative's [FUSE]), so their last block computes that position
  alone (its self-attention still reads every position). The outputs are then
  ``(x [R, L, W], first [B, W])``; without it, ``(x [B, L, W], first [B, W])``.
  The values are those of the whole computation: nothing after the last block
  reads the other positions.
  """

  depth: int
  heads: int
  mlp_ratio: float = 4.0
  act: str = "gelu"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: Array, x_valid: Array, z: Array, z_ids: Array | None,
               z_valid: Array, z_gate: Array,
               full_rows: int | None = None) -> tuple[Array, Array]:
    b, _, w = x.shape
    r = b if full_rows is None else min(full_rows, b)
    std = w**-0.5 * (2 * self.depth) ** -0.5
    ln = lambda name: layers.layer_norm(self.dtype, self.param_dtype, name)
    z = ln("ln_items")(z)
    # What each row reads its items through: its ids into the table, or its tokens.
    per_row = z if z_ids is None else z_ids
    mask = layers.broadcast_mask(x_valid)

    def block(i):
      """Block i's modules, made once (its calls share them), as a function."""
      attend = layers.MultiHeadAttention(self.heads, std, self.dtype, self.param_dtype,
                                         self.attention, name=f"self_{i}")
      cross = CrossAttention(self.heads, std, self.dtype, self.param_dtype,
                             self.attention, name=f"cross_{i}")
      mlp = layers.MlpBlock(int(w * self.mlp_ratio), self.act, std, self.dtype,
                            self.param_dtype, name=f"mlp_{i}")
      ln_self, ln_cross, ln_mlp = ln(f"ln_self_{i}"), ln(f"ln_cross_{i}"), ln(f"ln_mlp_{i}")

      def apply(x, mask, items, z_valid, z_gate, query_len=None):
        queries = x if query_len is None else x[:, :query_len]
        x = queries + attend(ln_self(x), mask, query_len=query_len)
        if z_ids is None:
          x = x + cross(ln_cross(x), items, z_valid, z_gate)
        else:
          x = x + cross(ln_cross(x), z, z_valid, z_gate, items)
        return x + mlp(ln_mlp(x))

      return apply

    for i in range(self.depth - 1):
      x = block(i)(x, mask, per_row, z_valid, z_gate)
    last, final = block(self.depth - 1), ln("ln_final")
    if r == b:
      x = final(last(x, mask, per_row, z_valid, z_gate))
      return x, x[:, 0]
    rows = lambda a: (a[:r], a[r:])
    (x, x_rest), (mask, mask_rest) = rows(x), rows(mask)
    (items, items_rest), (z_valid, z_valid_rest), (z_gate, z_gate_rest) = (
        rows(per_row), rows(z_valid), rows(z_gate))
    x = final(last(x, mask, items, z_valid, z_gate))
    rest = final(last(x_rest, mask_rest, items_rest, z_valid_rest, z_gate_rest,
                      query_len=1))
    return x, jnp.concatenate([x[:, 0], rest[:, 0]])


class REAVLModel(TwoTowers):
  """``TwoTowers`` plus REAVL's query, gate, fusion, read-out and heads (``reavl/``).

  Attributes:
    fusion_depth, fusion_heads, fusion_mlp_ratio: the fusion encoder's.
    item_tokens: tokens per retrieved item (the entity and item_tokens - 1 triples).
    text_len: the longest text the fusion takes (its position embeddings).
    gate: the per-item gate; False fixes it at 1 (the ablation).
    gate_bias: the gate's initial logit bias (2: sigmoid 0.88, items start open).
    itm_tower_score: the towers' cosine (scaled) joins the match logit.
  """

  fusion_depth: int = 2
  fusion_heads: int = 4
  fusion_mlp_ratio: float = 4.0
  item_tokens: int = 4
  text_len: int = 32
  gate: bool = True
  gate_bias: float = 2.0
  itm_tower_score: bool = True

  def setup(self):
    super().setup()
    self.reavl = _REAVLModules(
        embed_dim=self.embed_dim, text_width=self.text["width"],
        vocab_size=self.text["vocab_size"],
        depth=self.fusion_depth, heads=self.fusion_heads, mlp_ratio=self.fusion_mlp_ratio,
        act=dict(self.text).get("act", "gelu"), item_tokens=self.item_tokens,
        text_len=self.text_len, gate_bias=self.gate_bias, dtype=self.dtype,
        param_dtype=self.param_dtype, attention=self.attention)

  def query(self, zimg: Array, ztxt: Array) -> Array:
    """[B, D] normalised retrieval queries of (image, text) embeddings."""
    return self.reavl.query(zimg, ztxt)

  def gates(self, q: Array, keys: Array) -> Array:
    """[B, k] gates of the items with index keys [B, k, D]."""
    if not self.gate:
      return jnp.ones(keys.shape[:2], jnp.float32)
    return jax.nn.sigmoid(self.reavl.gate_logits(q, keys))

  def gate_logits(self, q: Array, keys: Array) -> Array:
    """[B, k] the gates' logits (``gates`` is their sigmoid); the gate must be on."""
    if not self.gate:
      raise ValueError("gate_logits of a model without the gate (reavl.gate=False)")
    return self.reavl.gate_logits(q, keys)

  def fuse(self, zimg, img_tokens, txt_tokens, txt_valid, txt_masked, items, item_types,
           item_valid, gates, readout: bool = False,
           readout_rows: int | None = None, item_ids=None) -> dict[str, Array]:
    """See ``_REAVLModules.fuse``."""
    return self.reavl.fuse(zimg, img_tokens, txt_tokens, txt_valid, txt_masked, items,
                           item_types, item_valid, gates, readout, readout_rows, item_ids)

  def item_inputs(self, features, slots, types):
    """See ``_REAVLModules.item_inputs``."""
    return self.reavl.item_inputs(features, slots, types)

  def itm_logits(self, fused: Array, pair_similarity: Array) -> Array:
    """[B, 2] no-match / match logits of fused pairs whose towers' cosine
    similarity is ``pair_similarity`` [B]: the head on [FUSE], plus (with
    ``itm_tower_score``) the cosine times a learned scale on the match logit, so
    that matching starts from the towers' score and the fusion learns what the
    retrieved knowledge adds."""
    logits = self.reavl.itm(fused).astype(jnp.float32)
    if not self.itm_tower_score:
      return logits
    score = jnp.exp(self.reavl.itm_scale) * pair_similarity.astype(jnp.float32)
    return logits.at[:, 1].add(score)

  def mlm_logits(self, text_out: Array) -> Array:
    """[..., V] token logits, tied to the text tower's input embeddings."""
    h = self.reavl.mlm(text_out)
    return (self.txt.token_embedding.attend(h) + self.reavl.mlm_bias).astype(jnp.float32)

  def entity_prediction(self, item_out: Array) -> Array:
    """[..., D] normalised prediction of a masked item's entity."""
    return l2_normalize(self.reavl.mem(item_out))

  def link_prediction(self, item_out: Array, relation: Array) -> Array:
    """[..., D] normalised prediction of a triple's other end from the item's output
    and the relation's embedding."""
    return l2_normalize(self.reavl.lp(jnp.concatenate([item_out, relation], axis=-1)))

  def item_type_embedding(self, types: Array) -> Array:
    return self.reavl.item_type[types]

  def __call__(self, images, texts, return_tokens: bool = False, patch_mask=None,
               token_mask=None):
    """``TwoTowers.__call__``; also runs the new modules on dummies, so that
    ``init(rng, images, texts)`` creates their parameters."""
    out = super().__call__(images, texts, return_tokens, patch_mask, token_mask)
    if self.is_initializing():
      d, m, l = self.embed_dim, self.item_tokens, 2
      z = jnp.zeros((1, d))
      q = self.query(z, z)
      g = jax.nn.sigmoid(self.reavl.gate_logits(q, jnp.zeros((1, 1, d))))
      fused = self.fuse(z, jnp.zeros((1, 4, d)), jnp.zeros((1, l, d)),
                        jnp.ones((1, l), bool), jnp.zeros((1, l), bool),
                        jnp.zeros((1, 1, m, d)), jnp.zeros((1, 1, m), jnp.int32),
                        jnp.ones((1, 1, m), bool), g, readout=True)
      self.itm_logits(fused["fused"], jnp.zeros((1,)))
      self.mlm_logits(fused["text"])
      self.entity_prediction(fused["items"])
      self.link_prediction(fused["items"], fused["items"])
    return out


class _REAVLModules(nn.Module):
  """The new parameters, in one scope (``reavl/``)."""

  embed_dim: int
  text_width: int
  vocab_size: int
  depth: int
  heads: int
  mlp_ratio: float
  act: str
  item_tokens: int
  text_len: int
  gate_bias: float
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  attention: str = "xla"

  def setup(self):
    d, pd = self.embed_dim, self.param_dtype
    dense = lambda n, **kw: nn.Dense(n, dtype=self.dtype, param_dtype=pd, **kw)
    self.query_proj = dense(d, kernel_init=_stacked_identity, use_bias=False)
    self.gate_hidden = dense(d)
    self.gate_out = dense(1, bias_init=nn.initializers.constant(self.gate_bias))
    normal = nn.initializers.normal(0.02)
    self.fuse_token = self.param("fuse_token", normal, (d,), pd)
    self.modality = self.param("modality_embedding", normal, (3, d), pd)
    self.text_position = self.param("text_position", normal, (self.text_len, d), pd)
    self.text_mask = self.param("text_mask", normal, (d,), pd)
    self.item_slot = self.param("item_slot", normal, (self.item_tokens, d), pd)
    self.item_type = self.param("item_type", normal, (ITEM_TYPES, d), pd)
    self.ln_in = layers.layer_norm(self.dtype, pd)
    self.fusion = KnowledgeFusion(self.depth, self.heads, self.mlp_ratio, self.act,
                                  self.dtype, pd, self.attention)
    self.ln_readout = layers.layer_norm(self.dtype, pd)
    self.readout = CrossAttention(self.heads, d**-0.5, self.dtype, pd, self.attention)
    self.itm = dense(2)
    # log of the tower score's scale on the match logit (10 at init, about CLIP's
    # 1/temperature early in training).
    self.itm_scale = self.param("itm_scale", nn.initializers.constant(np.log(10.0)),
                                (), jnp.float32)
    self.mlm = nn.Sequential([dense(self.text_width), layers.exact_gelu,
                              layers.layer_norm(self.dtype, pd)])
    self.mlm_bias = self.param("mlm_bias", nn.initializers.zeros, (self.vocab_size,), pd)
    self.mem = dense(d)
    self.lp = dense(d)

  def query(self, zimg, ztxt):
    return l2_normalize(self.query_proj(jnp.concatenate([zimg, ztxt], axis=-1)))

  def gate_logits(self, q, keys):
    q = jnp.broadcast_to(q[:, None], keys.shape)
    features = jnp.concatenate([q, keys, q * keys], axis=-1)
    h = layers.exact_gelu(self.gate_hidden(features))
    return self.gate_out(h)[..., 0].astype(jnp.float32)

  def item_inputs(self, features, slots, types):
    """Item token inputs: ``features`` [..., D] plus the embeddings of their slots
    (0 the entity, 1.. its triples) and types (``ENTITY``, ...)."""
    return features + self.item_slot[slots] + self.item_type[types]

  def fuse(self, zimg, img_tokens, txt_tokens, txt_valid, txt_masked, items, item_types,
           item_valid, gates, readout, readout_rows=None, item_ids=None):
    """The fused representation of a batch with its retrieved items.

    Args:
      zimg: [B, D] pooled image embeddings; img_tokens: [B, P, D] patch tokens.
      txt_tokens: [B, L, D] text tokens; txt_valid: [B, L] real tokens;
        txt_masked: [B, L] tokens hidden for masked language modelling (their
        input becomes the mask embedding).
      items: [B, k, m, D] item token features; item_types: [B, k, m] int
        (``ENTITY``, ``TRIPLE``, ...); item_valid: [B, k, m] bool.
      gates: [B, k] the items' gates.
      readout: also give each item's output.
      readout_rows: only the first ``readout_rows`` rows' items and text outputs
        (all rows when None); the other rows give [FUSE] alone, and their last
        fusion block computes nothing else. The training step reads the items and
        masked tokens of its positive pairs, and only the match of its hard
        negatives.
      item_ids: [B, k, m] int: instead, ``items`` is a table [T, D] of item
        tokens (``item_inputs``, slot and type embeddings added) and item j's
        token i of row b is items[item_ids[b, j, i]]; ``item_types`` is unused.

    Returns:
      ``fused`` [B, D] (the [FUSE] output), ``text`` [R, L, D] (the text
      positions' outputs) and, with ``readout``, ``items`` [R, k, D] (R =
      ``readout_rows`` or B).
    """
    b, l, d = txt_tokens.shape
    k, m = item_valid.shape[1:3]
    if l > self.text_len:
      raise ValueError(f"a text of {l} tokens is longer than the fusion's {self.text_len}")
    txt = jnp.where(txt_masked[..., None], self.text_mask, txt_tokens)
    txt = txt + self.modality[2] + self.text_position[:l]
    img = jnp.concatenate([zimg[:, None], img_tokens], axis=1) + self.modality[1]
    fuse = jnp.broadcast_to(self.fuse_token + self.modality[0], (b, 1, d))
    x = jnp.concatenate([fuse, img.astype(txt.dtype), txt], axis=1)
    valid = jnp.concatenate([jnp.ones((b, 1 + img.shape[1]), bool), txt_valid], axis=1)
    x = self.ln_in(x.astype(self.dtype))
    if item_ids is None:
      z = self.item_inputs(items, jnp.arange(m), item_types)
      z_ids, queries = None, z[..., 0, :]
      z = z.reshape(b, k * m, d)
    else:
      z, z_ids, queries = items, item_ids.reshape(b, k * m), items[item_ids[:, :, 0]]
    z_gate = jnp.repeat(gates, m, axis=1)
    r = b if readout_rows is None else readout_rows
    x, first = self.fusion(x, valid, z.astype(self.dtype), z_ids,
                           item_valid.reshape(b, k * m), z_gate, full_rows=r)
    out = {"fused": first.astype(jnp.float32),
           "text": x[:, -l:].astype(jnp.float32)}
    if readout:
      # Each item's entity token (with its slot and type) reads the fused tokens.
      queries = queries[:r].astype(self.dtype)
      ones = jnp.ones((r, valid.shape[1]), jnp.float32)
      seen = self.readout(self.ln_readout(queries), x[:r], valid[:r], ones)
      out["items"] = (queries + seen).astype(jnp.float32)
    return out

