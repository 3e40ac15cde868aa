"""Knowledge-CLIP's "CLIP + KG" ablation (``knowledge_clip.mode="captions"``): the
writing of triplets, CLIP's loss on their pairs against an independent numpy
computation, the towers alone, and old runs read as the full method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlkg import config as config_lib, preprocess
from vlkg.methods import knowledge_clip as kc
from vlkg.methods import knowledge_clip_captions as captions
from vlkg.methods import knowledge_clip_loss as L
from vlkg.methods import knowledge_clip_step as step_lib
from test_knowledge_clip_loss import _Tok, _batch, _setup, _table, _towers, _unit

CAPTIONS = ",knowledge_clip.mode='captions'"


def _pair_nce_numpy(a, b, a_ids, b_ids, scale):
  """Each direction's softmax over the candidates that are not true pairs too."""
  n = len(a)
  losses, hits = [], []
  for query, cand in ((a, b), (b, a)):
    for i in range(n):
      keep = [j for j in range(n)
              if j == i or (a_ids[j] != a_ids[i] and b_ids[j] != b_ids[i])]
      logits = scale * cand[keep] @ query[i]
      t = keep.index(i)
      losses.append(-(logits[t] - np.log(np.exp(logits - logits.max()).sum())
                      - logits.max()))
      hits.append(np.argmax(logits) == t)
  return np.mean(losses), np.mean(hits)


def test_pair_nce_against_numpy():
  rng = np.random.default_rng(0)
  a, b = _unit(rng, 6, 8), _unit(rng, 6, 8)
  # Pairs 0 and 3 share their caption, 1 and 4 their entity; 2, 5 are unique.
  a_ids, b_ids = np.array([7, 8, 9, 7, 10, 11]), np.array([0, 1, 2, 3, 1, 5])
  loss, acc = L.pair_nce(jnp.asarray(a), jnp.asarray(b), jnp.asarray(a_ids),
                         jnp.asarray(b_ids), 5.0)
  want, hits = _pair_nce_numpy(a, b, a_ids, b_ids, 5.0)
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert float(acc) == pytest.approx(hits)
  # Without duplicates it is CLIP's loss.
  from vlkg.methods import clip as clip_lib
  plain, _ = L.pair_nce(jnp.asarray(a), jnp.asarray(b), jnp.arange(6), jnp.arange(6), 5.0)
  assert float(plain) == pytest.approx(
      float(clip_lib.clip_loss(jnp.asarray(a), jnp.asarray(b), 5.0)[0]), rel=1e-6)


def test_triplets_are_written_with_the_image_side_left_out():
  table = _table()
  written = dict(zip(map(tuple, table.triplets.tolist()), captions.writings(table)))
  text = lambda k: table.entity_text[k]
  for (h, r, t), caption in written.items():
    rel = table.relations[r]
    if table.is_image[h] and table.is_image[t]:
      assert caption == ""
    elif table.is_image[h]:
      assert caption == f"{rel} {text(t)}"
    else:
      assert caption == f"{text(h)} {rel}"
  assert {"red related to", "scarlet alias of", "has color red", "square shown by",
          "left of"} - set(written.values()) == {"left of"}
  assert not any("object" in c for c in written.values())  # no image's description
  c = captions.constants(table, _Tok(), length=32)
  ids = c["caption_id"]
  same = captions.writings(table)[:, None] == captions.writings(table)[None]
  assert ((ids[:, None] == ids[None]) == same).all()
  distinct = sorted(set(written.values()))
  assert c["caption_tokens"].shape == (len(distinct), 32)
  np.testing.assert_array_equal(c["caption_tokens"][ids], _Tok().encode(
      list(captions.writings(table))))
  assert "neighbours" not in c and "relation_tokens" not in c


