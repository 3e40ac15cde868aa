"""``bench shapley``: neural vs Monte Carlo interactions against exact ones (LOUPE).

    python -m vlkg.tools.bench shapley

Protocol (LOUPE, Li et al., NeurIPS 2022; every choice below is ours):

* Model: a small ``TwoTowers`` (ViT on 32x32 images in 8x8 patches, width 32,
  depth 2; text width 32, depth 2, 16 tokens; embed 32), randomly initialised with
  the model's own (CLIP) initialisation, seed 0. Untrained on purpose: the bench
  measures estimators of a fixed value function, and a random tower is one with
  no structure planted by us. Small so that exact ground truth for tens of pairs
  and Monte Carlo targets for hundreds fit in the ~3 minutes of the bench.
* Pairs: scenes of the built-in synthetic world rendered at 32x32, each with one
  of its true captions (with at least as many words as phrases); words are hashed
  to ids (no tokenizer to build).
* Game: the semantics-level game of the pair. Players are the 4 image quadrants
  (2x2 patches each) and the caption's words cut into 6 contiguous phrases:
  n = 10 <= 12 players, so exact values exist (2^10 evaluations). The candidates
  are the 24 region-phrase pairs {r, p}; their interactions I([{r, p}]) are what
  LOUPE's semantics-level objective aligns.
* Ground truth: ``shapley.exact`` on the held-out pairs.
* Monte Carlo: ``shapley.monte_carlo_interactions`` (antithetic) at doubling
  budgets of samples per candidate (each sample costs |S| + 2 = 4 evaluations per
  candidate), until its rho passes the neural one (at least 3 budgets, at most
  ``max_samples``).
* Neural: ``ShapleyInteractionNet`` (depth 0) on the players' features
  (``probe_features``: 2R + 2P + 4 single-tower passes per pair, about 12
  evaluations), trained with the Gaussian NLL (``neural.train`` defaults) on Monte
  Carlo targets (``target_samples`` per candidate) of training pairs from other
  scenes than the held-out ones.
* Accuracy: Spearman rho between estimated and exact interactions over one pair's
  candidates, averaged over the held-out pairs (the Monte Carlo curve over the
  first ``curve_pairs`` of them).
* Cost per pair: value evaluations, and seconds: Monte Carlo and exact are jitted
  per pair and timed on every pair after the first (which compiles), median; the
  neural estimator is one jitted call over all held-out pairs, tower passes
  included, median of ``repeats`` after a warm-up, divided by the number of pairs.
  Speedup = Monte Carlo seconds per pair at the neural rho (interpolated on the
  curve, linearly in rho against log seconds) / neural seconds per pair.
* Fallback: the threshold is the 90% quantile of the predicted variances on the
  training pairs; the bench reports the held-out fallback rate, the rho with the
  fallback (``fallback_samples`` per item), and whether the flagged items are
  the ones the network gets wrong.
"""

from __future__ import annotations

import statistics
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from vlkg.interactions import games, neural, shapley
from vlkg.models.shapley_net import ShapleyInteractionNet
from vlkg.models.two_towers import TwoTowers
from vlkg.tools.timing import median_seconds

IMAGE_SIZE, PATCH, CONTEXT, VOCAB = 32, 8, 16, 256
PAD, BOS, EOS = 0, 2, 3
REGION_GRID = (2, 2)
NUM_PHRASES = 6


def build_model(width: int = 32, depth: int = 2) -> TwoTowers:
  return TwoTowers(
      image=dict(patch_size=PATCH, width=width, depth=depth, heads=4),
      text=dict(vocab_size=VOCAB, context_length=CONTEXT, width=width, depth=depth,
                heads=4, eot_id=EOS),
      embed_dim=32)


def word_ids(caption: str) -> np.ndarray:
  """BOS, one hashed id per word, EOS, padding: [CONTEXT] int32."""
  words = caption.replace(",", " ").split()
  ids = [BOS] + [4 + zlib.crc32(w.encode()) % (VOCAB - 4) for w in words] + [EOS]
  return np.array(ids + [PAD] * (CONTEXT - len(ids)), np.int32)


