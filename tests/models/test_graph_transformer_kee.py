"""Tests for the attention bias, GraphTransformer, the KEE and StructureCLIPModel."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from vlkg.models import layers
from vlkg.models.graph_transformer import GraphTransformer
from vlkg.models.kee import KnowledgeEnhancedEncoder, StructureCLIPModel, fuse
from vlkg.models.two_towers import build_model

WIDTH, HEADS, EMBED, VOCAB, CTX = 16, 2, 8, 20, 8
T, S = 4, 3


def random_params(module, *args, seed: int = 0) -> dict:
  """Random variables of the module's real tree (LayerNorm scales near 1)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, s):
    noise = rng.normal(0, 0.3, s.shape).astype(s.dtype)
    return noise + 1 if path[-1].key == "scale" else noise

  return jax.tree_util.tree_map_with_path(fill, shapes)


# --- numpy references ---------------------------------------------------------


def np_ln(x, p):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def np_gelu(x):
  erf = np.vectorize(math.erf)
  return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def np_block(x, p, heads, mask, bias):
  """One pre-LN block; bias [B, H, N, N] added to the scaled logits."""
  b, n, w = x.shape
  dh = w // heads
  y = np_ln(x, p["ln_1"])
  qkv = y @ p["attn"]["in_proj"]["kernel"] + p["attn"]["in_proj"]["bias"]
  q, k, v = np.split(qkv, 3, axis=-1)
  split = lambda t: t.reshape(b, n, heads, dh).transpose(0, 2, 1, 3)
  q, k, v = split(q), split(k), split(v)
  logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + bias
  logits = np.where(mask[:, None, None, :], logits, -np.inf)
  a = np.exp(logits - logits.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  o = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, w)
  x = x + o @ p["attn"]["out_proj"]["kernel"] + p["attn"]["out_proj"]["bias"]
  y = np_ln(x, p["ln_2"])
  m = p["mlp"]
  h = np_gelu(y @ m["c_fc"]["kernel"] + m["c_fc"]["bias"])
  return x + h @ m["c_proj"]["kernel"] + m["c_proj"]["bias"]


def to_np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# --- attention bias -----------------------------------------------------------


def test_attention_bias_zero_is_identity_and_large_negative_is_a_mask():
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  attn = layers.MultiHeadAttention(num_heads=2)
  params = random_params(attn, x)
  mask = np.ones((2, 5), bool)
  mask[1, 2:] = False
  base = attn.apply(params, x, mask)
  zero = attn.apply(params, x, mask, jnp.zeros((2, 1, 5, 5)))
  np.testing.assert_allclose(zero, base, rtol=1e-6, atol=1e-6)
  as_bias = np.where(mask[:, None, None, :], 0.0, -1e9).astype(np.float32)
  np.testing.assert_allclose(attn.apply(params, x, None, as_bias), base,
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="4-D"):
    attn.apply(params, x, mask, jnp.zeros((5, 5)))


# --- GraphTransformer ---------------------------------------------------------

B, N, NUM_EDGE_TYPES = 2, 5, 3


