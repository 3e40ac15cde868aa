"""LOUPE: the factorised exact game against the generic exact estimator, the SSIM
loss against numpy, the phrase spans against the captions, and the training step."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import loupe as loupe_config
from vlkg import methods, preprocess
from vlkg.data import input_pipeline
from vlkg.data import tokenizer as tok_lib
from vlkg.graphs import negatives, phrases, world_parser
from vlkg.interactions import games, shapley
import tiny_world
from vlkg.methods import loupe



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  config, directory = tiny_world.prepared(loupe_config, root,
                                          ",total_steps=10,loupe.tsim_weight=1.0")
  model = methods.build_model(config)
  params = jax.jit(lambda r: methods.init_params(model, config, r))(jax.random.key(0))
  batch = next(input_pipeline.train_iterator(directory, batch_size=8, seed=0,
                                             fields=methods.batch_keys(config), shuffle_buffer=64))
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  batch["image"] = preprocess.normalize_images(batch["image"])
  return config, directory, model, params, batch


def test_subset_masks_and_pair_coalitions_by_hand():
  members = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(
      loupe.subset_masks(members),
      [[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1], [1, 1, 0, 1]])
  pairs = loupe.pair_coalitions(2, 3)
  assert pairs.shape == (6, 5)
  np.testing.assert_array_equal(pairs[4], [0, 1, 0, 1, 0])  # region 1, phrase 1
  assert (pairs.sum(1) == 2).all()


def test_factorised_game_equals_the_generic_exact_estimator(setup):
  """Each pair's I([{r, p}]) from 2^R + 2^P tower passes equals the generic
  ``shapley.exact`` on ``games.towers_game`` (2^(R+P) coalitions, each evaluated
  with both towers)."""
  config, _, model, params, batch = setup
  grid = config.model.image_size // config.model.image.patch_size
  regions = games.grid_regions(grid, grid, 2, 2)
  length = batch["text"].shape[1]
  members = np.asarray(phrases.span_mask(batch["phrase_spans"], length))
  fast = np.asarray(jax.jit(lambda images, texts, spans: loupe.exact_pair_interactions(
      model, params, images, texts, regions, spans))(
          batch["image"][:2], batch["text"][:2], jnp.asarray(members[:2])))
  coalitions = loupe.pair_coalitions(4, members.shape[1])
  checked = 0
  for i in range(2):
    if not members[i].any():
      continue
    game = games.towers_game(model, {"params": params}, batch["image"][i],
                             batch["text"][i],
                             games.regions_and_phrases(regions, members[i]))
    valid = members[i].any(-1)
    keep = np.repeat(valid[None], 4, 0).reshape(-1)
    slow = np.asarray(shapley.exact(game, coalitions).interaction).reshape(4, -1)
    # Empty phrase slots are dummy players: zero interactions either way.
    np.testing.assert_allclose(fast[i], slow, atol=2e-6)
    assert np.abs(slow.reshape(-1)[keep]).max() > 0
    checked += 1
  assert checked


def test_cell_rectangles_count_and_shape_by_hand():
  # A rows x cols grid has C(rows + 1, 2) * C(cols + 1, 2) rectangles.
  assert games.cell_rectangles(3, 3, min_cells=1).shape == (36, 9)
  rects = games.cell_rectangles(3, 3)
  assert rects.shape == (27, 9) and (rects.sum(1) >= 2).all()
  assert len({r.tobytes() for r in rects}) == 27
  # Each is a filled rectangle: its cells span rows x cols of its bounding box.
  for r in rects.reshape(-1, 3, 3):
    rows, cols = np.nonzero(r.any(1))[0], np.nonzero(r.any(0))[0]
    assert r.sum() == len(rows) * len(cols)
    assert r[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
  np.testing.assert_array_equal(games.cell_rectangles(1, 3),
                                [[1, 1, 0], [1, 1, 1], [0, 1, 1]])


def test_token_level_game_equals_the_generic_exact_estimator(setup):
  """TSIM's I([S]) of cell rectangles from 2^C image passes equals ``shapley.exact``
  on ``games.towers_game`` whose players are the cells (the caption kept whole)."""
  config, _, model, params, batch = setup
  grid = config.model.image_size // config.model.image.patch_size
  cells = games.grid_regions(grid, grid, 2, 3)
  candidates = games.cell_rectangles(2, 3)
  fast = np.asarray(jax.jit(lambda images, texts: loupe.exact_region_interactions(
      model, params, images, texts, cells, candidates))(batch["image"][:2],
                                                        batch["text"][:2]))
  length = batch["text"].shape[1]
  membership = np.concatenate([cells, np.zeros((6, length), bool)], axis=1)
  for i in range(2):
    game = games.towers_game(model, {"params": params}, batch["image"][i],
                             batch["text"][i], membership)
    slow = np.asarray(shapley.exact(game, candidates).interaction)
    np.testing.assert_allclose(fast[i], slow, atol=2e-6)
    assert np.abs(slow).max() > 0


def test_ssim_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 2))
  inter = rng.normal(size=(3, 4, 2)) * 0.02
  valid = np.array([[1, 1], [1, 0], [0, 0]], bool)
  got = loupe.ssim_loss(jnp.asarray(logits), jnp.asarray(inter), jnp.asarray(valid), 0.01)
  kls = []
  for b in range(3):
    for p in range(2):
      if not valid[b, p]:
        continue
      t = np.exp(inter[b, :, p] / 0.01 - (inter[b, :, p] / 0.01).max())
      t /= t.sum()
      q = np.exp(logits[b, :, p] - logits[b, :, p].max())
      q /= q.sum()
      kls.append(np.sum(t * (np.log(t) - np.log(q))))
  np.testing.assert_allclose(got, np.mean(kls), rtol=1e-5)


def test_phrase_spans_are_the_object_phrases(setup):
  config, directory, *_ = setup
  tok = tok_lib.SentencePieceTokenizer(f"{directory}/tokenizer.model", config.input.text_len)
  text = ("an image of a pink rhombus to the left of a yellow filled triangle, "
          "a big purple ellipse and a small yellow hexagon")
  stats = collections.Counter()
  synonyms = negatives.world_vocabulary().synonyms
  graph = world_parser.parse(text)  # canonical words: "diamond", "large", "solid"
  spans = phrases.token_spans(tok, text, graph, 3, synonyms, stats)
  ids = tok.encode([text])[0]
  assert [tok.decode([ids[a:b]])[0] for a, b in spans] == [
      "a pink rhombus", "a yellow filled triangle", "a big purple ellipse"]
  assert stats["phrases_truncated"] == 1  # the fourth phrase did not fit in 3
  text = "there is a picture of nothing"
  assert phrases.object_phrase_words(text, world_parser.parse(text), synonyms) == []
  assert not phrases.token_spans(tok, "", world_parser.parse(""), 3).any()


def test_records_spans_match_their_captions(setup):
  config, directory, _, _, batch = setup
  tok = tok_lib.SentencePieceTokenizer(f"{directory}/tokenizer.model", config.input.text_len)
  texts = np.asarray(batch["text"])
  for i, spans in enumerate(np.asarray(batch["phrase_spans"])):
    caption = tok.decode(texts[i:i + 1])[0]
    words = phrases.object_phrase_words(caption, world_parser.parse(caption),
                                        negatives.world_vocabulary().synonyms)
    expected = [" ".join(caption.split()[a:b]).rstrip(",") for a, b in words]
    got = [tok.decode([texts[i, a:b]])[0] for a, b in spans if b > a]
    assert got == expected[:len(got)] and len(got) == min(len(expected), 4)


def test_loss_fn_trains_the_estimator_and_reports(setup):
  config, _, model, params, batch = setup
  import optax
  loss_fn = loupe.make_loss_fn(model, config)
  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    (loss, m), g = jax.value_and_grad(loss_fn, has_aux=True)(
        p, batch, jax.random.key(0), jnp.asarray(0))
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, m, g

  nll = []
  for _ in range(6):
    params, state, m, g = step(params, state)
    nll.append(float(m["shapley_nll"]))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(g))
  assert nll[-1] < nll[0]
  for key in ("ssim", "clip_loss", "fallback_rate", "uncovered_rate", "estimator_corr",
              "tsim_interaction_abs"):
    assert np.isfinite(float(m[key])), key
  assert 0.0 <= float(m["fallback_rate"]) <= 1.0
  assert float(m["tsim_top1"]) in (0.0, 1.0)  # one TSIM pair per step by default
  assert "region_head" in params and "shapley" in params


def test_threshold_zero_makes_every_pair_uncertain(setup):
  config, _, model, params, batch = setup
  config.unlock()
  config.loupe.uncertainty_threshold = 0.0
  _, m = jax.jit(loupe.make_loss_fn(model, config))(
      params, batch, jax.random.key(0), jnp.asarray(0))
  config.loupe.uncertainty_threshold = 0.5
  assert float(m["fallback_rate"]) == 1.0
  # 4 of the pairs get the exact game; the rest are left out this step.
  has_phrase = np.asarray(batch["phrase_spans"])[..., 1].max(-1) > 0
  np.testing.assert_allclose(float(m["uncovered_rate"]),
                             (has_phrase.sum() - 4) / has_phrase.sum(), rtol=1e-6)


def test_threshold_is_relative_to_the_spread_of_the_exact_interactions(setup):
  """A pair is uncertain when its predicted variance exceeds threshold x the variance
  of the step's exact targets: a huge threshold flags none, and the flagged share
  falls as the threshold grows."""
  config, _, model, params, batch = setup
  config.unlock()
  rates = []
  for threshold in (0.0, 1e-3, 1e12):
    config.loupe.uncertainty_threshold = threshold
    _, m = jax.jit(loupe.make_loss_fn(model, config))(
        params, batch, jax.random.key(0), jnp.asarray(0))
    rates.append(float(m["fallback_rate"]))
  config.loupe.uncertainty_threshold = 0.5
  assert rates[0] == 1.0 and rates[2] == 0.0 and rates[0] >= rates[1] >= rates[2]


def test_tsim_trains_the_region_head_towards_the_interactions(setup):
  """With the encoders fixed (so the candidates' features and interactions are
  too), training the region head on TSIM's KL lowers it and finds each pair's
  highest-interaction candidate."""
  config, _, model, params, batch = setup
  import optax
  from vlkg.models.loupe import LoupeModel
  grid = config.model.image_size // config.model.image.patch_size
  cells = games.grid_regions(grid, grid, 3, 3)
  candidates = games.cell_rectangles(3, 3)
  members = jnp.asarray((candidates.astype(int) @ cells.astype(int)) > 0)

  @jax.jit
  def fixed_encoders(images, texts):
    """The interactions, the caption embeddings and the candidates' features."""
    inter = loupe.exact_region_interactions(model, params, images, texts, cells,
                                            candidates)
    _, ztxt, extras = model.apply({"params": params}, images, texts, return_tokens=True)
    return inter, ztxt, loupe.candidate_features(extras["img_tokens"], members)

  inter, ztxt, feats = fixed_encoders(batch["image"], batch["text"])
  np.testing.assert_allclose(np.linalg.norm(feats, axis=-1), 1.0, rtol=1e-5)
  opt = optax.adam(3e-2)
  head = params["region_head"]
  state = opt.init(head)
  valid = jnp.ones((inter.shape[0],), bool)

  def tsim(h):
    logits = model.apply({"params": {**params, "region_head": h}}, feats, ztxt,
                         method=LoupeModel.score_regions)
    return loupe.soft_target_kl(logits, inter, valid, 0.01, axis=1), logits

  def step(carry, _):
    head, state = carry
    (value, _), g = jax.value_and_grad(tsim, has_aux=True)(head)
    u, state = opt.update(g, state, head)
    return (optax.apply_updates(head, u), state), value

  # 600 steps in one program.
  (head, _), values = jax.jit(lambda c: jax.lax.scan(step, c, length=600))((head, state))
  _, logits = jax.jit(tsim)(head)
  assert values[-1] < 0.5 * values[0]
  # Each pair's first choice is its highest-interaction candidate, up to the soft
  # target's temperature (0.01): candidates closer than that are near-ties.
  inter = np.asarray(inter)
  chosen = inter[np.arange(len(inter)), np.argmax(logits, 1)]
  np.testing.assert_array_less(inter.max(1) - chosen, 0.01)
  # and where the highest is clear of the rest by more than that, exactly it.
  second, best = np.sort(inter, 1)[:, -2:].T
  clear = best - second > 0.01
  assert clear.sum() >= 3
  np.testing.assert_array_equal(np.argmax(logits, 1)[clear], np.argmax(inter, 1)[clear])


def test_tsim_runs_on_every_tsim_every_th_step(setup):
  config, _, model, params, batch = setup
  loss_fn = jax.jit(loupe.make_loss_fn(model, config))
  losses = {}
  for step in (0, 1, 2):
    loss, m = loss_fn(params, batch, jax.random.key(0), jnp.asarray(step))
    losses[step] = float(loss)
    assert float(m["tsim_active"]) == (step % 2 == 0)
    assert (float(m["tsim"]) > 0) == (step % 2 == 0)
  np.testing.assert_allclose(losses[0], losses[2], rtol=1e-6)
  assert losses[0] > losses[1]  # the same batch, plus TSIM's KL


def test_tsim_weight_zero_drops_its_games(setup):
  config, _, model, params, batch = setup
  config.unlock()
  config.loupe.tsim_weight = 0.0
  _, m = jax.jit(loupe.make_loss_fn(model, config))(
      params, batch, jax.random.key(0), jnp.asarray(0))
  config.loupe.tsim_weight = 1.0
  assert "tsim" not in m and np.isfinite(float(m["ssim"]))


def test_unknown_loupe_key_is_named():
  with pytest.raises(KeyError, match="no_such"):
    loupe.build_model(loupe_config.get_config("smoke,loupe.no_such=1"))
