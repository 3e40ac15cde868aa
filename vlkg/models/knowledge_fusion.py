"""Knowledge-CLIP's model: CLIP's towers, a multi-modal fusion Transformer over
triplets, and a graph transformer over each entity's neighbourhood.

Pan et al., "Contrastive Language-Image Pre-Training with Knowledge Graphs",
NeurIPS 2022, §3.2 "Model architecture": the CLIP image and text encoders encode
the entities of a triplet (h, r, t), keeping their token sequences; the relation,
a few words, is pooled to one token; a multi-modal Transformer encoder "consumes
the concatenated triplet sequence" [h tokens; r; t tokens] and fuses the entities
conditioned on the relation. §3.3's G2E objective propagates entity features over
the knowledge graph with a GNN.

* ``TripletFusion``: each input token gets a modality embedding (text, image) and a
  role embedding (head, relation, tail), then a LayerNorm (tower token outputs and
  pooled embeddings differ in scale), then the pre-LN CLIP blocks
  (``layers.Transformer``) and ``ln_final``. A masked slot (the E2E / E2R target)
  is one zero vector with its role embedding and no modality embedding, as the
  paper masks with a zero vector; its other positions are padding, so neither its
  content nor its length leaks. Heads: ``e2e`` (the masked entity's embedding),
  ``e2r`` (relation logits over ``max_relations``), ``g2e`` (the entity's
  representation that G2E pulls toward the propagated one).
* ``g2e``: ``vlkg.models.graph_transformer.GraphTransformer`` over an entity and its
  text neighbours (a star: edges typed by relation and direction), read at the
  entity.

``KnowledgeCLIPModel`` keeps the two towers' parameter names (``img``, ``txt``,
``logit_scale``, ``logit_bias``), so CLIP checkpoints load into it (the new modules
are ``kfusion`` and ``g2e``) and ``vlkg.api`` serves it unchanged.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlkg.models import layers
from vlkg.models.graph_transformer import GraphTransformer
from vlkg.models.two_towers import TwoTowers

Array = jax.Array

TEXT, IMAGE = 0, 1
HEAD, RELATION, TAIL = 0, 1, 2


class TripletFusion(nn.Module):
  """The multi-modal fusion encoder over [slot a; relation; slot b].

  Attributes:
    depth, heads, mlp_ratio, act: the Transformer's.
    max_relations: the E2R classifier's width.
    dtype, param_dtype, attention: as the towers'.
  """

  depth: int
  heads: int
  mlp_ratio: float = 4.0
  act: str = "gelu"
  max_relations: int = 64
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, a: Array, a_valid: Array, a_modality: int, a_role: Array,
               a_masked: Array, relation: Array, relation_masked: Array, b: Array,
               b_valid: Array, b_modality: int, b_role: Array,
               b_masked: Array) -> dict[str, Array]:
    """Fuses K triplets.

    Args:
      a, b: [K, La, D] / [K, Lb, D] token features of the two entity slots.
      a_valid, b_valid: [K, La] / [K, Lb] bool, real tokens.
      a_modality, b_modality: TEXT or IMAGE (each slot has one modality).
      a_role, b_role: [K] int, HEAD or TAIL.
      a_masked, b_masked, relation_masked: [K] bool, the slot is replaced by the
        mask (a zero vector).
      relation: [K, D] the pooled relation features.

    Returns:
      ``a``, ``relation``, ``b``: [K, D] outputs, each slot read at its first
      position (where a masked slot's zero vector stands); ``e2e_a``, ``e2e_b``
      (the e2e head on them), ``e2r`` ([K, max_relations] logits at the relation),
      ``g2e_a``, ``g2e_b`` (the g2e head).
    """
    d = a.shape[-1]
    modality = self.param("modality_embedding", nn.initializers.normal(0.02), (2, d),
                          self.param_dtype)
    role = self.param("role_embedding", nn.initializers.normal(0.02), (3, d),
                      self.param_dtype)

    def slot(x, valid, kind, roles, masked):
      first = jnp.arange(x.shape[1])[None] == 0
      x = jnp.where(masked[:, None, None], 0.0, x + modality[kind])
      valid = jnp.where(masked[:, None], first, valid)
      return x + role[roles][:, None], valid

    a, a_valid = slot(a, a_valid, a_modality, a_role, a_masked)
    b, b_valid = slot(b, b_valid, b_modality, b_role, b_masked)
    r = jnp.where(relation_masked[:, None], 0.0, relation)[:, None] + role[RELATION]
    x = jnp.concatenate([a, r, b], axis=1).astype(self.dtype)
    valid = jnp.concatenate([a_valid, jnp.ones(r.shape[:2], bool), b_valid], axis=1)
    x = layers.layer_norm(self.dtype, self.param_dtype, "ln_in")(x)
    x = layers.Transformer(depth=self.depth, num_heads=self.heads,
                           mlp_ratio=self.mlp_ratio, act=self.act, dtype=self.dtype,
                           param_dtype=self.param_dtype, attention=self.attention,
                           name="transformer")(x, valid)
    x = layers.layer_norm(self.dtype, self.param_dtype, "ln_final")(x)
    la = a.shape[1]
    out = {"a": x[:, 0], "relation": x[:, la], "b": x[:, la + 1]}
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype,
                                     name=name)
    e2e, g2e = dense(d, "e2e_head"), dense(d, "g2e_head")
    out.update(e2e_a=e2e(out["a"]), e2e_b=e2e(out["b"]), g2e_a=g2e(out["a"]),
               g2e_b=g2e(out["b"]),
               e2r=dense(self.max_relations, "e2r_head")(out["relation"]))
    return {k: v.astype(jnp.float32) for k, v in out.items()}


class KnowledgeCLIPModel(TwoTowers):
  """``TwoTowers`` plus ``kfusion`` (``TripletFusion``) and ``g2e``
  (``GraphTransformer``).

  Attributes:
    fusion_depth, fusion_heads, fusion_mlp_ratio: the fusion Transformer's.
    g2e_depth, g2e_heads: the graph transformer's.
    max_relations: relations the E2R head and the edge types allow.
  """

  fusion_depth: int = 2
  fusion_heads: int = 4
  fusion_mlp_ratio: float = 4.0
  g2e_depth: int = 1
  g2e_heads: int = 4
  max_relations: int = 64

  def setup(self):
    super().setup()
    act = dict(self.text).get("act", "gelu")
    self.kfusion = TripletFusion(self.fusion_depth, self.fusion_heads,
                                 self.fusion_mlp_ratio, act, self.max_relations,
                                 self.dtype, self.param_dtype, self.attention)
    # Edge types: relation r outgoing is 1 + r, incoming 1 + R + r (0 = no edge).
    self.g2e = GraphTransformer(width=self.embed_dim, depth=self.g2e_depth,
                                heads=self.g2e_heads, num_edge_types=2 * self.max_relations,
                                act=act, dtype=self.dtype, param_dtype=self.param_dtype,
                                attention=self.attention)

  def fuse(self, *args, **kwargs) -> dict[str, Array]:
    """``TripletFusion`` (see its arguments)."""
    return self.kfusion(*args, **kwargs)

  def propagate(self, entity: Array, neighbours: Array, neighbour_types: Array,
                neighbour_valid: Array) -> Array:
    """The entity's feature propagated over its neighbourhood.

    Args:
      entity: [K, D] entity features.
      neighbours: [K, N, D] its neighbours' features.
      neighbour_types: [K, N] int, the edge's type (relation r outgoing: r,
        incoming: R + r with R = ``max_relations``).
      neighbour_valid: [K, N] bool.

    Returns:
      [K, D] float32: the graph transformer's output at the entity.
    """
    k, n = neighbour_types.shape
    nodes = jnp.concatenate([entity[:, None], neighbours], axis=1)
    mask = jnp.concatenate([jnp.ones((k, 1), bool), neighbour_valid], axis=1)
    star = jnp.where(neighbour_valid, neighbour_types + 1, 0)
    edges = jnp.zeros((k, n + 1, n + 1), jnp.int32)
    edges = edges.at[:, 0, 1:].set(star).at[:, 1:, 0].set(star)
    return self.g2e(nodes, mask, edges)[:, 0].astype(jnp.float32)

  def __call__(self, images, texts, return_tokens: bool = False, patch_mask=None,
               token_mask=None):
    """``TwoTowers.__call__``; also runs the new modules on dummies, so that
    ``init(rng, images, texts)`` creates their parameters."""
    out = super().__call__(images, texts, return_tokens, patch_mask, token_mask)
    if self.is_initializing():
      d = self.embed_dim
      x, ok = jnp.zeros((1, 2, d)), jnp.ones((1, 2), bool)
      no, role = jnp.zeros((1,), bool), jnp.zeros((1,), jnp.int32)
      self.fuse(x, ok, TEXT, role, no, jnp.zeros((1, d)), no, x, ok, IMAGE, role + 2, no)
      self.propagate(jnp.zeros((1, d)), x, jnp.zeros((1, 2), jnp.int32), ok)
    return out
