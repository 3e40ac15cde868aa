"""Tests for the towers' keep-masks: removing players through the attention mask.

LOUPE's value function (LOUPE, Li et al., NeurIPS 2022 "Game") keeps only the players of a coalition.
A removed patch or token must be as good as absent: the kept tokens' outputs equal
those of a run on the physically gathered subset (positional embeddings gathered
the same way), which is what every test below compares against.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlkg.models import layers
from vlkg.models.text_transformer import TextTransformer
from vlkg.models.two_towers import TwoTowers
from vlkg.models.vit import VisionTransformer

WIDTH, DEPTH, HEADS, EMBED = 16, 2, 2, 8
VOCAB, CTX, EOT = 12, 8, 11
TOL = dict(rtol=1e-5, atol=1e-5)


def random_params(module, *args) -> dict:
  """Random variables of the module's real tree (LayerNorm scales near 1)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
  rng = np.random.default_rng(0)

  def fill(path, s):
    noise = rng.normal(0, 0.3, s.shape).astype(s.dtype)
    return noise + 1 if path[-1].key == "scale" else noise

  return jax.tree_util.tree_map_with_path(fill, shapes)


def apply_sub(module, params, *args):
  return module.apply({"params": params}, *args)


# --- ViT --------------------------------------------------------------------


def vit(**kw) -> VisionTransformer:
  return VisionTransformer(patch_size=4, width=WIDTH, depth=DEPTH, heads=HEADS,
                           embed_dim=EMBED, **kw)


@pytest.fixture(scope="module")
def images():
  return jax.random.normal(jax.random.key(1), (2, 12, 8, 3))  # 3 x 2 = 6 patches


@pytest.fixture(scope="module")
def patch_mask():
  return jnp.array([[1, 0, 1, 1, 0, 1],
                    [0, 0, 0, 1, 0, 0]], bool)


@functools.partial(jax.jit, static_argnums=(0, 3))
def vit_on_subset(model, params, images, keep):
  """The ViT on the kept patches only, built from its parts: one example.

  ``keep`` is a tuple of bools (static: it fixes the subset's length).
  """
  # The patch embeddings, whatever the stem: the output of ``conv1``.
  _, state = model.apply(params, images[None], capture_intermediates=(
      lambda mdl, _: mdl.name == "conv1"))
  patches = state["intermediates"]["conv1"]["__call__"][0][0]
  patches = patches.reshape(-1, WIDTH)
  p = params["params"]
  idx = np.flatnonzero(keep)
  x = jnp.concatenate([p["class_embedding"][None], patches[idx]], axis=0)
  x = x + p["positional_embedding"][np.concatenate([[0], idx + 1])]
  ln = layers.layer_norm(jnp.float32, jnp.float32)
  x = apply_sub(ln, p["ln_pre"], x[None])
  x = apply_sub(layers.Transformer(depth=DEPTH, num_heads=HEADS), p["transformer"], x)
  x = apply_sub(ln, p["ln_post"], x)[0]
  pooled = x[0] if model.pool_type == "cls" else x[1:].mean(0)
  return pooled @ p["proj"], x[1:] @ p["proj"]


@pytest.fixture(scope="module")
def vit_params(images):
  """One parameter tree per stem; the pooling type does not change the tree."""
  return {stem: random_params(vit(stem=stem), images) for stem in ("patch", "conv")}


@pytest.mark.parametrize("pool_type,stem", [("cls", "patch"), ("gap", "patch"),
                                            ("cls", "conv")])
def test_vit_patch_mask_equals_running_on_kept_patches(images, patch_mask, vit_params,
                                                       pool_type, stem):
  model = vit(pool_type=pool_type, stem=stem)
  params = vit_params[stem]
  emb, tokens = jax.jit(lambda p, x, m: model.apply(p, x, True, m))(
      params, images, patch_mask)
  for b in range(images.shape[0]):
    ref_emb, ref_tokens = vit_on_subset(model, params, images[b],
                                        tuple(np.asarray(patch_mask[b]).tolist()))
    np.testing.assert_allclose(emb[b], ref_emb, **TOL)
    np.testing.assert_allclose(tokens[b][np.asarray(patch_mask[b])], ref_tokens, **TOL)
  # Removing patches does change the result (the mask is not a no-op).
  full = model.apply(params, images)
  assert not np.allclose(full, emb, atol=1e-3)