def world_pairs(num: int, start: int = 0, seed: int = 0):
  """``num`` (image [32, 32, 3] float, ids [CONTEXT]) pairs of the synthetic world."""
  from vlkg.data.world import captions as cap, render, scene as scene_lib
  spec = scene_lib.WorldSpec(seed=seed, image_size=IMAGE_SIZE, min_objects=1,
                             max_objects=scene_lib.max_objects_that_fit(IMAGE_SIZE))
  images, ids = [], []
  index = start
  while len(images) < num:
    scene = scene_lib.sample_scene(spec, "train", index)
    rng = np.random.default_rng([seed, index])
    index += 1
    for _ in range(16):
      text = cap.realise(cap.sample_caption(scene, rng), rng)
      n_words = len(text.replace(",", " ").split())
      if NUM_PHRASES <= n_words <= CONTEXT - 2:
        break
    else:
      continue
    images.append(render.render(scene).astype(np.float32) / 127.5 - 1.0)
    ids.append(word_ids(text))
  return np.stack(images), np.stack(ids)


def membership(ids: np.ndarray) -> np.ndarray:
  """[R + P, N + L]: quadrant regions, then the words cut into phrases."""
  grid = IMAGE_SIZE // PATCH
  regions = games.grid_regions(grid, grid, *REGION_GRID)
  words = np.flatnonzero((ids != PAD) & (ids != BOS) & (ids != EOS))
  return games.regions_and_phrases(
      regions, games.span_phrases(words, NUM_PHRASES, len(ids)))


def region_phrase_pairs() -> np.ndarray:
  r = REGION_GRID[0] * REGION_GRID[1]
  pairs = [(i, r + j) for i in range(r) for j in range(NUM_PHRASES)]
  return games.coalition_masks(r + NUM_PHRASES, pairs)


def probe_features(model, variables, images, ids, memberships, num_regions: int):
  """[B, n, 4D + 2] players' features of B pairs from 2R + 2P + 4 tower passes each.

  A player's feature holds its effect on its own tower's (normalised) embedding
  with every other player present (leave-one-out) and with none (alone), the full
  embeddings of its own and of the other tower, and a region/phrase flag. Why
  effects: for a dual encoder v(T) = <f(T's regions), g(T's phrases)>, so
  I([{r, p}]) is a Shapley-weighted average over contexts of
  <effect of r on f, effect of p on g>, and these are its two extreme contexts.
  Measured while building this bench (width-64 towers, exact targets, 320
  training pairs): the mean projected token outputs of each player alone gave a
  held-out rho of 0.45; the two effects 0.91, the full embeddings on top 0.92.

  Args:
    model, variables: the two-tower model.
    images: [B, H, W, 3]; ids: [B, L]; memberships: [B, n, N + L] bool, the first
      ``num_regions`` players owning patches only, the others text only.
    num_regions: R.
  """
  def one(image, tokens, member):
    n_patches = member.shape[1] - tokens.shape[0]
    regions = member[:num_regions, :n_patches]
    phrases = member[num_regions:, n_patches:]

    def passes(owned):
      width = owned.shape[1]
      everything = jnp.ones((1, width), bool)
      unowned = ~jnp.any(owned, axis=0, keepdims=True)
      # full, none, all but j, only j; tokens no player owns are always kept.
      return jnp.concatenate([everything, unowned, ~owned, owned | unowned])

    pm, tm = passes(regions), passes(phrases)
    zi = model.apply(variables, jnp.broadcast_to(image, (len(pm), *image.shape)),
                     patch_mask=pm, method="embed_images")
    zt = model.apply(variables, jnp.broadcast_to(tokens, (len(tm), *tokens.shape)),
                     token_mask=tm, method="embed_texts")

    def effects(z, k):
      loo = z[0] - z[2:2 + k]
      alone = z[2 + k:] - z[1]
      return jnp.concatenate([loo, alone], axis=-1)

    r, p = num_regions, phrases.shape[0]
    own = jnp.concatenate([effects(zi, r), effects(zt, p)])
    context = jnp.concatenate([
        jnp.broadcast_to(jnp.concatenate([zi[0], zt[0]]), (r, 2 * zi.shape[1])),
        jnp.broadcast_to(jnp.concatenate([zt[0], zi[0]]), (p, 2 * zi.shape[1]))])
    kind = jnp.concatenate([jnp.tile(jnp.array([[1.0, 0.0]]), (r, 1)),
                            jnp.tile(jnp.array([[0.0, 1.0]]), (p, 1))])
    return jnp.concatenate([own, context, kind], axis=-1)

  return jax.vmap(one)(images, ids, memberships)


