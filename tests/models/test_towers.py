"""Tests for vlkg.models: shared layers, the ViT and text towers, and TwoTowers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from vlkg.models import layers
from vlkg.models.text_transformer import TextTransformer
from vlkg.models.two_towers import TwoTowers, build_model
from vlkg.models.vit import VisionTransformer

WIDTH, DEPTH, HEADS, EMBED = 32, 2, 4, 16
VOCAB, CTX = 16, 8
EOT = VOCAB - 1  # As in OpenAI's BPE, the EOT id is the largest id.


def tiny_config(**model_overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = dict(
      embed_dim=EMBED,
      image=dict(width=WIDTH, depth=DEPTH, heads=HEADS, patch_size=8),
      text=dict(
          width=WIDTH, depth=DEPTH, heads=HEADS, vocab_size=VOCAB,
          context_length=CTX,
      ),
  )
  config.model.update(model_overrides)
  return config


def txt_params(tiny) -> dict:
  """The text sub-tree of the shared parameters; every text-tower variant fits it."""
  return {"params": tiny[1]["params"]["txt"]}


def text_tower(**kw) -> TextTransformer:
  args = dict(
      vocab_size=VOCAB, context_length=CTX, width=WIDTH, depth=DEPTH, heads=HEADS,
      embed_dim=EMBED,
  )
  args.update(kw)
  return TextTransformer(**args)


@pytest.fixture(scope="module")
def images():
  return jax.random.normal(jax.random.key(1), (3, 16, 16, 3))


@pytest.fixture(scope="module")
def texts():
  return jnp.array(
      [[1, 5, 7, EOT, 0, 0, 0, 0],
       [1, 3, EOT, 0, 0, 0, 0, 0],
       [1, 2, 3, 4, 5, 6, 7, EOT]], jnp.int32)


def fake_init(model, *args) -> dict:
  """Random variables of the right tree, skipping the (slow to compile) init.

  eval_shape traces the same code as init, so names and shapes are the real ones;
  LayerNorm scales get 1 + noise so that activations keep a sensible size.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), *args)
  rng = np.random.default_rng(0)

  def fill(path, s):
    noise = rng.normal(0, 0.1, s.shape).astype(s.dtype)
    return noise + 1 if path[-1].key == "scale" else noise

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def tiny(images, texts):
  # One parameter tree for the whole file; the towers' sub-trees serve the
  # single-tower tests as well.
  model = build_model(tiny_config())
  return model, fake_init(model, images, texts)


# --- layers -----------------------------------------------------------------


def test_activations_match_reference():
  x = np.linspace(-4, 4, 17).astype(np.float32)
  exact = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
  np.testing.assert_allclose(layers.get_activation("gelu")(x), exact, atol=1e-6)
  np.testing.assert_allclose(
      layers.get_activation("quick_gelu")(x), x / (1 + np.exp(-1.702 * x)),
      rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError):
    layers.get_activation("relu")


