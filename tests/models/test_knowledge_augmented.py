"""REAVL's model: the query starts as CLIP's joint direction, a closed gate removes
an item from what the tokens read, masked text tokens do not leak, the ablation's
gate is 1."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from vlkg.models.knowledge_augmented import REAVLModel, _stacked_identity

D, M = 16, 3
TOWERS = dict(
    image=dict(patch_size=8, width=16, depth=1, heads=2, mlp_ratio=2, act="gelu",
               pool_type="cls", stem="patch"),
    text=dict(vocab_size=40, context_length=8, width=16, depth=1, heads=2, mlp_ratio=2,
              act="gelu", causal=True, pool="eot", pad_id=0, eot_id=3, mask_pad=True),
    embed_dim=D)


@functools.lru_cache
def _model(fusion_depth=1, **kw):
  """(model, params). Flax draws each parameter from the root key and its own path,
  so a variant whose parameters are a subset of the default model's (the ablations)
  takes those of the default's init, values included, without a compile of its own."""
  model = REAVLModel(**TOWERS, fusion_depth=fusion_depth, fusion_heads=2, item_tokens=M,
                     text_len=8, **kw)
  args = (jax.random.key(0), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 8), jnp.int32))
  if fusion_depth != 1 or kw:
    shapes = flatten_dict(jax.eval_shape(model.init, *args)["params"])
    default = flatten_dict(_model()[1])
    if all(k in default and default[k].shape == v.shape for k, v in shapes.items()):
      return model, unflatten_dict({k: default[k] for k in shapes})
  return model, jax.jit(model.init)(*args)["params"]


def _inputs(seed, b=2, k=2, l=5):
  r = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)
  return dict(zimg=f(b, D), img_tokens=f(b, 4, D), txt_tokens=f(b, l, D),
              txt_valid=jnp.ones((b, l), bool), txt_masked=jnp.zeros((b, l), bool),
              items=f(b, k, M, D), item_types=jnp.zeros((b, k, M), jnp.int32),
              item_valid=jnp.ones((b, k, M), bool), gates=jnp.ones((b, k)))


_FUSE = {}  # id(model) -> its jitted fusion (a model's dict fields are not hashable)


def _fuse(model, params, x):
  if id(model) not in _FUSE:
    _FUSE[id(model)] = jax.jit(lambda p, x: model.apply(
        {"params": p}, **x, readout=True, method=REAVLModel.fuse))
  return _FUSE[id(model)](params, x)


def test_query_starts_as_normalised_sum():
  model, params = _model()
  assert np.array_equal(_stacked_identity(None, (8, 4)),
                        np.concatenate([np.eye(4), np.eye(4)]))
  a = jax.random.normal(jax.random.key(1), (3, D))
  b = jax.random.normal(jax.random.key(2), (3, D))
  q = model.apply({"params": params}, a, b, method=REAVLModel.query)
  want = (a + b) / np.linalg.norm(a + b, axis=-1, keepdims=True)
  np.testing.assert_allclose(q, want, rtol=1e-5, atol=1e-6)


def test_a_closed_gate_removes_the_item():
  model, params = _model()
  x = _inputs(0)
  other = dict(x, items=x["items"].at[:, 1].set(7.0))  # item 1 changed
  gated = dict(x, gates=x["gates"].at[:, 1].set(0.0))
  gated_other = dict(other, gates=gated["gates"])
  out = lambda inputs: _fuse(model, params, inputs)["fused"]
  assert not np.allclose(out(x), out(other), atol=1e-4)  # open: item 1 is read
  np.testing.assert_allclose(out(gated), out(gated_other), atol=1e-6)
  # All items closed: the same as having none valid.
  closed = dict(x, gates=jnp.zeros_like(x["gates"]))
  none = dict(other, item_valid=jnp.zeros_like(x["item_valid"]),
              gates=jnp.zeros_like(x["gates"]))
  np.testing.assert_allclose(out(closed), out(none), atol=1e-6)


def test_masked_text_tokens_do_not_reach_the_fusion():
  model, params = _model()
  x = _inputs(1)
  masked = x["txt_masked"].at[:, 2].set(True)
  a = dict(x, txt_masked=masked)
  b = dict(a, txt_tokens=x["txt_tokens"].at[:, 2].set(-5.0))
  for key in ("fused", "text", "items"):
    np.testing.assert_allclose(_fuse(model, params, a)[key],
                               _fuse(model, params, b)[key], atol=1e-6)


