"""Tests for the Structure-CLIP losses and its method-module interface."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from vlkg import methods
from vlkg.methods import structure_clip as sc
from vlkg.models.kee import StructureCLIPModel

# Hand-made similarities: image i (rows) vs caption j (columns).
SIM = np.array([[0.9, 0.5, 0.1],
                [0.8, 0.7, 0.0],
                [0.2, 0.3, 0.6]], np.float32)
# Worked by hand, per example i: (i2t term, t2i term).
#   margin 0.2, hardest: (0, .1) (.3, 0) (0, 0)                  -> 0.4 / 3
#   margin 0.5, hardest: (.1, .4) (.6, .3) (.2, 0)               -> 1.6 / 3
#   margin 0.5, mean:    rows .3 .4 .25, columns .5 .4 .05
#                        (0, .1) (.2, .2) (.15, 0)               -> 0.65 / 3
#   margin 0.2, mean: every term is <= 0                         -> 0


def np_hinge(sim, margin, hardest):
  """Loop-by-loop reference of the bidirectional VSE hinge, mean over i."""
  sim = np.asarray(sim, np.float64)
  n = len(sim)
  total = 0.0
  for i in range(n):
    row = [sim[i, j] for j in range(n) if j != i]
    col = [sim[j, i] for j in range(n) if j != i]
    pick = max if hardest else (lambda v: sum(v) / len(v))
    total += max(0.0, pick(row) + margin - sim[i, i])
    total += max(0.0, pick(col) + margin - sim[i, i])
  return total / n


def np_negclip(zimg, ztxt, zneg, scale, valid):
  zimg, ztxt, zneg = (np.asarray(a, np.float64) for a in (zimg, ztxt, zneg))
  n = len(zimg)
  i2t = t2i = 0.0
  for i in range(n):
    cands = [scale * zimg[i] @ ztxt[j] for j in range(n)]
    cands += [scale * zimg[i] @ zneg[j] for j in range(n) if valid[j]]
    i2t -= cands[i] - np.log(np.sum(np.exp(cands)))
    col = [scale * zimg[j] @ ztxt[i] for j in range(n)]
    t2i -= col[i] - np.log(np.sum(np.exp(col)))
  return (i2t / n + t2i / n) / 2


def unit(n, d, seed):
  z = np.random.default_rng(seed).normal(size=(n, d))
  return (z / np.linalg.norm(z, axis=-1, keepdims=True)).astype(np.float32)


# --- loss functions ------------------------------------------------------------


@pytest.mark.parametrize("margin,hardest,expected", [
    (0.2, True, 0.4 / 3), (0.5, True, 1.6 / 3), (0.5, False, 0.65 / 3),
    (0.2, False, 0.0)])
def test_vse_hinge_hand_made(margin, hardest, expected):
  got = sc.vse_hinge(SIM, margin, hardest)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  # SIM holds float32 roundings of the decimals above.
  np.testing.assert_allclose(np_hinge(SIM, margin, hardest), expected, atol=1e-7)


@pytest.mark.parametrize("hardest", [True, False])
def test_vse_hinge_random_matches_reference(hardest):
  sim = unit(7, 5, 0) @ unit(7, 5, 1).T
  np.testing.assert_allclose(sc.vse_hinge(sim, 0.2, hardest),
                             np_hinge(sim, 0.2, hardest), rtol=1e-5, atol=1e-6)
  assert float(sc.vse_hinge(sim[:1, :1], 0.2, hardest)) == 0.0


def test_margin_ranking_with_valid_mask():
  pos = np.array([0.5, 0.2, 0.9, 0.1], np.float32)
  neg = np.array([0.45, 0.4, 0.1, 0.9], np.float32)
  valid = np.array([True, True, True, False])
  # relu(neg - pos + 0.1) = .05, .3, 0, (.9 masked) -> .35 / 3
  np.testing.assert_allclose(sc.margin_ranking(pos, neg, 0.1, valid), 0.35 / 3,
                             rtol=1e-5)
  np.testing.assert_allclose(sc.margin_ranking(pos, neg, 0.1), (0.35 + 0.9) / 4,
                             rtol=1e-5)
  assert float(sc.margin_ranking(pos, neg, 0.1, np.zeros(4, bool))) == 0.0


def test_negclip_loss_matches_numpy():
  zimg, ztxt, zneg = unit(6, 4, 0), unit(6, 4, 1), unit(6, 4, 2)
  valid = np.array([True, False, True, True, False, True])
  for v in (valid, np.ones(6, bool)):
    loss, m = sc.negclip_loss(zimg, ztxt, zneg, jnp.float32(10.0), v)
    np.testing.assert_allclose(loss, np_negclip(zimg, ztxt, zneg, 10.0, v),
                               rtol=1e-5)
  # A negative identical to the true caption halves the positive's probability
  # mass; with a huge scale the loss tends to log 2 / 2 for that example's i2t.
  eye = np.eye(3, dtype=np.float32)
  loss, m = sc.negclip_loss(eye, eye, eye, jnp.float32(100.0), np.ones(3, bool))
  np.testing.assert_allclose(loss, np.log(2) / 2, rtol=1e-5)
  assert float(m["t2i_acc"]) == 1.0


def test_hinge_step_switch_inside_one_jit():
  traces = []

  @jax.jit
  def f(sim, step):
    traces.append(1)
    return sc.scheduled_hinge(sim, step, margin=0.5, mean_steps=100)

  np.testing.assert_allclose(f(SIM, jnp.int32(99)), 0.65 / 3, rtol=1e-5)
  np.testing.assert_allclose(f(SIM, jnp.int32(100)), 1.6 / 3, rtol=1e-5)
  np.testing.assert_allclose(f(SIM, jnp.int32(0)), 0.65 / 3, rtol=1e-5)
  assert len(traces) == 1


# --- the method module ---------------------------------------------------------

W, E, VOCAB, L, B, T, S = 16, 8, 20, 8, 4, 3, 3


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = "structure_clip"
  config.model = dict(
      image_size=16,
      embed_dim=E,
      image=dict(width=W, depth=1, heads=2, patch_size=8),
      text=dict(width=W, depth=1, heads=2, vocab_size=VOCAB, context_length=L,
                eot_id=VOCAB - 1),
  )
  config.input = dict(text_len=L)
  config.structure_clip = sc.default_config()
  config.structure_clip.update(kee_depth=1, max_triples=T, triple_tokens=S)
  config.structure_clip.update(overrides)
  return config


def make_batch(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  text = np.zeros((B, L), np.int32)
  neg = np.zeros((B, L), np.int32)
  for i in range(B):
    words = rng.integers(1, VOCAB - 1, size=4)
    text[i, :5] = [*words, VOCAB - 1]
    neg[i, :5] = [words[2], words[1], words[0], words[3], VOCAB - 1]  # a swap
  triples = rng.integers(1, VOCAB - 1, size=(B, T, 3, S)).astype(np.int32)
  triples[..., -1] = 0
  return {
      "image": rng.normal(size=(B, 16, 16, 3)).astype(np.float32),
      "text": text,
      "neg_text": neg,
      "neg_valid": np.array([True, True, False, True]),
      "triples": triples,
      "triples_valid": np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], bool),
  }


@pytest.fixture(scope="module")
def setup():
  config = tiny_config()
  model = sc.build_model(config)
  # Jitted: op-by-op init and apply take several times longer than compiling.
  params = jax.jit(lambda r: methods.init_params(model, config, r))(
      jax.random.key(0))
  batch = make_batch()
  feats = jax.jit(lambda p, b: model.apply(
      {"params": p}, b["image"], b["text"], b["neg_text"], b["triples"],
      b["triples_valid"], method=StructureCLIPModel.structure_features))(
          params, batch)
  return config, model, params, batch, jax.tree.map(np.asarray, feats)


def test_interface_and_config():
  assert methods.batch_keys(tiny_config()) == (
      "image", "text", "triples", "triples_valid", "neg_text", "neg_valid")
  triples, negs = sc.fields(tiny_config())
  assert triples.reads == {"max_triples": T, "triple_tokens": S} and triples.eval_texts
  assert [(f.name, f.shape) for f in negs.features] == [("neg_text", (L,)), ("neg_valid", ())]
  assert negs.reads["negatives"] == ("swap_attributes", "swap_relation")
  d = sc.default_config()
  assert (d["lam"], d["neg_weight"], d["hinge_margin"], d["rank_margin"],
          d["hinge_mean_steps"], d["kee_depth"], d["max_triples"],
          d["triple_tokens"], d["loss"]) == (0.2, 5.0, 0.2, 0.1, 100, 6, 6, 5, "hinge")
  model = sc.build_model(tiny_config(lam=0.3, renormalize=False))
  assert isinstance(model, StructureCLIPModel)
  assert (model.lam, model.renormalize, model.kee_depth, model.kee_heads) == (
      0.3, False, 1, 4)
  assert methods.load("structure_clip") is sc
  with pytest.raises(ValueError, match="loss"):
    sc.make_loss_fn(model, tiny_config(loss="infonce"))


def test_init_params_tree(setup):
  _, _, params, _, _ = setup
  assert set(params) == {"img", "txt", "logit_scale", "logit_bias", "kee"}
  flat = traverse_util.flatten_dict(params["kee"], sep="/")
  assert flat["projection"].shape == (W, E)
  assert "encoder/transformer/resblocks_0/attn/in_proj/kernel" in flat


def np_total(feats, batch, step, cfg):
  zimg, fused = feats["zimg"].astype(np.float64), feats["fused"].astype(np.float64)
  sim = zimg @ fused.T
  hinge = np_hinge(sim, cfg["hinge_margin"], hardest=step >= cfg["hinge_mean_steps"])
  pos = np.sum(zimg * feats["ztxt"], -1)
  neg = np.sum(zimg * feats["zneg"], -1)
  v = batch["neg_valid"]
  ranking = np.maximum(neg - pos + cfg["rank_margin"], 0)[v].mean()
  return hinge, ranking, (pos - neg)[v].mean()


def test_hinge_loss_fn_matches_reference_and_switches_in_one_jit(setup):
  config, model, params, batch, feats = setup
  cfg = config.structure_clip.to_dict()
  loss_fn = sc.make_loss_fn(model, config)
  traces = []

  def traced(p, b, r, s):
    traces.append(1)
    return loss_fn(p, b, r, s)

  f = jax.jit(traced)
  rng = jax.random.key(0)
  for step in (99, 100):
    loss, m = f(params, batch, rng, jnp.int32(step))
    hinge, ranking, margin = np_total(feats, batch, step, cfg)
    np.testing.assert_allclose(m["hinge"], hinge, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["ranking"], ranking, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["pos_neg_margin"], margin, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, hinge + 5.0 * ranking, rtol=1e-5, atol=1e-6)
    assert {"i2t_acc", "t2i_acc", "logit_scale"} <= set(m)
  assert len(traces) == 1
  # The two regimes really differ on this batch.
  assert abs(np_total(feats, batch, 99, cfg)[0]
             - np_total(feats, batch, 100, cfg)[0]) > 1e-4


def test_fused_features_are_what_the_paper_says(setup):
  _, model, _, batch, feats = setup
  u = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  ref = u(feats["ztxt"] + 0.2 * feats["zkee"])
  np.testing.assert_allclose(feats["fused"], ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(feats["zkee"][3], 0.0)  # no triple in row 3
  np.testing.assert_allclose(feats["neg_fused"], u(feats["zneg"] + 0.2 * feats["zkee"]),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("negclip_text", ["fused", "plain"])
def test_negclip_loss_fn_matches_reference(setup, negclip_text):
  config, model, params, batch, feats = setup
  config = tiny_config(loss="negclip", negclip_text=negclip_text)
  loss_fn = sc.make_loss_fn(model, config)
  loss, m = jax.jit(loss_fn)(params, batch, jax.random.key(0), jnp.int32(500))
  pos_key, neg_key = (("fused", "neg_fused") if negclip_text == "fused"
                      else ("ztxt", "zneg"))
  scale = min(np.exp(params["logit_scale"]), 100.0)
  nce = np_negclip(feats["zimg"], feats[pos_key], feats[neg_key], scale,
                   batch["neg_valid"])
  _, ranking, _ = np_total(feats, batch, 500, config.structure_clip.to_dict())
  np.testing.assert_allclose(m["nce"], nce, rtol=1e-5)
  np.testing.assert_allclose(loss, nce + 5.0 * ranking, rtol=1e-5)
  np.testing.assert_allclose(m["logit_scale"], scale, rtol=1e-5)


@pytest.mark.parametrize("row_share", [sc.PACK_ROW_SHARE, 0.01])
def test_packed_captions_give_the_unpacked_loss_and_gradients(setup, monkeypatch,
                                                             row_share):
  """The captions and negatives packed several to a row (or, when they do not fit,
  the fallback of a row each) give the loss, metrics and gradients of the text
  tower run on them one row each."""
  config, model, params, batch, _ = setup
  monkeypatch.setattr(sc, "PACK_ROW_SHARE", row_share)
  loss_fn = sc.make_loss_fn(model, config)
  # Three-token captions (two words and the end of text), two to a row of L = 8:
  # the 8 texts fit the share's 4 rows, not the 1 row of the small share.
  batch = dict(batch, text=np.zeros_like(batch["text"]), neg_text=np.zeros_like(batch["text"]))
  batch["text"][:, :3] = [[1 + i, 5 + i, VOCAB - 1] for i in range(B)]
  batch["neg_text"][:, :3] = [[5 + i, 1 + i, VOCAB - 1] for i in range(B)]

  def unpacked(p):
    f = model.apply({"params": p}, batch["image"], batch["text"], batch["neg_text"],
                    batch["triples"], batch["triples_valid"],
                    method=StructureCLIPModel.structure_features)
    pos = jnp.sum(f["zimg"] * f["ztxt"], -1)
    neg = jnp.sum(f["zimg"] * f["zneg"], -1)
    valid = jnp.asarray(batch["neg_valid"])
    hinge = sc.vse_hinge(f["zimg"] @ f["fused"].T, 0.2, hardest=True)
    return hinge + 5.0 * sc.margin_ranking(pos, neg, 0.1, valid)

  (loss, m), grads = jax.jit(jax.value_and_grad(
      lambda p: loss_fn(p, batch, None, jnp.int32(200)), has_aux=True))(params)
  ref_loss, ref_grads = jax.jit(jax.value_and_grad(unpacked))(params)
  assert float(m["packed"]) == (1.0 if row_share > 0.1 else 0.0)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max()))), grads, ref_grads)


def test_gradients_finite_and_reach_every_part(setup):
  config, model, params, batch, _ = setup
  loss_fn = sc.make_loss_fn(model, config)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch, None, jnp.int32(200))[0]))(
      params)
  flat = traverse_util.flatten_dict(grads, sep="/")
  assert all(np.all(np.isfinite(g)) for g in flat.values())
  for part in ("img/", "txt/", "kee/"):
    assert max(float(np.abs(g).max()) for k, g in flat.items()
               if k.startswith(part)) > 0, part
