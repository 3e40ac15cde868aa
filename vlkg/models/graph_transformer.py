"""A relation-aware Transformer over graph node tokens.

Used by the structure/knowledge methods (e.g. Structure-CLIP's Knowledge-Enhanced
Encoder, Structure-CLIP (Huang et al., AAAI 2024), and the graph encoders of Knowledge-CLIP and MosaiCLIP) wherever a
set of node (or triple) tokens has to be contextualised, optionally along typed
edges.

Design:

* Blocks are the shared pre-LN CLIP blocks (``layers.Transformer``), so the init
  and the parameter names (``resblocks_{i}/attn/in_proj`` ...) are those of the
  towers, followed by a final LayerNorm (``ln_final``) because a pre-LN residual
  stream is otherwise never normalised (CLIP's ``ln_final`` / ``ln_post``).
* Edges enter as an additive attention bias, Graphormer's edge/spatial encoding
  (Ying et al. 2021, "Do Transformers Really Perform Bad for Graph
  Representation?", §3.1): a learned scalar per (edge type, head),
  shared across layers as Graphormer shares b_phi. Edge type 0 means "no edge" and
  has a fixed zero bias, so a graph without edges is exactly a plain Transformer
  over its nodes. The table is zero-initialised for the same reason: training
  starts from the plain Transformer and learns which relations to attend along.
* ``node_mask`` is a key-padding mask: masked nodes are never attended to, so
  their content cannot reach the real nodes; their own outputs are zeroed.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlkg.models import layers

Array = jax.Array


def edge_type_bias(table: Array, edge_types: Array) -> Array:
  """Looks up the attention bias of each edge.

  Args:
    table: [num_edge_types, H] learned bias of edge types 1..num_edge_types.
    edge_types: [B, N, N] int edge types, 0 = no edge; ids above the table are
      clipped to the last type.

  Returns:
    The [B, H, N, N] float32 bias, exactly 0 where there is no edge.
  """
  heads = table.shape[-1]
  # Row 0 ("no edge") is a constant, not a parameter: graphs without edges must
  # reduce to a plain Transformer whatever the table has learned.
  full = jnp.concatenate(
      [jnp.zeros((1, heads), jnp.float32), table.astype(jnp.float32)], axis=0)
  bias = jnp.take(full, edge_types.astype(jnp.int32), axis=0, mode="clip")
  return bias.transpose(0, 3, 1, 2)


class GraphTransformer(nn.Module):
  """Pre-LN Transformer over node tokens with a per-edge-type attention bias.

  Attributes:
    width: node token width; must equal the input's last dimension.
    depth: number of residual attention blocks.
    heads: attention heads per block.
    mlp_ratio: MLP hidden width as a multiple of ``width``.
    num_edge_types: number of real edge types (ids 1..num_edge_types in
      ``edge_types``; 0 = no edge). 0 disables the edge bias (no parameter).
    act: MLP activation, ``"gelu"`` or ``"quick_gelu"``.
    final_ln: apply ``ln_final`` to the outputs.
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
    attention: how attention is computed (``attention.dot_product_attention``).
  """

  width: int
  depth: int
  heads: int
  mlp_ratio: float = 4.0
  num_edge_types: int = 0
  act: str = "gelu"
  final_ln: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(
      self,
      nodes: Array,
      node_mask: Array | None = None,
      edge_types: Array | None = None,
  ) -> Array:
    """Contextualises the nodes.

    Args:
      nodes: [B, N, width] node (or triple) tokens.
      node_mask: [B, N] bool, True for real nodes; None = all real.
      edge_types: [B, N, N] int, the type of the edge from query node i to key
        node j (0 = none, 1..num_edge_types); None = no edges. Pass a symmetric
        matrix for undirected graphs.

    Returns:
      [B, N, width] outputs, zero at masked nodes.
    """
    if nodes.shape[-1] != self.width:
      raise ValueError(f"nodes have width {nodes.shape[-1]}, expected {self.width}.")
    table = None
    if self.num_edge_types > 0:
      # Created even when no edges are passed, so that the tree does not depend on
      # the example inputs used at init. float32 whatever param_dtype is: the bias
      # joins the float32 logits.
      table = self.param(
          "edge_bias", nn.initializers.zeros, (self.num_edge_types, self.heads),
          jnp.float32,
      )
    bias = None
    if edge_types is not None:
      if edge_types.shape != nodes.shape[:2] + nodes.shape[1:2]:
        raise ValueError(f"edge_types must be [B, N, N] for nodes {nodes.shape}, "
                         f"got {edge_types.shape}.")
      if table is None:
        # Otherwise the edges would be silently ignored.
        raise ValueError("edge_types given but num_edge_types == 0.")
      bias = edge_type_bias(table, edge_types)
    x = nodes.astype(self.dtype)
    x = layers.Transformer(
        depth=self.depth,
        num_heads=self.heads,
        mlp_ratio=self.mlp_ratio,
        act=self.act,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        attention=self.attention,
        name="transformer",
    )(x, node_mask, bias)
    if self.final_ln:
      x = layers.layer_norm(self.dtype, self.param_dtype, "ln_final")(x)
    if node_mask is not None:
      x = jnp.where(node_mask[..., None], x, jnp.zeros((), x.dtype))
    return x