@pytest.fixture(scope="module")
def graph():
  gt = GraphTransformer(width=WIDTH, depth=1, heads=HEADS, num_edge_types=NUM_EDGE_TYPES)
  nodes = np.random.default_rng(1).normal(size=(B, N, WIDTH)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  edges = np.zeros((B, N, N), np.int32)
  edges[0, 0, 1], edges[0, 1, 0], edges[0, 2, 4] = 1, 2, 3
  edges[1, 0, 2], edges[1, 2, 3] = 3, 1  # the second edge points at a masked node
  params = random_params(gt, nodes, mask, edges)
  return gt, params, nodes, mask, edges


def test_graph_transformer_param_tree(graph):
  _, params, *_ = graph
  flat = traverse_util.flatten_dict(params["params"], sep="/")
  assert flat["edge_bias"].shape == (NUM_EDGE_TYPES, HEADS)
  assert flat["transformer/resblocks_0/attn/in_proj/kernel"].shape == (WIDTH, 3 * WIDTH)
  assert flat["ln_final/scale"].shape == (WIDTH,)
  # Zero-initialised: at init the module is a plain Transformer.
  gt = graph[0]
  init = gt.init(jax.random.key(0), *graph[2:])
  np.testing.assert_array_equal(init["params"]["edge_bias"], 0.0)


def test_graph_transformer_matches_numpy_reference(graph):
  gt, params, nodes, mask, edges = graph
  out = jax.jit(gt.apply)(params, nodes, mask, edges)
  p = to_np(params["params"])
  table = np.concatenate([np.zeros((1, HEADS)), p["edge_bias"]])
  bias = table[edges].transpose(0, 3, 1, 2)  # [B, H, N, N]
  x = np_block(nodes.astype(np.float64), p["transformer"]["resblocks_0"], HEADS,
               mask, bias)
  ref = np_ln(x, p["ln_final"]) * mask[..., None]
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_edge_bias_changes_outputs_only_where_edges_exist(graph):
  gt, params, nodes, mask, edges = graph
  apply = jax.jit(gt.apply)
  plain = apply(params, nodes, mask)
  no_edges = apply(params, nodes, mask, np.zeros_like(edges))
  np.testing.assert_allclose(no_edges, plain, rtol=1e-6, atol=1e-6)
  with_edges = np.asarray(apply(params, nodes, mask, edges))
  # Graph 0 has edges between real nodes; in graph 1 the only edge into a real
  # key starts at node 0, so node 0's row changes, and the edge to the masked
  # node 3 changes nothing.
  assert np.abs(with_edges[0] - plain[0]).max() > 1e-3
  assert np.abs(with_edges[1, 0] - plain[1, 0]).max() > 1e-3
  np.testing.assert_allclose(with_edges[1, 1:], plain[1, 1:], rtol=1e-6, atol=1e-6)


def test_masked_nodes_do_not_affect_real_nodes(graph):
  gt, params, nodes, mask, edges = graph
  apply = jax.jit(gt.apply)
  out = apply(params, nodes, mask, edges)
  other = nodes.copy()
  other[1, 3:] = 100.0 * np.random.default_rng(2).normal(size=(2, WIDTH))
  edges2 = edges.copy()
  edges2[1, 3, 0] = 2  # new edges from masked queries
  out2 = apply(params, other, mask, edges2)
  np.testing.assert_allclose(out2, out, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out)[1, 3:], 0.0)


def test_edges_without_edge_types_are_refused():
  gt = GraphTransformer(width=WIDTH, depth=1, heads=HEADS)
  nodes = jnp.zeros((1, 3, WIDTH))
  with pytest.raises(ValueError, match="num_edge_types"):
    gt.init(jax.random.key(0), nodes, None, jnp.zeros((1, 3, 3), jnp.int32))


# --- KEE ----------------------------------------------------------------------


def kee_inputs(seed: int = 0):
  rng = np.random.default_rng(seed)
  triples = rng.integers(1, VOCAB, size=(3, T, 3, S)).astype(np.int32)
  triples[:, :, :, 2] = 0  # the last token slot is padding everywhere
  triples[0, 1, 1, 1:] = 0  # a one-token relation
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
  emb = rng.normal(size=(3, T, 3, S, WIDTH)).astype(np.float32)
  return emb, triples, mask


def np_kee_depth0(emb, triples, mask, p):
  """KEE with no Transformer blocks: pool, h + r - t, ln_final, first row, project."""
  keep = (triples != 0)[..., None]
  pooled = (emb * keep).sum(-2) / np.maximum(keep.sum(-2), 1)
  vec = (pooled[:, :, 0] + pooled[:, :, 1] - pooled[:, :, 2]) * mask[..., None]
  x = np_ln(vec, p["encoder"]["ln_final"])
  out = np.zeros((len(emb), p["projection"].shape[1]))
  for b in range(len(emb)):
    real = np.flatnonzero(mask[b])
    if len(real):
      out[b] = x[b, real[0]] @ p["projection"]
  return out


