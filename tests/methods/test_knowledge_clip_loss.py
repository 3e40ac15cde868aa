"""Knowledge-CLIP's objectives against independent numpy computations, and the
loss function's parts: weights, masking, the frozen teacher, the triplet batch."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlkg import config as config_lib, methods
from vlkg.data import kg_table
from vlkg.methods import knowledge_clip as kc
from vlkg.methods import knowledge_clip_loss as L
from vlkg.methods import knowledge_clip_step as step_lib
from vlkg.models import knowledge_fusion as F


def _unit(rng, *shape):
  x = rng.normal(size=shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x, axis=-1):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def test_entity_nce_against_numpy():
  rng = np.random.default_rng(0)
  q, c = _unit(rng, 5, 8), _unit(rng, 7, 8)
  targets = np.array([0, 3, 6, 2, 5])
  cand_ids = np.array([10, 11, 10, 12, 13, 11, 14])
  query_ids = cand_ids[targets]
  valid = np.array([True, True, False, True, True])
  loss, acc = L.entity_nce(jnp.asarray(q), jnp.asarray(c), jnp.asarray(targets),
                           jnp.asarray(query_ids), jnp.asarray(cand_ids),
                           jnp.asarray(valid), 10.0)
  losses, hits = [], []
  for i in range(5):
    if not valid[i]:
      continue
    # The same entity elsewhere (10 at 0 and 2, 11 at 1 and 5) is not a negative.
    keep = [j for j in range(7) if j == targets[i] or cand_ids[j] != query_ids[i]]
    logits = 10.0 * c[keep] @ q[i]
    t = keep.index(targets[i])
    losses.append(-(logits[t] - np.log(np.exp(logits).sum())))
    hits.append(np.argmax(logits) == t)
  assert float(loss) == pytest.approx(np.mean(losses), rel=1e-5)
  assert float(acc) == pytest.approx(np.mean(hits))
  zero, _ = L.entity_nce(jnp.asarray(q), jnp.asarray(c), jnp.asarray(targets),
                         jnp.asarray(query_ids), jnp.asarray(cand_ids),
                         jnp.zeros(5, bool), 10.0)
  assert float(zero) == 0.0


def test_relation_ce_against_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, 6)).astype(np.float32)
  logits[0, 5] = 50.0  # past num_relations: never predicted, not in the softmax
  labels = np.array([1, 0, 3, 2])
  valid = np.array([True, False, True, True])
  loss, acc = L.relation_ce(jnp.asarray(logits), jnp.asarray(labels), 4, jnp.asarray(valid))
  lp = _log_softmax(logits[:, :4])
  want = -np.mean([lp[i, labels[i]] for i in range(4) if valid[i]])
  assert float(loss) == pytest.approx(want, rel=1e-5)
  hits = [np.argmax(logits[i, :4]) == labels[i] for i in range(4) if valid[i]]
  assert float(acc) == pytest.approx(np.mean(hits))


def test_kd_kl_against_numpy_and_no_teacher_gradient():
  rng = np.random.default_rng(2)
  s, t = rng.normal(size=(5, 5)) * 3, rng.normal(size=(5, 5)) * 3
  want = 0.0
  for axis in (1, 0):
    lt, ls = _log_softmax(t, axis), _log_softmax(s, axis)
    want += 0.5 * np.mean(np.sum(np.exp(lt) * (lt - ls), axis=axis))
  assert float(L.kd_kl(jnp.asarray(s), jnp.asarray(t))) == pytest.approx(want, rel=1e-5)
  assert float(L.kd_kl(jnp.asarray(s), jnp.asarray(s))) == pytest.approx(0.0, abs=1e-6)
  g_teacher = jax.grad(lambda t_: L.kd_kl(jnp.asarray(s), t_))(jnp.asarray(t))
  assert not np.asarray(g_teacher).any()


def test_pool_grid_against_numpy():
  x = np.random.default_rng(3).normal(size=(2, 16, 5)).astype(np.float32)
  grid = x.reshape(2, 4, 4, 5)
  want = np.stack([grid[:, i:i + 2, j:j + 2].mean(axis=(1, 2))
                   for i in (0, 2) for j in (0, 2)], axis=1)
  np.testing.assert_allclose(step_lib.pool_grid(jnp.asarray(x), 2), want, rtol=1e-6)
  assert step_lib.pool_grid(jnp.asarray(x), 1) is not None
  with pytest.raises(ValueError, match="fusion_image_pool=3"):
    step_lib.pool_grid(jnp.asarray(x), 3)


# ------------------------------------------------------------- the loss function


class _Tok:
  pad_id, eos_id = 0, 3

  def encode(self, texts):
    out = np.zeros((len(texts), 32), np.int32)
    for i, text in enumerate(texts):
      ids = [4 + sum(map(ord, w)) % 60 for w in text.split()][:31] + [3]
      out[i, :len(ids)] = ids
    return out


def _table():
  b = kg_table.Builder(32)
  rng = np.random.default_rng(0)
  words = ["red", "scarlet", "color", "square", "shape", "warm color", "blue", "azure"]
  for w, x in zip(words, words[1:]):
    b.fact(b.text(w), "related to", b.text(x))
  b.fact(b.text("scarlet"), "alias of", b.text("red"))
  b.fact(b.text("azure"), "alias of", b.text("blue"))
  images = [b.image(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), f"object {k}")
            for k in range(6)]
  for k, im in enumerate(images):
    b.fact(im, "has color", b.text(["red", "blue"][k % 2]))
    b.fact(b.text(["square", "shape"][k % 2]), "shown by", im)
    b.fact(im, "left of", images[(k + 1) % 6])
  return b.finish(seed=0, heldout_fraction=0.0, max_neighbours=8)


@functools.lru_cache(maxsize=None)
def _setup(extra: str = ""):
  config = config_lib.get_config(
      "knowledge_clip", "smoke,model.image_size=32,model.text.vocab_size=64,"
      "knowledge_clip.kg_text_text=4,knowledge_clip.kg_mixed=4,"
      "knowledge_clip.kg_image_image=2,knowledge_clip.fusion_depth=1" + extra)
  model = kc.build_model(config)
  params = methods.init_params(model, config, jax.random.key(0))
  return config, model, params


def _batch(b=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.normal(size=(b, 32, 32, 3)), jnp.float32),
          "text": jnp.asarray(_Tok().encode([f"a {w} shape" for w in "abcdefgh"[:b]])),
          "kg_draw": jnp.asarray(rng.integers(0, 2**31 - 1, (b, 3)), jnp.int32)}


def _towers(params, factor=1.0):
  return {k: jax.tree.map(lambda x: np.asarray(x) * np.float32(factor), params[k])
          for k in ("img", "txt", "logit_scale", "logit_bias")}


def test_the_loss_is_the_weighted_sum_of_its_terms():
  config, model, params = _setup(",knowledge_clip.e2r_weight=0.5,knowledge_clip.kd_weight=2.0")
  loss_fn = kc.make_loss_fn(model, config, table=_table(), tokenizer=_Tok(),
                            teacher=_towers(params, 1.1))
  loss, m = jax.jit(lambda p, b, r, c: loss_fn(p, b, r, 0, c))(
      params, _batch(), jax.random.key(3), loss_fn.constants)
  assert set(kc.WEIGHTS) <= set(m)
  assert all(np.isfinite(float(m[k])) and float(m[k]) > 0 for k in kc.WEIGHTS)
  want = sum(float(m[k]) * w for k, w in zip(kc.WEIGHTS, (1, 1, 0.5, 1, 2.0)))
  assert float(loss) == pytest.approx(want, rel=1e-5)


def test_kd_is_zero_for_the_starting_params_and_off_without_a_teacher():
  config, model, params = _setup()
  loss_fn = kc.make_loss_fn(model, config, table=_table(), tokenizer=_Tok(),
                            teacher=_towers(params))
  # The teacher is a constant: the gradient has the params' tree only.
  (_, m), grads = jax.jit(jax.value_and_grad(
      lambda p, c: loss_fn(p, _batch(), jax.random.key(0), 0, c), has_aux=True))(
          params, loss_fn.constants)
  assert float(m["kd"]) == pytest.approx(0.0, abs=1e-6)
  assert set(grads) == set(params) and float(jnp.abs(grads["kfusion"]["role_embedding"]).sum()) > 0
  no_teacher = kc.make_loss_fn(model, config, table=_table(), tokenizer=_Tok(), teacher=None)
  assert "teacher" not in no_teacher.constants
  assert set(no_teacher.constants) == set(loss_fn.constants) - {"teacher"}


def test_triplet_batch_targets_slots_and_groups():
  config, model, params = _setup()
  table = _table()
  c = step_lib.constants(table, _Tok(), entity_len=8, max_relations=64, neighbours=4)
  n = step_lib.counts(c, {"text_text": 4, "mixed": 4, "image_image": 2}, 8)
  choices = {g: jnp.asarray(np.arange(k) % 3) for g, k in n.items()}
  batch = _batch()
  out = jax.jit(lambda p, d, c_: model.apply(
      {"params": p}, batch["image"], batch["text"], d, c_, choices, n, pad_id=0,
      g2e_stop_gradient=True, method=step_lib.forward))(params, batch["kg_draw"], c)
  assert out["zimg"].shape == out["ztxt"].shape == (8, config.model.embed_dim)
  ids = np.asarray(out["candidate_ids"])
  # Text candidates first (2 * 4 text-text + 4 mixed), then images (4 + 2 * 2).
  assert ids.shape == (12 + 8,)
  assert not table.is_image[ids[:12]].any() and table.is_image[ids[12:]].all()
  for g, v in out["groups"].items():
    target, entity = np.asarray(v["e2e_target"]), np.asarray(v["e2e_id"])
    assert (ids[target] == entity).all(), g
    # The masked entity is the head (choice 0) or the tail (choice 1) of its triplet.
    h, r, t = (np.asarray(x) for x in step_lib._resolve(c, _batch()["kg_draw"], g, n[g]))
    ch = np.asarray(choices[g])
    assert (entity[ch == 0] == h[ch == 0]).all() and (entity[ch == 1] == t[ch == 1]).all()
    assert (np.asarray(v["head"]) == h).all() and (np.asarray(v["relation"]) == r).all()
    assert (np.asarray(v["e2r_valid"]) == (ch == 2)).all()
    assert (ids[np.asarray(v["head_index"])] == h).all()
  assert out["propagated"].shape == (10, config.model.embed_dim)


def test_a_masked_slot_hides_its_content():
  config, model, params = _setup()
  rng = np.random.default_rng(0)
  d = config.model.embed_dim
  a, b = rng.normal(size=(2, 3, d)), rng.normal(size=(2, 5, d))
  ok_a, ok_b = np.ones((2, 3), bool), np.ones((2, 5), bool)
  ok_a[1, 2] = False
  role_a, masked = jnp.array([F.HEAD, F.TAIL]), jnp.array([True, True])
  no = jnp.zeros(2, bool)
  rel = rng.normal(size=(2, d))

  def fuse(a_, ok):
    return model.apply({"params": params}, jnp.asarray(a_), jnp.asarray(ok), F.TEXT,
                       role_a, masked, jnp.asarray(rel), no, jnp.asarray(b),
                       jnp.asarray(ok_b), F.IMAGE, 2 - role_a, no, method=F.KnowledgeCLIPModel.fuse)

  one = fuse(a, ok_a)
  other = fuse(rng.normal(size=a.shape), np.ones((2, 3), bool))  # other content, length
  for key in ("a", "b", "e2e_a", "e2r"):
    np.testing.assert_allclose(one[key], other[key], atol=1e-5)
  unmasked = model.apply({"params": params}, jnp.asarray(a), jnp.asarray(ok_a), F.TEXT,
                         role_a, no, jnp.asarray(rel), no, jnp.asarray(b),
                         jnp.asarray(ok_b), F.IMAGE, 2 - role_a, no,
                         method=F.KnowledgeCLIPModel.fuse)
  assert np.abs(np.asarray(unmasked["b"]) - np.asarray(one["b"])).max() > 1e-3


def test_config_checks_and_fields():
  with pytest.raises(ValueError, match="mask_probs"):
    kc._cfg(config_lib.get_config("knowledge_clip",
                                  "smoke,knowledge_clip.mask_probs=(0.5,0.4,0.2)"))
  config = config_lib.get_config("knowledge_clip", "smoke")
  (field,) = kc.fields(config)
  assert [f.to_json() for f in field.features] == [
      {"name": "kg_draw", "dtype": "int32", "shape": [3]}]
  rng = np.random.default_rng(0)
  draws = field.make(None, rng)["kg_draw"]
  assert draws.dtype == np.int32 and draws.min() >= 0
  with pytest.raises(ValueError, match="max_relations"):
    step_lib.constants(_table(), _Tok(), entity_len=8, max_relations=2, neighbours=4)