def spearman(a, b) -> float:
  """Spearman's rho of two 1-D arrays (ties get their mean rank)."""
  from scipy import stats
  rho = stats.spearmanr(np.asarray(a), np.asarray(b))[0]
  return 0.0 if np.isnan(rho) else float(rho)


def mean_rho(estimates, exact) -> float:
  return float(np.mean([spearman(e, x) for e, x in zip(estimates, exact)]))


def interpolate(x: float, xs, ys) -> tuple[float, str]:
  """y at x on the piecewise-linear curve (xs increasing where it is crossed).

  Returns ``(y, where)``: ``where`` is "inside", or "below" / "above" the range of
  xs, in which case y is the end point's y (a bound, not an estimate).
  """
  xs, ys = list(xs), list(ys)
  if x <= xs[0]:
    return ys[0], "below" if x < xs[0] else "inside"
  for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
    if x0 <= x <= x1 and x1 > x0:
      return y0 + (y1 - y0) * (x - x0) / (x1 - x0), "inside"
  return ys[-1], "above"


class _Pairs:
  """Images, ids, memberships and games of a list of pairs."""

  def __init__(self, num: int, start: int):
    self.images, self.ids = world_pairs(num, start)
    self.members = np.stack([membership(x) for x in self.ids])
    self.games = []

  def make_games(self, model, variables) -> "_Pairs":
    self.games = [games.towers_game(model, variables, im, t, m)
                  for im, t, m in zip(self.images, self.ids, self.members)]
    return self


def _timed(fn):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


# A small world is enough to time a step: the model, batch and fields are the
# default's, only the number of prepared scenes differs.
STEP_WORLD = ("world.num_train=1024,world.num_val=64,world.num_test=64,"
              "world.num_test_comp=64,world.num_shards=2")


def loupe_step_ratio(repeats: int) -> float:
  """Median training-step time of LOUPE over that of CLIP, each at its default
  config (`vlkg.config.get_config`: the shared keys and the method's own section)."""
  from vlkg import config as config_lib
  from vlkg.tools import bench_step
  seconds = {}
  for name in ("clip", "loupe"):
    seconds[name] = bench_step.run(config_lib.get_config(name, STEP_WORLD), repeats,
                                   peer=False)["step_seconds"]
  ratio = seconds["loupe"] / seconds["clip"]
  print(f"training step: loupe {seconds['loupe'] * 1e3:.0f} ms, clip "
        f"{seconds['clip'] * 1e3:.0f} ms, ratio {ratio:.2f}")
  return ratio