def test_kee_matches_numpy_reference_without_blocks():
  emb, triples, mask = kee_inputs()
  kee = KnowledgeEnhancedEncoder(embed_dim=EMBED, depth=0, heads=HEADS)
  params = random_params(kee, emb, triples, mask)
  out = kee.apply(params, emb, triples, mask)
  ref = np_kee_depth0(emb.astype(np.float64), triples, mask, to_np(params["params"]))
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
  # A masked first slot: the summary is read at the first real triple.
  mask2 = np.array([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
  np.testing.assert_allclose(
      kee.apply(params, emb, triples, mask2),
      np_kee_depth0(emb.astype(np.float64), triples, mask2, to_np(params["params"])),
      rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def kee2():
  emb, triples, mask = kee_inputs()
  kee = KnowledgeEnhancedEncoder(embed_dim=EMBED, depth=2, heads=HEADS)
  params = random_params(kee, emb, triples, mask)
  return jax.jit(kee.apply), params, emb, triples, mask


def test_kee_param_layout(kee2):
  _, params, *_ = kee2
  flat = {k: v.shape for k, v in
          traverse_util.flatten_dict(params["params"], sep="/").items()}
  assert flat["projection"] == (WIDTH, EMBED)
  assert flat["encoder/transformer/resblocks_1/attn/in_proj/kernel"] == (
      WIDTH, 3 * WIDTH)
  assert flat["encoder/ln_final/bias"] == (WIDTH,)
  assert not any(k.endswith("projection/bias") for k in flat)
  assert not any("edge_bias" in k for k in flat)


def test_kee_ignores_pad_tokens_and_masked_triples(kee2):
  apply, params, emb, triples, mask = kee2
  out = np.asarray(apply(params, emb, triples, mask))
  rng = np.random.default_rng(5)
  noisy = emb.copy()
  pad = triples == 0
  noisy[pad] = 50.0 * rng.normal(size=(pad.sum(), WIDTH))  # pad-position embeddings
  noisy[~mask] = 50.0 * rng.normal(size=noisy[~mask].shape)  # masked triples
  ids = triples.copy()
  ids[~mask] = rng.integers(0, VOCAB, size=ids[~mask].shape)
  np.testing.assert_allclose(apply(params, noisy, ids, mask), out, rtol=1e-5,
                             atol=1e-5)
  # Real tokens do matter (one coordinate: a uniform shift would be removed by
  # the LayerNorms).
  changed = emb.copy()
  changed[0, 0, 0, 0, 0] += 1.0
  assert np.abs(np.asarray(apply(params, changed, triples, mask))[0] - out[0]).max() > 1e-4


def test_kee_empty_rows_are_zero_with_finite_gradients(kee2):
  apply, params, emb, triples, mask = kee2
  out = np.asarray(apply(params, emb, triples, mask))
  np.testing.assert_array_equal(out[2], 0.0)
  assert np.all(np.isfinite(out)) and np.abs(out[:2]).min(axis=-1).max() > 0

  def loss(p, e):
    return jnp.sum(apply(p, e, triples, mask) ** 2)

  gp, ge = jax.grad(loss, argnums=(0, 1))(params, emb)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(gp))
  assert np.all(np.isfinite(ge))
  np.testing.assert_array_equal(np.asarray(ge)[2], 0.0)
  np.testing.assert_array_equal(np.asarray(ge)[triples == 0], 0.0)


# --- StructureCLIPModel -------------------------------------------------------


def tiny_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = dict(
      embed_dim=EMBED,
      image=dict(width=WIDTH, depth=1, heads=HEADS, patch_size=8),
      text=dict(width=WIDTH, depth=1, heads=HEADS, vocab_size=VOCAB,
                context_length=CTX, eot_id=VOCAB - 1),
  )
  return config


@pytest.fixture(scope="module")
def sclip():
  config = tiny_config()
  clip = build_model(config)
  towers = {k: getattr(clip, k) for k in (
      "image", "text", "embed_dim", "init_logit_scale", "init_logit_bias",
      "max_logit_scale", "dtype", "param_dtype")}
  model = StructureCLIPModel(**towers, kee_depth=2, max_triples=T, triple_tokens=S)
  images = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  texts = jnp.array([[1, 5, 7, VOCAB - 1, 0, 0, 0, 0],
                     [1, 3, VOCAB - 1, 0, 0, 0, 0, 0],
                     [1, 2, 3, 4, 5, 6, 7, VOCAB - 1]], jnp.int32)
  params = random_params(model, images, texts)
  return clip, model, params, images, texts


def test_structure_clip_param_tree_extends_clip(sclip):
  clip, model, params, images, texts = sclip
  flat = {k: v.shape for k, v in
          traverse_util.flatten_dict(params["params"], sep="/").items()}
  clip_shapes = jax.eval_shape(clip.init, jax.random.key(0), images, texts)
  clip_flat = {k: v.shape for k, v in
               traverse_util.flatten_dict(clip_shapes["params"], sep="/").items()}
  assert set(params["params"]) == {"img", "txt", "logit_scale", "logit_bias", "kee"}
  assert {k: v for k, v in flat.items() if not k.startswith("kee/")} == clip_flat
  assert flat["kee/projection"] == (WIDTH, EMBED)
  assert flat["kee/encoder/transformer/resblocks_1/mlp/c_fc/kernel"] == (
      WIDTH, 4 * WIDTH)
  assert not any("resblocks_2" in k for k in flat if k.startswith("kee/"))


def test_api_style_embedding_equals_clip(sclip):
  clip, model, params, images, texts = sclip
  clip_params = {k: v for k, v in params["params"].items() if k != "kee"}
  for method in ("embed_images", "embed_texts"):
    x = images if method == "embed_images" else texts
    ours = jax.jit(lambda p, x, m=method: model.apply(
        {"params": p}, x, method=getattr(type(model), m)))(params["params"], x)
    ref = clip.apply({"params": clip_params}, x, method=getattr(type(clip), method))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def model_triples():
  rng = np.random.default_rng(3)
  triples = rng.integers(1, VOCAB, size=(3, T, 3, S)).astype(np.int32)
  triples[..., -1] = 0
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
  return triples, mask


def test_fused_text_and_invariances(sclip):
  _, model, params, images, texts = sclip
  triples, mask = model_triples()
  zt = np.asarray(model.apply(params, texts, method=StructureCLIPModel.embed_texts),
                  np.float64)
  zk = np.asarray(model.apply(params, triples, mask,
                              method=StructureCLIPModel.embed_triples), np.float64)
  np.testing.assert_allclose(np.linalg.norm(zk[:2], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(zk[2], 0.0)
  fused = model.apply(params, texts, triples, mask,
                      method=StructureCLIPModel.fused_text)
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  ref = unit(unit(zt) + 0.2 * zk)
  np.testing.assert_allclose(fused, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fused[2], unit(zt)[2], rtol=1e-5, atol=1e-6)
  raw = model.apply(params, texts, triples, mask, 0.5, False,
                    method=StructureCLIPModel.fused_text)
  np.testing.assert_allclose(raw, unit(zt) + 0.5 * zk, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fuse(zt, zk, 0.2), ref, rtol=1e-6, atol=1e-7)

  # The pad row of the shared table and the ids of masked triples are ignored.
  p2 = jax.tree.map(np.array, params)
  table = p2["params"]["txt"]["token_embedding"]["embedding"]
  p2["params"]["txt"]["token_embedding"]["embedding"] = np.concatenate(
      [np.full_like(table[:1], 30.0), table[1:]])
  ids = triples.copy()
  ids[~mask] = np.random.default_rng(4).integers(1, VOCAB, size=ids[~mask].shape)
  zk2 = model.apply(p2, ids, mask, method=StructureCLIPModel.embed_triples)
  np.testing.assert_allclose(zk2, zk, rtol=1e-5, atol=1e-6)

  # __call__ returns the plain text embedding and the fused one in extras.
  zimg, ztxt, extras = model.apply(params, images, texts, triples, mask)
  np.testing.assert_allclose(ztxt, zt, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(extras["fused"], ref, rtol=1e-5, atol=1e-6)
  assert zimg.shape == (3, EMBED)


def test_structure_clip_gradients_finite(sclip):
  _, model, params, images, texts = sclip
  triples, mask = model_triples()

  def loss(p):
    zimg, _, extras = model.apply(p, images, texts, triples, mask)
    return jnp.sum(zimg @ extras["fused"].T)

  grads = jax.jit(jax.grad(loss))(params)
  flat = traverse_util.flatten_dict(grads["params"], sep="/")
  assert all(np.all(np.isfinite(g)) for g in flat.values())
  assert np.abs(flat["kee/projection"]).max() > 0
  assert np.abs(flat["txt/token_embedding/embedding"]).max() > 0


def test_triples_larger_than_configured_are_refused(sclip):
  _, model, params, *_ = sclip
  too_many = jnp.ones((1, T + 1, 3, S), jnp.int32)
  with pytest.raises(ValueError, match="max_triples"):
    model.apply(params, too_many, jnp.ones((1, T + 1), bool),
                method=StructureCLIPModel.embed_triples)
