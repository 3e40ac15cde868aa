"""Structure-CLIP's Knowledge-Enhanced Encoder (KEE) and the model that carries it.

Structure-CLIP (Huang et al., AAAI 2024,
"Knowledge-Enhanced Encoder") encodes the caption's scene-graph triples and adds the
result to the text embedding:

1. at most 6 triples (h, r, t) per caption, attribute edges included;
2. each of h, r and t is tokenised separately (at most 5 tokens), embedded with the
   *text tower's* embedding table and mean-pooled;
3. the triple vector is h + r - t (TransE-style);
4. the sequence of triple vectors, with a mask over the real ones, passes through a
   6-layer Transformer;
5. the output at position 0 is projected to the embedding size;
6. text feature = normalise(text_emb) + lambda * normalise(KEE_out), lambda = 0.2.

Choices where the paper is silent (also in the docstrings below and docs/methods.md):

* Mean pooling runs over the non-pad tokens only (pad id = the text tower's
  ``pad_id``); an all-pad h, r or t pools to zeros.
* Masked triples are zeroed *before* the Transformer (besides being masked as
  keys), so nothing about them can reach the output, even through position 0.
* "Position 0" is read as "the first real triple": identical to position 0 when the
  real triples are packed first (as the input pipeline writes them), and it keeps a
  masked slot 0 from being the summary otherwise.
* No positional embedding: the triples of a scene graph are a set (the public
  code's ``myTransformer`` over triples adds none either).
* The Transformer is ``GraphTransformer`` without edges: pre-LN CLIP blocks plus a
  final LayerNorm, width = text width; the projection to ``embed_dim`` has no bias,
  like CLIP's ``text_projection``.
* A caption without any triple gets a KEE output of exactly zero (and so a fused
  text feature equal to the plain one) instead of an arbitrary attention average.
* The fused feature is L2-renormalised by default (``renormalize=True``): the paper
  scores with cosine similarity, and the un-renormalised sum would make the hinge
  margin depend on the norm of the sum rather than on the angle. The public code
  does not renormalise; ``renormalize=False`` reproduces that.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlkg.models.graph_transformer import GraphTransformer
from vlkg.models.two_towers import TwoTowers, l2_normalize

Array = jax.Array


def mean_pool_tokens(token_emb: Array, ids: Array, pad_id: int = 0) -> Array:
  """Means token embeddings over the non-pad tokens of the last token axis.

  Args:
    token_emb: [..., S, W] token embeddings.
    ids: [..., S] token ids; ``pad_id`` marks padding.
    pad_id: the padding id.

  Returns:
    [..., W] float32 means; zeros where every token is padding.
  """
  keep = (ids != pad_id).astype(jnp.float32)[..., None]
  # `where`, not `* keep`: a non-finite embedding at a pad position must not leak
  # in as NaN (0 * inf).
  summed = jnp.sum(jnp.where(keep > 0, token_emb.astype(jnp.float32), 0.0), axis=-2)
  return summed / jnp.maximum(jnp.sum(keep, axis=-2), 1.0)


class KnowledgeEnhancedEncoder(nn.Module):
  """Encodes a caption's triples into one embed_dim vector (not normalised).

  Parameter layout (W = text width, E = ``embed_dim``)::

    encoder/transformer/resblocks_{i}/{ln_1,attn/{in_proj,out_proj},ln_2,
                                       mlp/{c_fc,c_proj}}   i < depth
    encoder/ln_final/{scale,bias}                            [W]
    projection                                               [W, E]

  Attributes:
    embed_dim: output dimension (the joint embedding size).
    depth: Transformer blocks (6 in the paper).
    heads: attention heads.
    mlp_ratio: MLP hidden width as a multiple of the text width.
    act: MLP activation.
    pad_id: id of the padding token in the triple token ids.
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
    attention: how attention is computed (``attention.dot_product_attention``).
  """

  embed_dim: int
  depth: int = 6
  heads: int = 8
  mlp_ratio: float = 4.0
  act: str = "gelu"
  pad_id: int = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, token_emb: Array, triples: Array, triples_mask: Array) -> Array:
    """Encodes triples.

    Args:
      token_emb: [B, T, 3, S, W] word embeddings of ``triples`` from the text
        tower's table (``TwoTowers.embed_text_tokens``), so that the table is
        shared with the text tower as in the paper.
      triples: [B, T, 3, S] int token ids of (head, relation, tail).
      triples_mask: [B, T] bool, True for real triples.

    Returns:
      [B, embed_dim] float32 KEE outputs; exactly 0 for rows without a triple.
    """
    if triples.ndim != 4 or triples.shape[2] != 3:
      raise ValueError(f"triples must be [B, T, 3, S], got {triples.shape}.")
    if token_emb.shape[:-1] != triples.shape:
      raise ValueError(f"token_emb {token_emb.shape} does not match triples "
                       f"{triples.shape}.")
    width = token_emb.shape[-1]
    mask = triples_mask.astype(bool)
    hrt = mean_pool_tokens(token_emb, triples, self.pad_id)  # [B, T, 3, W]
    vec = hrt[:, :, 0] + hrt[:, :, 1] - hrt[:, :, 2]
    vec = jnp.where(mask[..., None], vec, 0.0).astype(self.dtype)
    x = GraphTransformer(
        width=width,
        depth=self.depth,
        heads=self.heads,
        mlp_ratio=self.mlp_ratio,
        act=self.act,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        attention=self.attention,
        name="encoder",
    )(vec, mask)
    first = jnp.argmax(mask, axis=-1)  # 0 for packed rows and for empty rows
    pooled = jnp.take_along_axis(x, first[:, None, None], axis=1)[:, 0]
    proj = self.param(
        "projection", nn.initializers.normal(width**-0.5), (width, self.embed_dim),
        self.param_dtype,
    )
    out = (pooled @ proj.astype(self.dtype)).astype(jnp.float32)
    return jnp.where(mask.any(-1, keepdims=True), out, 0.0)


def fuse(ztxt: Array, zkee: Array, lam: float, renormalize: bool = True) -> Array:
  """Structure-CLIP's fused text feature: normalise(text) + lam * normalise(KEE).

  Args:
    ztxt: [..., D] text embeddings (normalised or not).
    zkee: [..., D] KEE outputs (normalised or not; zero rows stay zero).
    lam: weight of the knowledge term (0.2 in the paper).
    renormalize: L2-normalise the sum, so that it is scored by cosine similarity.

  Returns:
    [..., D] float32 fused features.
  """
  fused = l2_normalize(ztxt) + lam * l2_normalize(zkee)
  return l2_normalize(fused) if renormalize else fused


class StructureCLIPModel(TwoTowers):
  """``TwoTowers`` plus the KEE: params ``{img, txt, logit_scale, logit_bias, kee}``.

  The towers and scalars keep CLIP's names, so CLIP checkpoints load into it and
  ``vlkg.api.Model`` (which calls ``embed_images`` / ``embed_texts``) serves it
  unchanged; those two methods are the plain CLIP embeddings.

  Attributes:
    kee_depth: KEE Transformer blocks (6 in the paper).
    kee_heads: KEE attention heads; None = the text tower's.
    kee_mlp_ratio: KEE MLP hidden width / text width.
    max_triples: largest accepted T (6 in the paper); also T of the dummy
      triples used at init.
    triple_tokens: largest accepted S (5 in the paper).
    lam: weight of the KEE term in the fused text feature (0.2).
    renormalize: L2-renormalise the fused feature (see module docstring).
  """

  kee_depth: int = 6
  kee_heads: int | None = None
  kee_mlp_ratio: float = 4.0
  max_triples: int = 6
  triple_tokens: int = 5
  lam: float = 0.2
  renormalize: bool = True

  def setup(self):
    super().setup()
    text = dict(self.text)
    self.kee = KnowledgeEnhancedEncoder(
        embed_dim=self.embed_dim,
        depth=self.kee_depth,
        heads=self.kee_heads if self.kee_heads is not None else text["heads"],
        mlp_ratio=self.kee_mlp_ratio,
        act=text.get("act", "gelu"),
        pad_id=text.get("pad_id", 0),
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        attention=self.attention,
    )

  def embed_triples(self, triples: Array, triples_mask: Array) -> Array:
    """Normalised float32 KEE embeddings [B, D]; zero rows where no triple is real.

    Args:
      triples: [B, T, 3, S] int token ids, T <= max_triples, S <= triple_tokens.
      triples_mask: [B, T] bool.
    """
    _, t, _, s = triples.shape
    if t > self.max_triples or s > self.triple_tokens:
      raise ValueError(f"triples {triples.shape} exceed max_triples="
                       f"{self.max_triples} / triple_tokens={self.triple_tokens}.")
    token_emb = self.embed_text_tokens(triples)
    return l2_normalize(self.kee(token_emb, triples, triples_mask))

  def fused_text(
      self,
      texts: Array,
      triples: Array,
      triples_mask: Array,
      lam: float | None = None,
      renormalize: bool | None = None,
  ) -> Array:
    """normalise(text) + lam * normalise(KEE), L2-renormalised if ``renormalize``.

    ``lam`` and ``renormalize`` default to the module's attributes.
    """
    lam = self.lam if lam is None else lam
    renormalize = self.renormalize if renormalize is None else renormalize
    return fuse(self.embed_texts(texts), self.embed_triples(triples, triples_mask),
                lam, renormalize)

  def structure_features(
      self,
      images: Array,
      texts: Array,
      neg_texts: Array,
      triples: Array,
      triples_mask: Array,
      text_embeddings: tuple[Array, Array] | None = None,
  ) -> dict[str, Array]:
    """Everything the Structure-CLIP losses read, in one pass.

    The true and negative captions go through the text tower as one [2B, L]
    batch, so the tower runs once per step.

    Args:
      images: [B, H, W, 3] normalised float images.
      texts: [B, L] true captions.
      neg_texts: [B, L] negative captions (same L).
      triples: [B, T, 3, S] triples of the true captions.
      triples_mask: [B, T] bool.
      text_embeddings: the plain embeddings of ``texts`` and ``neg_texts``
        ([B, D] each), where the caller computed them (packed, as the training
        step does, ``vlkg.models.text_packing``); None runs the text tower here.

    Returns:
      Dict of normalised float32 [B, D] ``zimg``, ``ztxt`` (plain), ``zneg``
      (plain), ``zkee``, ``fused`` (fused true captions), ``neg_fused`` (negative
      captions fused with their positive's KEE vector), plus the scalars.
    """
    b = texts.shape[0]
    out = dict(self.scalars())
    out["zimg"] = self.embed_images(images)
    if text_embeddings is None:
      both = self.embed_texts(jnp.concatenate([texts, neg_texts], axis=0))
      text_embeddings = both[:b], both[b:]
    out["ztxt"], out["zneg"] = text_embeddings
    out["zkee"] = self.embed_triples(triples, triples_mask)
    out["fused"] = fuse(out["ztxt"], out["zkee"], self.lam, self.renormalize)
    out["neg_fused"] = fuse(out["zneg"], out["zkee"], self.lam, self.renormalize)
    return out

  def __call__(
      self,
      images: Array | None,
      texts: Array | None,
      triples: Array | None = None,
      triples_mask: Array | None = None,
  ) -> tuple[Array | None, Array | None, dict[str, Array]]:
    """Embeds whichever inputs are given; also what ``init`` traces.

    Args:
      images: [B, H, W, 3] normalised float images, or None.
      texts: [B, L] int token ids, or None.
      triples: [B, T, 3, S] int triple token ids, or None: the KEE then runs on
        all-padding dummies (giving zeros), so that ``init(rng, images, texts)``
        creates the ``kee`` parameters.
      triples_mask: [B, T] bool; None with ``triples`` given = all real.

    Returns:
      ``(zimg, ztxt, extras)`` as ``TwoTowers.__call__``, ``ztxt`` being the
      *plain* text embedding; extras also hold ``kee`` (normalised KEE
      embeddings) and, when texts are given, ``fused``.
    """
    extras = self.scalars()
    zimg = self.embed_images(images) if images is not None else None
    ztxt = self.embed_texts(texts) if texts is not None else None
    if triples is None:
      lead = texts if texts is not None else images
      b = 1 if lead is None else lead.shape[0]
      triples = jnp.zeros((b, self.max_triples, 3, self.triple_tokens), jnp.int32)
      triples_mask = jnp.zeros((b, self.max_triples), bool)
    elif triples_mask is None:
      triples_mask = jnp.ones(triples.shape[:2], bool)
    extras["kee"] = self.embed_triples(triples, triples_mask)
    if ztxt is not None:
      extras["fused"] = fuse(ztxt, extras["kee"], self.lam, self.renormalize)
    return zimg, ztxt, extras
