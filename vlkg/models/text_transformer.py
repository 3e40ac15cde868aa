"""The CLIP text tower: a Transformer over token ids, pooled at one position.

Architecture of Radford et al. 2021 (CLIP) §2.4: "The text encoder is a Transformer
(Vaswani et al., 2017) with the architecture modifications described in Radford et al.
(2019) [...] The text sequence is bracketed with [SOS] and [EOS] tokens and the
activations of the highest layer of the transformer at the [EOS] token are treated as
the feature representation of the text which is layer normalized and then linearly
projected into the multi-modal embedding space. Masked self-attention was used in the
text encoder". Parameter names and the argmax-EOT trick follow OpenAI's
``clip/model.py`` (``token_embedding``, ``positional_embedding``, ``transformer``,
``ln_final``, ``text_projection``). The bidirectional / last-token variant is the
option SigLIP-style towers use (Zhai et al. 2023, SigLIP §3; big_vision).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlkg.models import layers

Array = jax.Array


class TextTransformer(nn.Module):
  """CLIP's text encoder.

  Attributes:
    vocab_size: number of token ids.
    context_length: maximum sequence length (rows of ``positional_embedding``).
    width: Transformer width.
    depth: number of Transformer blocks.
    heads: attention heads.
    embed_dim: output (joint embedding) dimension.
    mlp_ratio: MLP hidden width as a multiple of ``width``.
    act: ``"gelu"`` or ``"quick_gelu"`` (OpenAI checkpoints).
    causal: causal self-attention (CLIP). Pad keys are masked either way.
    pool: ``"eot"`` pools at the end-of-text token; ``"last"`` at the last non-pad
      token (for bidirectional encoders).
    pad_id: id of the padding token.
    eot_id: id of the end-of-text token. None uses the position of the largest id,
      which is the EOT in OpenAI's BPE vocabulary (EOT is the last entry).
    mask_pad: mask ``pad_id`` keys (default). OpenAI CLIP masks nothing but the
      future: its pad id 0 is also the BPE symbol "!", so masking it would hide
      real tokens. With right padding and a causal mask the pooled EOT never sees
      a pad either way; False gives OpenAI's outputs exactly.
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
    attention: how attention is computed (``attention.dot_product_attention``).
  """

  vocab_size: int
  context_length: int
  width: int
  depth: int
  heads: int
  embed_dim: int
  mlp_ratio: float = 4.0
  act: str = "gelu"
  causal: bool = True
  pool: str = "eot"
  pad_id: int = 0
  eot_id: int | None = None
  mask_pad: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"

  def setup(self):
    if self.pool not in ("eot", "last"):
      raise ValueError(f"pool must be 'eot' or 'last', got {self.pool!r}.")
    # Init stds of OpenAI's CLIP.initialize_parameters.
    self.token_embedding = nn.Embed(
        self.vocab_size,
        self.width,
        embedding_init=nn.initializers.normal(0.02),
        dtype=self.dtype,
        param_dtype=self.param_dtype,
    )
    self.positional_embedding = self.param(
        "positional_embedding",
        nn.initializers.normal(0.01),
        (self.context_length, self.width),
        self.param_dtype,
    )
    self.transformer = layers.Transformer(
        depth=self.depth,
        num_heads=self.heads,
        mlp_ratio=self.mlp_ratio,
        act=self.act,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        attention=self.attention,
    )
    self.ln_final = layers.layer_norm(self.dtype, self.param_dtype)
    self.text_projection = self.param(
        "text_projection",
        nn.initializers.normal(self.width**-0.5),
        (self.width, self.embed_dim),
        self.param_dtype,
    )

  def embed_tokens(self, ids: Array) -> Array:
    """Looks up input token embeddings [..., width] (no positions, no Transformer).

    Exposed so that e.g. knowledge encoders can mean-pool word embeddings from the
    same table the text tower learns.
    """
    return self.token_embedding(ids)

  def attention_mask(self, ids: Array, token_mask: Array | None = None) -> Array:
    """The boolean [B, 1, L, L] mask: pad keys masked, plus future keys if causal.

    ``token_mask`` ([B, L] bool, True = keep) also masks the removed tokens as keys;
    the pooled position (``pool_index``) stays a key whatever it says.
    """
    keep = ids != self.pad_id if self.mask_pad else jnp.ones(ids.shape, bool)
    if token_mask is not None:
      if token_mask.shape != ids.shape:
        raise ValueError(
            f"token_mask must have the ids' shape {ids.shape}, got {token_mask.shape}.")
      pooled = jnp.arange(ids.shape[-1])[None, :] == self.pool_index(ids)[:, None]
      keep = keep & (token_mask.astype(bool) | pooled)
    mask = keep[:, None, None, :]
    if self.causal:
      length = ids.shape[-1]
      mask = mask & jnp.tril(jnp.ones((length, length), bool))[None, None]
    return mask

  def pool_index(self, ids: Array) -> Array:
    """The [B] position each sequence is pooled at."""
    length = ids.shape[-1]
    nonpad = ids != self.pad_id
    # Works for any padding side: the first non-pad position from the right.
    last = length - 1 - jnp.argmax(nonpad[:, ::-1], axis=-1)
    if self.pool == "last":
      return last
    if self.eot_id is None:
      return jnp.argmax(ids, axis=-1)
    is_eot = ids == self.eot_id
    # argmax of an all-False row is 0, i.e. the start token; a caption truncated
    # without EOT is better summarised by its last real token.
    return jnp.where(is_eot.any(-1), jnp.argmax(is_eot, axis=-1), last)

  def pooled_span(self, ids: Array) -> Array:
    """[B] tokens from the start that the pooled output depends on.

    With causal attention, the pooled token sees itself and what precedes it;
    otherwise every key up to the last non-pad token, or the whole row when pad
    keys are not masked. ``encode_packed`` needs only these tokens of a text.
    """
    if self.causal:
      return self.pool_index(ids) + 1
    length = ids.shape[-1]
    if not self.mask_pad:
      return jnp.full(ids.shape[:1], length, jnp.int32)
    nonpad = ids != self.pad_id
    return jnp.where(nonpad.any(-1), length - jnp.argmax(nonpad[:, ::-1], axis=-1), 0)

  def encode_packed(self, ids: Array, segments: Array, positions: Array,
                    pool_rows: Array, pool_cols: Array) -> Array:
    """Embeddings of texts packed several to a row (``vlkg.models.text_packing``).

    Each text attends only to its own tokens (same segment; causal and pad keys
    as in ``attention_mask``) and its tokens take the positional embeddings of
    their places in the text, so each computes what it computes alone.

    Args:
      ids: [R, L] packed token ids.
      segments: [R, L] int, the text owning each cell (0 = unused).
      positions: [R, L] int, each token's position within its text.
      pool_rows, pool_cols: [N] the cell of each text's pooled token.

    Returns:
      The [N, embed_dim] embeddings (not L2-normalised), as ``__call__`` gives.
    """
    length = ids.shape[-1]
    if length > self.context_length:
      raise ValueError(f"Sequence length {length} > context {self.context_length}.")
    x = self.token_embedding(ids)
    x = x + jnp.take(self.positional_embedding, positions, axis=0).astype(x.dtype)
    keep = segments > 0
    if self.mask_pad:
      keep = keep & (ids != self.pad_id)
    mask = (segments[:, :, None] == segments[:, None, :]) & keep[:, None, :]
    if self.causal:
      mask = mask & jnp.tril(jnp.ones((length, length), bool))[None]
    x = self.transformer(x, mask[:, None])
    pooled = self.ln_final(x[pool_rows, pool_cols])
    return pooled @ self.text_projection.astype(self.dtype)

  def __call__(
      self,
      ids: Array,
      return_tokens: bool = False,
      token_mask: Array | None = None,
  ) -> Array | tuple[Array, Array]:
    """Encodes token ids.

    Args:
      ids: [B, L] int token ids, L <= context_length.
      return_tokens: also return all projected token outputs.
      token_mask: optional [B, L] bool, True = keep the token. Removed tokens are
        masked as attention keys for every query, on top of the pad (and causal)
        mask, so the kept tokens compute exactly what they would on the kept
        subsequence alone with its positional embeddings. The pooled token (EOT, or
        the last non-pad one) is always kept and the pooling position is still
        ``pool_index(ids)``. This is how LOUPE removes text players (LOUPE, Li et al., NeurIPS 2022
        "Game"). Outputs at removed positions are meaningless. None (default)
        leaves the computation unchanged.

    Returns:
      The [B, embed_dim] embedding (not L2-normalised) or, with ``return_tokens``,
      ``(embedding, tokens)`` where tokens are the [B, L, embed_dim] outputs after
      ``ln_final`` and ``text_projection``; the embedding is the row of tokens at
      ``pool_index(ids)``.
    """
    length = ids.shape[-1]
    if length > self.context_length:
      raise ValueError(f"Sequence length {length} > context {self.context_length}.")
    x = self.token_embedding(ids)
    x = x + self.positional_embedding[:length].astype(x.dtype)[None]
    x = self.transformer(x, self.attention_mask(ids, token_mask))
    x = self.ln_final(x)
    proj = self.text_projection.astype(self.dtype)
    pooled = jnp.take_along_axis(x, self.pool_index(ids)[:, None, None], axis=1)[:, 0]
    emb = pooled @ proj
    if not return_tokens:
      return emb
    return emb, x @ proj