def test_captions_loss_against_numpy():
  config, model, params = _setup(CAPTIONS)
  table, tok = _table(), _Tok()
  loss_fn = kc.make_loss_fn(model, config, table=table, tokenizer=tok,
                            teacher=_towers(params, 1.1))
  batch = _batch()
  loss, m = jax.jit(lambda p, b, r, c: loss_fn(p, b, r, 0, c))(
      params, batch, jax.random.key(3), loss_fn.constants)

  # The pairs, resolved and written here from the table: (side a, side b), each a
  # list of strings (the text tower) or of image entity ids (the image tower).
  draws = np.asarray(batch["kg_draw"])
  name = table.entity_text
  sides = {}
  for k, (g, n) in enumerate((("text_text", 4), ("mixed", 4), ("image_image", 2))):
    train = table.training(g)
    h, r, t = table.triplets[train[draws[:n, k] % len(train)]].T
    rel = table.relations[r]
    if g == "text_text":
      sides[g] = ([f"{name[x]} {y}" for x, y in zip(h, rel)], list(name[t]), t)
    elif g == "mixed":
      said = [f"{y} {name[z]}" if table.is_image[x] else f"{name[x]} {y}"
              for x, y, z in zip(h, rel, t)]
      other = np.where(table.is_image[h], h, t)
      sides[g] = (said, other, other)
    else:
      sides[g] = (h, t, t)
  # Every text and every image in one call of its tower.
  strings = sorted({x for a, b, _ in sides.values() for x in (*a, *b) if isinstance(x, str)})
  tower = lambda method: jax.jit(lambda p, x: model.apply({"params": p}, x, method=method))
  z_text = dict(zip(strings, np.asarray(tower(type(model).embed_texts)(
      params, jnp.asarray(tok.encode(strings))))))
  z_image = np.asarray(tower(type(model).embed_images)(
      params, jnp.asarray(preprocess.normalize_images(table.images))))
  embed = lambda xs: np.stack([z_text[x] if isinstance(x, str)
                               else z_image[table.entity_image[x]] for x in xs])
  ids = lambda xs: np.unique(xs, return_inverse=True)[1] if isinstance(xs[0], str) else xs
  scale = float(model.apply({"params": params}, method=type(model).scalars)["logit_scale"])
  losses, hits, sizes = [], [], []
  for a, b, b_ids in sides.values():
    l, hit = _pair_nce_numpy(embed(a), embed(b), ids(a), np.asarray(b_ids), scale)
    losses.append(l), hits.append(hit), sizes.append(len(a))
  want = np.average(losses, weights=sizes)
  assert float(m["kg_clip"]) == pytest.approx(want, rel=1e-4)
  assert float(m["kg_clip_acc"]) == pytest.approx(np.average(hits, weights=sizes),
                                                   abs=1e-6)
  # L = clip * (CLIP + CLIP on the pairs) + kd * KD; E2E, E2R, G2E are off.
  assert float(m["e2e"]) == float(m["e2r"]) == float(m["g2e"]) == 0.0
  assert float(m["kd"]) > 0 and "e2e_acc" not in m
  assert float(loss) == pytest.approx(float(m["clip"] + m["kg_clip"] + m["kd"]), rel=1e-5)


def test_captions_mode_trains_the_towers_alone():
  config, model, params = _setup(CAPTIONS + ",knowledge_clip.clip_weight=0.5,"
                                 "knowledge_clip.kd_weight=0.0")
  assert set(params) == {"img", "txt", "logit_scale", "logit_bias"}  # no fusion
  loss_fn = kc.make_loss_fn(model, config, table=_table(), tokenizer=_Tok())
  assert "teacher" not in loss_fn.constants  # kd_weight 0: no teacher loaded
  (loss, m), grads = jax.jit(jax.value_and_grad(
      lambda p, c: loss_fn(p, _batch(), jax.random.key(0), 0, c), has_aux=True))(
          params, loss_fn.constants)
  assert float(loss) == pytest.approx(0.5 * float(m["clip"] + m["kg_clip"]), rel=1e-5)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["img"])) > 0
  # A step without triplets (empty groups) has no pairs.
  n = {g: 0 for g in step_lib.GROUPS}
  out = jax.jit(lambda p, b, c: model.apply({"params": p}, b["image"], b["text"],
                                            b["kg_draw"], c, n, method=captions.forward))(
      params, _batch(), loss_fn.constants)
  assert "pairs" not in out and out["zimg"].shape == (8, config.model.embed_dim)


def test_the_counts_are_the_full_methods():
  config, _, _ = _setup(CAPTIONS)
  table = _table()
  fusion = step_lib.constants(table, _Tok(), entity_len=8, max_relations=64, neighbours=4)
  c = captions.constants(table, _Tok(), length=32)
  for g in step_lib.GROUPS:  # the same training triplets, so the same draws resolve alike
    np.testing.assert_array_equal(c[f"train_{g}"], fusion[f"train_{g}"])


def test_mode_is_checked_and_old_runs_read_as_the_full_method():
  with pytest.raises(ValueError, match="mode='caption'"):
    kc._cfg(config_lib.get_config("knowledge_clip", "smoke,knowledge_clip.mode='caption'"))
  config = config_lib.get_config("knowledge_clip", "smoke")
  assert config.knowledge_clip.mode == "fusion"
  assert type(kc.build_model(config)).__name__ == "KnowledgeCLIPModel"
  # A run written before the key existed is the full method, not a changed config.
  old = config.to_dict()
  del old["knowledge_clip"]["mode"]
  assert config_lib.upgrade(old)["knowledge_clip"]["mode"] == "fusion"
  from vlkg.results import workdir
  new = config_lib.get_config("knowledge_clip", "smoke").to_dict()
  assert workdir.config_changes(old, new) == []
  new["knowledge_clip"]["mode"] = "captions"
  assert workdir.config_changes(old, new) == ["knowledge_clip.mode: 'fusion' -> 'captions'"]