def test_vit_all_kept_mask_equals_no_mask(images, vit_params):
  model = vit(pool_type="gap")
  params = vit_params["patch"]
  full, tok = model.apply(params, images, return_tokens=True)
  ones, tok1 = model.apply(params, images, return_tokens=True,
                           patch_mask=jnp.ones((2, 6), bool))
  np.testing.assert_allclose(ones, full, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(tok1, tok, rtol=1e-6, atol=1e-6)


def test_vit_no_kept_patch_stays_finite(images, vit_params):
  # Only the class token is left: "cls" pools it, "gap" has nothing and gives 0.
  for pool_type in ("cls", "gap"):
    model = vit(pool_type=pool_type)
    params = vit_params["patch"]
    emb = model.apply(params, images, patch_mask=jnp.zeros((2, 6), bool))
    assert np.all(np.isfinite(emb))
    if pool_type == "gap":
      np.testing.assert_array_equal(emb, 0.0)


def test_vit_patch_mask_shape_is_checked(images, vit_params):
  model = vit()
  params = vit_params["patch"]
  with pytest.raises(ValueError, match="patch_mask"):
    model.apply(params, images, patch_mask=jnp.ones((2, 5), bool))


# --- text tower -------------------------------------------------------------


def text(**kw) -> TextTransformer:
  args = dict(vocab_size=VOCAB, context_length=CTX, width=WIDTH, depth=DEPTH,
              heads=HEADS, embed_dim=EMBED, eot_id=EOT)
  args.update(kw)
  return TextTransformer(**args)


@pytest.fixture(scope="module")
def ids():
  return jnp.array([[2, 5, 7, 4, 9, EOT, 0, 0],
                    [2, 6, 8, EOT, 0, 0, 0, 0]], jnp.int32)


@pytest.fixture(scope="module")
def token_mask():
  # Row 0 also "removes" its EOT and a pad: both must be ignored.
  return jnp.array([[1, 0, 1, 0, 1, 0, 0, 1],
                    [0, 1, 1, 1, 1, 1, 1, 1]], bool)


def text_on_subset(model, params, ids, keep):
  """The text tower on the kept tokens only (EOT included): one sequence."""
  ids = np.asarray(ids)
  eot = int(np.argmax(ids == EOT))
  keep = np.asarray(keep).copy()
  keep[eot] = True
  keep &= ids != 0
  idx = np.flatnonzero(keep)
  emb, tokens = _text_on_subset(model, params, jnp.asarray(ids[idx]), tuple(idx),
                                int(np.flatnonzero(idx == eot)[0]))
  return emb, tokens, idx


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _text_on_subset(model, params, kept_ids, idx, eot):
  p = params["params"]
  idx = np.asarray(idx)
  x = p["token_embedding"]["embedding"][kept_ids]
  x = x + p["positional_embedding"][idx]
  k = len(idx)
  mask = jnp.tril(jnp.ones((k, k), bool)) if model.causal else jnp.ones((k, k), bool)
  x = apply_sub(layers.Transformer(depth=DEPTH, num_heads=HEADS), p["transformer"],
                x[None], mask[None, None])
  x = apply_sub(layers.layer_norm(jnp.float32, jnp.float32), p["ln_final"], x)[0]
  x = x @ p["text_projection"]
  return x[eot], x


@pytest.fixture(scope="module")
def text_params(ids):
  return random_params(text(), ids)


@pytest.mark.parametrize("causal", [True, False])
def test_text_token_mask_equals_running_on_kept_tokens(ids, token_mask, text_params,
                                                        causal):
  model = text(causal=causal)
  params = text_params
  emb, tokens = jax.jit(lambda p, x, m: model.apply(p, x, True, m))(
      params, ids, token_mask)
  for b in range(ids.shape[0]):
    ref_emb, ref_tokens, idx = text_on_subset(model, params, ids[b], token_mask[b])
    np.testing.assert_allclose(emb[b], ref_emb, **TOL)
    np.testing.assert_allclose(tokens[b][idx], ref_tokens, **TOL)
  assert not np.allclose(model.apply(params, ids)[0], emb[0], atol=1e-3)


def test_text_eot_and_pads_are_kept_whatever_the_mask_says(ids, token_mask,
                                                           text_params):
  model = text()
  params = text_params
  # Row 1 of the fixture only "removes" the SOT; marking its EOT and pads removed as
  # well changes nothing: the EOT is always a key, pads never are.
  emb = model.apply(params, ids, token_mask=token_mask)
  other = token_mask.at[1, 3:].set(False)
  np.testing.assert_allclose(model.apply(params, ids, token_mask=other), emb,
                             rtol=1e-6, atol=1e-6)
  # Pool positions are those of the unmasked ids.
  np.testing.assert_array_equal(
      model.apply(params, ids, method=TextTransformer.pool_index), [5, 3])
  # All kept = no mask.
  np.testing.assert_allclose(
      model.apply(params, ids, token_mask=jnp.ones_like(ids, bool)),
      model.apply(params, ids), rtol=1e-6, atol=1e-6)


# --- TwoTowers --------------------------------------------------------------


def test_two_towers_pass_the_masks_through(images, patch_mask, ids, token_mask):
  model = TwoTowers(
      image=dict(patch_size=4, width=WIDTH, depth=DEPTH, heads=HEADS),
      text=dict(vocab_size=VOCAB, context_length=CTX, width=WIDTH, depth=DEPTH,
                heads=HEADS, eot_id=EOT),
      embed_dim=EMBED)
  params = random_params(model, images, ids)
  zimg, ztxt, _ = model.apply(params, images, ids, patch_mask=patch_mask,
                              token_mask=token_mask)
  raw_img = vit().apply({"params": params["params"]["img"]}, images,
                        patch_mask=patch_mask)
  raw_txt = text().apply({"params": params["params"]["txt"]}, ids,
                         token_mask=token_mask)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  np.testing.assert_allclose(zimg, unit(raw_img), **TOL)
  np.testing.assert_allclose(ztxt, unit(raw_txt), **TOL)
  np.testing.assert_allclose(
      model.apply(params, images, patch_mask=patch_mask,
                  method=TwoTowers.embed_images), zimg, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      model.apply(params, ids, token_mask=token_mask, method=TwoTowers.embed_texts),
      ztxt, rtol=1e-6, atol=1e-6)
  # Defaults unchanged: no masks = the plain call.
  z0, t0, _ = model.apply(params, images, ids)
  np.testing.assert_array_equal(
      model.apply(params, images, method=TwoTowers.embed_images), z0)
  np.testing.assert_array_equal(
      model.apply(params, ids, method=TwoTowers.embed_texts), t0)