def test_gates_from_query_and_item_and_the_ablation():
  model, params = _model()
  q = jax.random.normal(jax.random.key(3), (2, D))
  keys = jax.random.normal(jax.random.key(4), (2, 5, D))
  g = model.apply({"params": params}, q, keys, method=REAVLModel.gates)
  assert g.shape == (2, 5) and (np.asarray(g) > 0).all() and (np.asarray(g) < 1).all()
  assert np.std(np.asarray(g)) > 0  # each item its own gate
  off, off_params = _model(gate=False)
  g = off.apply({"params": off_params}, q, keys, method=REAVLModel.gates)
  np.testing.assert_array_equal(g, np.ones((2, 5)))


def test_heads_shapes_and_tied_mlm():
  model, params = _model()
  out = _fuse(model, params, _inputs(2))
  logits = model.apply({"params": params}, out["text"], method=REAVLModel.mlm_logits)
  assert logits.shape == (2, 5, 40)
  # Tied to the text tower's token table: the head's output times its rows.
  h = model.apply({"params": params}, out["text"],
                  method=lambda m, x: m.reavl.mlm(x))
  table = params["txt"]["token_embedding"]["embedding"]
  np.testing.assert_allclose(logits, h @ table.T + params["reavl"]["mlm_bias"],
                             rtol=1e-5, atol=1e-5)
  pred = model.apply({"params": params}, out["items"][:, 0], method=REAVLModel.entity_prediction)
  np.testing.assert_allclose(np.linalg.norm(pred, axis=-1), 1.0, rtol=1e-5)


def test_the_towers_cosine_joins_the_match_logit():
  """itm_logits = head([FUSE]) + [0, exp(itm_scale) * cosine]; off, the head alone."""
  model, params = _model()
  fused = _fuse(model, params, _inputs(3))["fused"]
  cos = jnp.asarray([0.3, -0.2])
  logits = model.apply({"params": params}, fused, cos, method=REAVLModel.itm_logits)
  head = fused @ params["reavl"]["itm"]["kernel"] + params["reavl"]["itm"]["bias"]
  assert float(params["reavl"]["itm_scale"]) == np.float32(np.log(10.0))
  np.testing.assert_allclose(logits, head + np.stack([np.zeros(2), 10.0 * cos], 1),
                             rtol=1e-5, atol=1e-5)
  off, off_params = _model(itm_tower_score=False)
  fused = _fuse(off, off_params, _inputs(3))["fused"]
  np.testing.assert_allclose(
      off.apply({"params": off_params}, fused, cos, method=REAVLModel.itm_logits),
      fused @ off_params["reavl"]["itm"]["kernel"] + off_params["reavl"]["itm"]["bias"],
      rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("depth", [1, 2])
def test_readout_rows_compute_the_leading_rows_alone(depth):
  """Rows after ``readout_rows`` give [FUSE] alone; every output that is given, and
  the gradient of a loss on them, equals the whole computation's."""
  model, params = _model(fusion_depth=depth)
  x = _inputs(3, b=3)
  x["txt_valid"] = x["txt_valid"].at[1:, -2:].set(False)  # padding on some rows
  @functools.partial(jax.jit, static_argnums=1)
  def fuse(p, rows=None):
    return model.apply({"params": p}, **x, readout=True, readout_rows=rows,
                       method=REAVLModel.fuse)

  full, first = fuse(params), fuse(params, 1)
  assert first["items"].shape == (1, 2, D) and first["text"].shape == (1, 5, D)
  np.testing.assert_allclose(first["items"], full["items"][:1], atol=1e-5)
  np.testing.assert_allclose(first["text"], full["text"][:1], atol=1e-5)
  np.testing.assert_allclose(first["fused"], full["fused"], atol=1e-5)

  def loss(p, rows):
    out = fuse(p, rows)
    return (jnp.sum(out["fused"] ** 2) + jnp.sum(out["text"][:1] ** 3)
            + jnp.sum(out["items"][:1] * out["items"][:1, :1]))

  grad = jax.jit(jax.grad(loss), static_argnums=1)  # fuse inlines into it
  want, got = grad(params, None), grad(params, 1)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want),
                          jax.tree.leaves(got)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=str(path))