def test_attention_matches_numpy_reference():
  b, l, w, h = 2, 5, 8, 2
  x = jax.random.normal(jax.random.key(0), (b, l, w))
  mask = np.ones((b, l), bool)
  mask[1, 3:] = False  # key padding on the second example
  attn = layers.MultiHeadAttention(num_heads=h)
  rng = np.random.default_rng(0)
  params = {
      "in_proj": {"kernel": rng.normal(0, 0.3, (w, 3 * w)).astype(np.float32),
                  "bias": rng.normal(0, 0.3, (3 * w,)).astype(np.float32)},
      "out_proj": {"kernel": rng.normal(0, 0.3, (w, w)).astype(np.float32),
                   "bias": rng.normal(0, 0.3, (w,)).astype(np.float32)},
  }
  shapes = jax.eval_shape(attn.init, jax.random.key(1), x, mask)["params"]
  assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(
      lambda a: a.shape, params)
  out = jax.jit(attn.apply)({"params": params}, x, mask)

  xn = np.asarray(x, np.float64)
  wi, bi = params["in_proj"]["kernel"], params["in_proj"]["bias"]
  wo, bo = params["out_proj"]["kernel"], params["out_proj"]["bias"]
  q, k, v = np.split(xn @ wi + bi, 3, axis=-1)
  split = lambda t: t.reshape(b, l, h, w // h).transpose(0, 2, 1, 3)
  q, k, v = split(q), split(k), split(v)
  logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(w // h)
  logits = np.where(mask[:, None, None, :], logits, -np.inf)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  ref = (p @ v).transpose(0, 2, 1, 3).reshape(b, l, w) @ wo + bo
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_fully_masked_rows_stay_finite():
  x = jax.random.normal(jax.random.key(0), (1, 4, 8))
  attn = layers.MultiHeadAttention(num_heads=2)
  params = {"params": {
      "in_proj": {"kernel": jnp.ones((8, 24)), "bias": jnp.zeros(24)},
      "out_proj": {"kernel": jnp.ones((8, 8)), "bias": jnp.zeros(8)}}}
  out = jax.jit(attn.apply)(params, x, jnp.zeros((1, 4), bool))
  assert np.all(np.isfinite(out))


# --- TwoTowers --------------------------------------------------------------


def test_param_tree_names_and_shapes(tiny):
  _, params = tiny
  flat = {k: v.shape for k, v in
          traverse_util.flatten_dict(params["params"], sep="/").items()}
  expected = {
      "img/conv1/kernel": (8, 8, 3, WIDTH),
      "img/class_embedding": (WIDTH,),
      "img/positional_embedding": ((16 // 8) ** 2 + 1, WIDTH),
      "img/ln_pre/scale": (WIDTH,),
      "img/transformer/resblocks_0/ln_1/scale": (WIDTH,),
      "img/transformer/resblocks_0/attn/in_proj/kernel": (WIDTH, 3 * WIDTH),
      "img/transformer/resblocks_0/attn/in_proj/bias": (3 * WIDTH,),
      "img/transformer/resblocks_0/attn/out_proj/kernel": (WIDTH, WIDTH),
      "img/transformer/resblocks_1/ln_2/bias": (WIDTH,),
      "img/transformer/resblocks_1/mlp/c_fc/kernel": (WIDTH, 4 * WIDTH),
      "img/transformer/resblocks_1/mlp/c_proj/kernel": (4 * WIDTH, WIDTH),
      "img/ln_post/scale": (WIDTH,),
      "img/proj": (WIDTH, EMBED),
      "txt/token_embedding/embedding": (VOCAB, WIDTH),
      "txt/positional_embedding": (CTX, WIDTH),
      "txt/transformer/resblocks_1/attn/in_proj/kernel": (WIDTH, 3 * WIDTH),
      "txt/ln_final/bias": (WIDTH,),
      "txt/text_projection": (WIDTH, EMBED),
      "logit_scale": (),
      "logit_bias": (),
  }
  for path, shape in expected.items():
    assert flat.get(path) == shape, path
  assert "img/conv1/bias" not in flat
  assert not any("resblocks_2" in k for k in flat)


def test_initial_values(tiny):
  model, _ = tiny
  # Only the scalars: TwoTowers creates them in setup, the towers lazily.
  scalars = model.init(jax.random.key(0), method=TwoTowers.scalars)["params"]
  np.testing.assert_allclose(scalars["logit_scale"], math.log(1 / 0.07), rtol=1e-6)
  assert float(scalars["logit_bias"]) == 0.0
  out = model.apply({"params": scalars}, method=TwoTowers.scalars)
  np.testing.assert_allclose(out["logit_scale"], 1 / 0.07, rtol=1e-5)


def test_joint_call_shapes_norms_and_tokens(tiny, images, texts):
  model, params = tiny
  zimg, ztxt, extras = model.apply(params, images, texts, return_tokens=True)
  assert zimg.shape == (3, EMBED) and ztxt.shape == (3, EMBED)
  assert zimg.dtype == jnp.float32 and ztxt.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(zimg, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(ztxt, axis=-1), 1.0, rtol=1e-5)
  assert extras["img_tokens"].shape == (3, 4, EMBED)
  assert extras["txt_tokens"].shape == (3, CTX, EMBED)
  np.testing.assert_allclose(
      extras["logit_scale"], np.exp(params["params"]["logit_scale"]), rtol=1e-5)
  # The text embedding is the normalised token at the EOT (argmax) position.
  eot_rows = np.asarray(extras["txt_tokens"])[np.arange(3), np.argmax(texts, -1)]
  np.testing.assert_allclose(
      ztxt, eot_rows / np.linalg.norm(eot_rows, axis=-1, keepdims=True),
      rtol=1e-5, atol=1e-6)


def test_each_tower_alone_equals_joint_call(tiny, images, texts):
  model, params = tiny
  zimg, ztxt, _ = model.apply(params, images, texts)
  zimg_only, none_t, extras = model.apply(params, images, None)
  none_i, ztxt_only, _ = model.apply(params, None, texts)
  assert none_t is None and none_i is None
  assert "logit_scale" in extras
  np.testing.assert_allclose(zimg_only, zimg, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ztxt_only, ztxt, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      model.apply(params, images, method=TwoTowers.embed_images), zimg,
      rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      model.apply(params, texts, method=TwoTowers.embed_texts), ztxt,
      rtol=1e-6, atol=1e-6)
  words = model.apply(params, texts, method=TwoTowers.embed_text_tokens)
  table = params["params"]["txt"]["token_embedding"]["embedding"]
  np.testing.assert_array_equal(words, np.asarray(table)[np.asarray(texts)])


def test_logit_scale_is_clipped_at_100(tiny, images, texts):
  model, params = tiny
  p = jax.tree_util.tree_map(lambda x: x, params)  # shallow copy of the tree
  p["params"]["logit_scale"] = jnp.asarray(math.log(1000.0), jnp.float32)
  _, _, extras = model.apply(p, images, None)
  np.testing.assert_allclose(extras["logit_scale"], 100.0, rtol=1e-6)
  p["params"]["logit_scale"] = jnp.asarray(math.log(50.0), jnp.float32)
  _, _, extras = model.apply(p, images, None)
  np.testing.assert_allclose(extras["logit_scale"], 50.0, rtol=1e-5)


def test_a_logit_scale_floor_holds_the_temperature_fixed():
  model = build_model(tiny_config(min_logit_scale=30.0))
  scalars = model.init(jax.random.key(0), method=TwoTowers.scalars)["params"]

  def effective(log_scale):
    p = {**scalars, "logit_scale": log_scale}
    return model.apply({"params": p}, method=TwoTowers.scalars)["logit_scale"]

  # Below the floor (CLIP's initial 1/0.07): the floor, and no gradient to the param.
  np.testing.assert_allclose(effective(scalars["logit_scale"]), 30.0, rtol=1e-6)
  assert float(jax.grad(effective)(scalars["logit_scale"])) == 0.0
  # Between floor and ceiling the scale is learned: exp(log 50) with its gradient.
  np.testing.assert_allclose(effective(jnp.float32(math.log(50.0))), 50.0, rtol=1e-5)
  np.testing.assert_allclose(jax.grad(effective)(jnp.float32(math.log(50.0))), 50.0,
                             rtol=1e-5)


def test_build_model_reads_inits_and_dtype(tiny, images, texts):
  model = build_model(tiny_config(dtype="bfloat16"), init_logit_scale=math.log(10.0),
                      init_logit_bias=-10.0)
  # Only the scalars: TwoTowers creates them in setup, the towers lazily.
  scalars = model.init(jax.random.key(0), method=TwoTowers.scalars)["params"]
  np.testing.assert_allclose(scalars["logit_scale"], math.log(10.0), rtol=1e-6)
  assert float(scalars["logit_bias"]) == -10.0
  assert model.dtype == jnp.bfloat16 and model.param_dtype == jnp.float32
  # float32 parameters drive bf16 compute; embeddings come back float32.
  _, params = tiny
  zimg, ztxt, _ = jax.jit(model.apply)(params, images, texts)
  assert zimg.dtype == jnp.float32 and ztxt.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(ztxt, axis=-1), 1.0, rtol=1e-3)
  ref_img, ref_txt, _ = tiny[0].apply(params, images, texts)
  np.testing.assert_allclose(zimg, ref_img, atol=0.05)
  np.testing.assert_allclose(ztxt, ref_txt, atol=0.05)


# --- ViT --------------------------------------------------------------------


@pytest.mark.parametrize("pool_type", ["cls", "gap"])
def test_vit_pooling_and_tokens(tiny, images, pool_type):
  vit = VisionTransformer(patch_size=8, width=WIDTH, depth=DEPTH, heads=HEADS,
                          embed_dim=EMBED, pool_type=pool_type)
  params = {"params": tiny[1]["params"]["img"]}
  emb, tokens = vit.apply(params, images, return_tokens=True)
  assert emb.shape == (3, EMBED) and tokens.shape == (3, 4, EMBED)
  np.testing.assert_allclose(vit.apply(params, images), emb, rtol=1e-6)
  gap = np.asarray(tokens).mean(axis=1)
  if pool_type == "gap":
    np.testing.assert_allclose(emb, gap, rtol=1e-5, atol=1e-5)
  else:
    assert not np.allclose(emb, gap, atol=1e-3)
  emb2 = vit.apply(params, images.at[:, 0, 0, 0].add(1.0))
  assert not np.allclose(emb, emb2, atol=1e-4)


# --- text tower -------------------------------------------------------------


def test_causal_eot_pooling_ignores_tokens_after_eot(tiny, texts):
  txt = text_tower(causal=True, pool="eot", eot_id=EOT)
  params = txt_params(tiny)
  emb, tokens = txt.apply(params, texts, return_tokens=True)
  # Fill the padding after EOT with real tokens: invisible to a causal EOT query.
  altered = texts.at[0, 5:].set(7).at[1, 4].set(9)
  emb2 = txt.apply(params, altered)
  np.testing.assert_allclose(emb2, emb, rtol=1e-5, atol=1e-6)
  # But a token before the EOT matters.
  emb3 = txt.apply(params, texts.at[0, 1].set(6))
  assert not np.allclose(emb3[0], emb[0], atol=1e-4)
  np.testing.assert_allclose(emb3[1:], emb[1:], rtol=1e-5, atol=1e-6)


def test_causal_outputs_do_not_see_later_tokens(tiny, texts):
  txt = text_tower(causal=True)
  params = txt_params(tiny)
  _, tokens = txt.apply(params, texts, return_tokens=True)
  _, tokens2 = txt.apply(params, texts.at[2, 5].set(11), return_tokens=True)
  np.testing.assert_allclose(tokens2[2, :5], tokens[2, :5], rtol=1e-5, atol=1e-6)
  assert not np.allclose(tokens2[2, 5:], tokens[2, 5:], atol=1e-4)
  # Bidirectional: the same change reaches earlier positions.
  bidir = text_tower(causal=False, pool="last")
  _, t_b = bidir.apply(params, texts, return_tokens=True)
  _, t_b2 = bidir.apply(params, texts.at[2, 5].set(11), return_tokens=True)
  assert not np.allclose(t_b2[2, :5], t_b[2, :5], atol=1e-4)


def test_bidirectional_last_pooling_masks_padding(tiny, texts):
  txt = text_tower(causal=False, pool="last", pad_id=0)
  params = txt_params(tiny)
  emb, tokens = txt.apply(params, texts, return_tokens=True)
  last = np.array([3, 2, 7])  # last non-pad positions of the fixture
  np.testing.assert_allclose(emb, np.asarray(tokens)[np.arange(3), last],
                             rtol=1e-6, atol=1e-6)
  # Same sequences padded with a different pad id (and a tower told so): pad
  # positions are masked keys, so their embeddings cannot leak in.
  repadded = jnp.where(texts == 0, 13, texts)
  emb2 = text_tower(causal=False, pool="last", pad_id=13).apply(params, repadded)
  np.testing.assert_allclose(emb2, emb, rtol=1e-5, atol=1e-6)
  # Control: pooling at a fixed (EOT) position, treating the zeros as real tokens
  # (pad_id=14 never occurs) changes exactly the padded rows.
  eot_masked = text_tower(causal=False, pool="eot", eot_id=EOT, pad_id=0)
  eot_unmasked = text_tower(causal=False, pool="eot", eot_id=EOT, pad_id=14)
  e_m, e_u = eot_masked.apply(params, texts), eot_unmasked.apply(params, texts)
  assert not np.allclose(e_m[:2], e_u[:2], atol=1e-4, rtol=0)
  np.testing.assert_allclose(e_m[2], e_u[2], rtol=1e-5, atol=1e-6)


def test_eot_pool_positions(tiny, texts):
  # eot_id=None -> argmax(ids); with an explicit eot_id smaller than other ids,
  # the first EOT is used; without any EOT, the last non-pad token.
  ids = jnp.array(
      [[1, 12, 9, 4, 0, 0, 0, 0],     # EOT(9) at 2, max id at 1
       [1, 9, 3, 9, 0, 0, 0, 0],      # first of two EOTs: 1
       [1, 2, 3, 4, 5, 0, 0, 0]],     # no EOT: last non-pad 4
      jnp.int32)
  for eot_id, expected in [(None, [1, 1, 4]), (9, [2, 1, 4])]:
    txt = text_tower(eot_id=eot_id)
    params = txt_params(tiny)
    np.testing.assert_array_equal(
        txt.apply(params, ids, method=TextTransformer.pool_index), expected)
    emb, tokens = txt.apply(params, ids, return_tokens=True)
    np.testing.assert_allclose(emb, np.asarray(tokens)[np.arange(3), expected],
                               rtol=1e-6, atol=1e-6)


def test_conv_stem_params_grid_and_shift_equivariance():
  """The convolutional stem (Xiao et al. 2021) keeps the ViT's token grid: 3 stride-2
  3x3 convs for p = 8 with channels doubling up to width, then a 1x1 ``conv1``; and
  shifting the image by p pixels shifts the token grid by one cell (interior)."""
  vit = VisionTransformer(patch_size=8, width=128, depth=1, heads=2, embed_dim=16,
                          stem="conv")
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 64, 3))
  params = jax.jit(vit.init)(jax.random.PRNGKey(1), images)["params"]
  shapes = {k: v["kernel"].shape for k, v in params.items() if "conv" in k}
  assert shapes == {"stem_conv0": (3, 3, 3, 16), "stem_conv1": (3, 3, 16, 32),
                    "stem_conv2": (3, 3, 32, 64), "conv1": (1, 1, 64, 128)}

  @jax.jit
  def grid(x):
    z, state = vit.apply({"params": params}, x,
                         capture_intermediates=lambda m, _: m.name == "conv1")
    return z, state["intermediates"]["conv1"]["__call__"][0]

  z, tokens = grid(images)
  assert z.shape == (2, 16)

  assert tokens.shape == (2, 8, 8, 128)
  _, shifted = grid(jnp.roll(images, 8, axis=1))
  # Away from the borders (where SAME padding differs), row r of the shifted image's
  # grid is row r - 1 of the original's.
  np.testing.assert_allclose(shifted[:, 3:7, 2:6], tokens[:, 2:6, 2:6], atol=1e-5)


def test_conv_stem_needs_power_of_two_patches():
  vit = VisionTransformer(patch_size=6, width=32, depth=1, heads=2, embed_dim=8,
                          stem="conv")
  with pytest.raises(ValueError, match="power-of-two"):
    vit.init(jax.random.PRNGKey(0), jnp.zeros((1, 36, 36, 3)))
  with pytest.raises(ValueError, match="stem must be"):
    VisionTransformer(patch_size=8, width=32, depth=1, heads=2, embed_dim=8,
                      stem="resnet").init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


def test_every_method_model_keeps_the_configs_towers():
  """``tower_fields``: each method's model carries ``config.model``'s towers."""
  from configs import reavl as reavl_config
  from vlkg.methods import knowledge_clip, loupe, reavl, structure_clip
  from vlkg.models import two_towers
  config = reavl_config.get_config("smoke")
  config.model.dtype = "bfloat16"
  want = two_towers.tower_fields(two_towers.build_model(config))
  assert set(want) == {"image", "text", "embed_dim", "init_logit_scale",
                       "init_logit_bias", "max_logit_scale", "min_logit_scale",
                       "dtype", "param_dtype", "attention"}
  for module in (reavl, structure_clip, loupe, knowledge_clip):
    got = two_towers.tower_fields(module.build_model(config))
    assert got == want, module.__name__