def run(repeats: int, train_pairs: int = 600, heldout_pairs: int = 40,
        curve_pairs: int = 20, target_samples: int = 8, fallback_samples: int = 32,
        max_samples: int = 256, seed: int = 0, batch_size: int = 256,
        step_ratio: bool = True) -> dict:
  """The whole protocol of the module doc; returns every measured figure.

  ``step_ratio`` also times the training steps of LOUPE and CLIP at their default
  configs (``bench_step``; same model and batch, each on a small world
  of its own fields) and reports their ratio as ``step_time_ratio_vs_clip``.
  """
  wall = time.perf_counter()
  model = build_model()
  cand = region_phrase_pairs()
  r = REGION_GRID[0] * REGION_GRID[1]
  n = r + NUM_PHRASES
  probe = jax.jit(lambda v, a, b, c: probe_features(model, v, a, b, c, r))
  held = _Pairs(heldout_pairs, start=0)
  variables = model.init(jax.random.key(seed), held.images[:1], held.ids[:1])
  held.make_games(model, variables)
  # Other scenes than the held-out ones.
  train = _Pairs(train_pairs, start=100_000).make_games(model, variables)
  print(f"game: {r} regions + {NUM_PHRASES} phrases = {n} players, {len(cand)} "
        f"region-phrase candidates; {train_pairs} training and {heldout_pairs} "
        "held-out pairs of the synthetic world; random-init TwoTowers "
        "(width 32, depth 2, 32x32 images)")

  # Ground truth, and what exact enumeration costs.
  exact, exact_times = [], []
  for g in held.games:
    e, dt = _timed(lambda: shapley.exact(g, cand, batch_size).interaction)
    exact.append(np.asarray(e))
    exact_times.append(dt)
  exact = np.stack(exact)
  exact_seconds = statistics.median(exact_times[1:])

  # Monte Carlo targets of the training pairs.
  start = time.perf_counter()
  targets, target_se = [], []
  for i, g in enumerate(train.games):
    e = shapley.monte_carlo_interactions(g, cand, jax.random.key(10_000 + i),
                                         target_samples, batch_size=batch_size)
    targets.append(np.asarray(e.interaction))
    target_se.append(np.asarray(e.interaction_se))
  targets_seconds = time.perf_counter() - start
  train_features = probe(variables, train.images, train.ids, train.members)
  coal = lambda k: np.broadcast_to(cand, (k, *cand.shape))
  start = time.perf_counter()
  fit = neural.train(train_features, coal(train_pairs), np.stack(targets),
                     np.stack(target_se), key=jax.random.key(seed),
                     net=ShapleyInteractionNet())
  train_seconds = time.perf_counter() - start
  print(f"neural: trained in {train_seconds:.1f} s on Monte Carlo targets "
        f"({target_samples} samples/candidate, {targets_seconds:.1f} s); training "
        f"NLL {fit.initial_nll:.2f} -> {fit.final_nll:.2f}")

  # The neural estimator on the held-out pairs: tower passes + network, batched.
  @jax.jit
  def neural_estimate(images, ids, members):
    feats = probe_features(model, variables, images, ids, members, r)
    return neural.predict(fit.estimator, feats, coal(len(images)))

  args = (jnp.asarray(held.images), jnp.asarray(held.ids), jnp.asarray(held.members))
  mean, _ = neural_estimate(*args)
  neural_rho = mean_rho(np.asarray(mean), exact)
  neural_seconds = median_seconds(
      lambda: jax.block_until_ready(neural_estimate(*args)), repeats) / heldout_pairs
  # 2R + 2 image passes and 2P + 2 text passes: each about half an evaluation.
  neural_evals = (2 * r + 2 + 2 * NUM_PHRASES + 2) / 2

  # The Monte Carlo curve on the first curve_pairs held-out pairs.
  curve = []
  samples = 2
  while samples <= max_samples:
    estimates, times = [], []
    for i, g in enumerate(held.games[:curve_pairs]):
      e, dt = _timed(lambda: shapley.monte_carlo_interactions(
          g, cand, jax.random.key(i), samples, batch_size=batch_size).interaction)
      estimates.append(np.asarray(e))
      times.append(dt)
    point = {
        "samples": samples,
        "evaluations_per_pair": samples * (2 + 2) * len(cand),
        "seconds_per_pair": statistics.median(times[1:]),
        "spearman": mean_rho(estimates, exact[:curve_pairs]),
    }
    curve.append(point)
    if point["spearman"] > neural_rho and len(curve) >= 3:
      break
    samples *= 2

  # rho is increasing along the curve up to sampling noise; interpolate on it.
  rhos = [c["spearman"] for c in curve]
  log_sec = [np.log(c["seconds_per_pair"]) for c in curve]
  log_at_rho, where_rho = interpolate(neural_rho, rhos, log_sec)
  mc_seconds_same_rho = float(np.exp(log_at_rho))
  speedup = mc_seconds_same_rho / neural_seconds
  mc_rho_same_cost, where_cost = interpolate(np.log(neural_seconds), log_sec, rhos)

  # Fallback: items whose variance is above the training 90% quantile.
  _, train_var = neural.predict(fit.estimator, train_features, coal(train_pairs))
  threshold = float(np.quantile(np.asarray(train_var), 0.9))
  fb_estimates, fb_rates, fb_evals = [], [], []
  feats = np.asarray(probe(variables, *args))
  for i, g in enumerate(held.games):
    fb = neural.estimate_with_fallback(fit.estimator, feats[i], cand, g,
                                       jax.random.key(20_000 + i), threshold,
                                       fallback_samples, batch_size=batch_size)
    fb_estimates.append(fb.interaction)
    fb_rates.append(fb.fallback_rate)
    fb_evals.append(fb.evaluations)
  fallback_rate = float(np.mean(fb_rates))
  fallback_rho = mean_rho(fb_estimates, exact)
  # Does the variance point at the network's errors?
  neural_mean, neural_var = (np.asarray(x) for x in neural_estimate(*args))
  sq_err = (neural_mean - exact) ** 2
  flagged = neural_var > threshold
  calibration = spearman(neural_var.ravel(), sq_err.ravel())
  z2 = float(np.mean(sq_err / neural_var))
  mae_flagged = float(np.sqrt(sq_err[flagged]).mean()) if flagged.any() else None
  mae_kept = float(np.sqrt(sq_err[~flagged]).mean())
  fb_err = np.abs(np.stack(fb_estimates) - exact)
  mae_flagged_mc = float(fb_err[flagged].mean()) if flagged.any() else None

  print(f"\n{'estimator':<28}{'evals/pair':>12}{'ms/pair':>12}{'spearman':>10}")
  print(f"{'exact (2^n)':<28}{2**n:>12}{exact_seconds * 1e3:>12.2f}{1.0:>10.3f}")
  for c in curve:
    print(f"{'monte carlo x' + str(c['samples']):<28}{c['evaluations_per_pair']:>12}"
          f"{c['seconds_per_pair'] * 1e3:>12.2f}{c['spearman']:>10.3f}")
  print(f"{'neural':<28}{neural_evals:>12.0f}{neural_seconds * 1e3:>12.3f}"
        f"{neural_rho:>10.3f}")
  print(f"{'neural + fallback':<28}{neural_evals + np.mean(fb_evals):>12.0f}"
        f"{'':>12}{fallback_rho:>10.3f}")
  print(f"\nMonte Carlo reaches rho {neural_rho:.3f} at "
        f"{mc_seconds_same_rho * 1e3:.1f} "
        f"ms/pair ({where_rho}): the neural estimator is {speedup:.0f}x faster; at "
        f"the neural cost Monte Carlo's rho is {mc_rho_same_cost:.3f}"
        + (" (bound: the cheapest Monte Carlo run costs more)" if where_cost == "below"
           else ""))
  print(f"fallback: threshold {threshold:.3g} (training 90% variance quantile), "
        f"{fallback_rate:.1%} of held-out items sampled ({fallback_samples} "
        f"samples), rho {fallback_rho:.3f}")
  print(f"variance vs squared error of the network: Spearman {calibration:.3f}, "
        f"mean z^2 {z2:.2f}; mean |error| {mae_kept:.2e} on kept items, "
        f"{mae_flagged if mae_flagged is None else f'{mae_flagged:.2e}'} on flagged "
        f"items (Monte Carlo there: "
        f"{mae_flagged_mc if mae_flagged_mc is None else f'{mae_flagged_mc:.2e}'})")
  return {
      "players": n,
      "candidates_per_pair": len(cand),
      "train_pairs": train_pairs,
      "heldout_pairs": heldout_pairs,
      "curve_pairs": curve_pairs,
      "target_samples": target_samples,
      "exact_seconds_per_pair": exact_seconds,
      "exact_evaluations_per_pair": 2**n,
      "mc_curve": curve,
      "neural_spearman": neural_rho,
      "neural_seconds_per_pair": neural_seconds,
      "neural_evaluation_equivalents_per_pair": neural_evals,
      "neural_train_seconds": train_seconds,
      "neural_train_nll": [fit.initial_nll, fit.final_nll],
      "mc_seconds_per_pair_at_neural_spearman": mc_seconds_same_rho,
      "mc_seconds_interpolation": where_rho,
      "speedup_vs_mc": speedup,
      "mc_spearman_at_same_cost": mc_rho_same_cost,
      "mc_spearman_at_same_cost_is_bound": where_cost != "inside",
      "uncertainty_threshold": threshold,
      "fallback_rate": fallback_rate,
      "fallback_spearman": fallback_rho,
      "fallback_evaluations_per_pair": float(np.mean(fb_evals)),
      "variance_error_spearman": calibration,
      "mean_z2": z2,
      "neural_mae_kept_items": mae_kept,
      "neural_mae_flagged_items": mae_flagged,
      "mc_mae_flagged_items": mae_flagged_mc,
      "step_time_ratio_vs_clip": loupe_step_ratio(repeats) if step_ratio else None,
      "bench_seconds": time.perf_counter() - wall,
  }
