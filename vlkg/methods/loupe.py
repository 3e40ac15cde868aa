"""LOUPE: fine-grained region-phrase alignment from Shapley interactions.

Li et al., NeurIPS 2022. On top of CLIP's contrastive
loss, the semantics-level objective (SSIM) trains a region-phrase alignment matrix
towards soft targets given by the interactions of the region-phrase game.

The game (§4 "Game"). For one (image, caption) pair the players are R regions (a
``region_grid`` x ``region_grid`` cut of the patch grid, ``games.grid_regions``) and
the caption's P object phrases (token spans prebuilt at prepare time from the
caption's scene graph, the field ``vlkg.graphs.fields.phrase_spans``). v(S) is the cosine
similarity of the image embedding computed from the patches of the regions in S
and the text embedding computed from the tokens of the phrases in S; the other
players' tokens are removed through the towers' attention keep-masks
(``patch_mask``, ``token_mask``). Tokens of no phrase (lead-ins, relation words)
are context and always stay, as do the class token and EOT (``games.towers_game``).

Exact interactions, cheaply. Because the model is a dual encoder,
v(S) = <f(regions of S), g(phrases of S)>: the 2^(R+P) coalition values need only
2^R image passes and 2^P text passes per pair (16 + 16 for the defaults), after
which every I([{r, p}]) = φ([{r,p}] | N') − φ(r | N\\{p}) − φ(p | N\\{r}) is read
exactly from the value table (``shapley.exact_from_table``).

Uncertainty-aware neural estimation (§4). Even so, the exact game costs 2^R + 2^P
tower passes per pair, so it runs for only ``game_images`` pairs per step. The
estimator (``LoupeModel.shapley``) predicts every pair's interactions and their
variances from the players' features (their normalised embeddings, their cosine to
the other modality's global embedding, their type); it is trained in the same step
with the Gaussian NLL against the exact values of the game pairs. Which pairs get
the exact game is uncertainty-aware: the ``game_images`` pairs whose mean
predicted variance is highest. A pair whose variance is above
``uncertainty_threshold`` falls back to the exact game if it is among those, and is
otherwise left out of the SSIM loss for this step; ``fallback_rate`` (pairs over the
threshold) and ``uncovered_rate`` (of those, the ones left out) are logged. The
estimator's inputs are stop-gradient: it learns to read the encoders, it does not
shape them.

SSIM (§4 "Objectives"). For each valid phrase p the alignment distribution over
regions is softmax_r(s · <region_r, phrase_p>) (``s`` the model's logit scale;
region and phrase features are the L2-normalised means of their projected tokens),
and its target is softmax_r(I([{r, p}]) / ``target_temperature``); the loss is
KL(target ‖ alignment), averaged over valid phrases, weighted ``ssim_weight``.

TSIM (§4 "Objectives", token level). The players are the C cells of a
``tsim_grid`` x ``tsim_grid`` cut of the patch grid (single patches would need
sampling in every step; cells keep the game exact), the caption is kept whole,
and v(S) is the cosine of the image embedding from the cells of S with the
caption's embedding. The candidate regions are every rectangle of at least two
cells (``games.cell_rectangles``: 27 for a 3 x 3 grid); their interactions
I([S]) say which patch sets act together as one region for this caption. The
exact game (2^C image passes and one text pass) runs for ``tsim_images`` pairs
on every ``tsim_every``-th step (a ``lax.cond``: the other steps skip it), and ``region_head`` (``LoupeModel.score_regions``) is trained with
KL(softmax_k(I_k / ``tsim_temperature``) ‖ softmax_k(head_k)), weighted
``tsim_weight`` (0 by default: at the default budget the head does not learn to
rank the candidates and grounding falls; docs/results.md). The head reads the
encoders' tokens with gradient, so TSIM also shapes them.

Which pairs count as uncertain: a pair's mean predicted variance above
``uncertainty_threshold`` times the variance of this step's exact interactions
(both in ``target_scale`` units). The threshold is thus relative to the spread
of the interactions themselves: at 1.0 a pair is flagged when the estimator's
predicted error is as large as the interactions' own spread, i.e. it knows no
more about the pair than their mean.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlkg import methods
from vlkg.graphs import fields as fields_lib
from vlkg.graphs.phrases import span_mask
from vlkg.interactions import games, shapley
from vlkg.interactions.neural import gaussian_nll
from vlkg.methods import clip
from vlkg.models import two_towers
from vlkg.models.loupe import LoupeModel

Array = jax.Array
LossFn = Callable[[Any, dict[str, Array], Array, Array], tuple[Array, dict[str, Array]]]

# What the console shows beside vlkg.metrics.HEADLINE: the region-phrase objective,
# and how often the estimator falls back to the exact game (grounding is shown anyway).
HEADLINE = ("ssim", "fallback_rate")


def default_config() -> dict:
  """Defaults of ``config.loupe``."""
  return dict(
      max_phrases=4,  # P: object phrases per caption kept as phrase players
      region_grid=2,  # R = region_grid**2 regions of the patch grid
      game_images=4,  # pairs per step whose game is exact (2^R + 2^P tower passes each)
      ssim_weight=1.0,
      target_temperature=0.01,  # interactions are O(0.01) cosines
      target_scale=100.0,  # the estimator works in these units (I * scale)
      uncertainty_threshold=0.5,  # predicted variance / variance of the exact targets
      shapley_width=64,
      shapley_depth=0,
      # Token-level objective (a region head over cell rectangles; > 0 turns it and
      # its games on). Off by default: at the world's budget its head stays at
      # chance and it lowers grounding (docs/results.md, LOUPE).
      tsim_weight=0.0,
      tsim_grid=3,  # TSIM players: tsim_grid**2 cells (3: 2^9 image passes per game)
      tsim_images=1,  # pairs whose token-level game is computed exactly
      tsim_every=2,  # ... on every tsim_every-th step (its 2^C passes are the cost)
      tsim_temperature=0.01,
  )


def _cfg(config: ml_collections.ConfigDict) -> dict:
  return methods.method_config(config, "loupe", default_config())


def fields(config: ml_collections.ConfigDict) -> tuple[fields_lib.Field, ...]:
  """The token spans of each caption's object phrases, the phrase players."""
  return (fields_lib.phrase_spans(_cfg(config)["max_phrases"]),)


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  towers = two_towers.build_model(
      config, init_logit_scale=two_towers.CLIP_INIT_LOGIT_SCALE, init_logit_bias=0.0)
  lc = _cfg(config)
  return LoupeModel(
      **two_towers.tower_fields(towers),
      shapley_width=lc["shapley_width"], shapley_depth=lc["shapley_depth"])


def subset_masks(members: np.ndarray) -> np.ndarray:
  """[2^K, T] bool: for each bit mask b over K players (bit k = player k), the union
  of the players' token memberships ``members`` [K, T]."""
  k = members.shape[0]
  bits = shapley.all_coalitions(k)  # [2^K, K]
  return (bits.astype(np.int32) @ members.astype(np.int32)) > 0


def pair_coalitions(num_regions: int, num_phrases: int) -> np.ndarray:
  """[R * P, R + P] bool: coalition {r, p} for every (region r, phrase p), r-major."""
  out = np.zeros((num_regions, num_phrases, num_regions + num_phrases), bool)
  for r in range(num_regions):
    for p in range(num_phrases):
      out[r, p, r] = out[r, p, num_regions + p] = True
  return out.reshape(num_regions * num_phrases, -1)


def exact_pair_interactions(model, params, images: Array, texts: Array,
                            region_members: np.ndarray, phrase_members: Array) -> Array:
  """Exact I([{r, p}]) [M, R, P] of M (image, caption) games, by factorisation.

  Args:
    model: a ``TwoTowers`` (or subclass).
    params: its params.
    images: [M, H, W, 3] normalised images.
    texts: [M, L] token ids.
    region_members: [R, N] bool patches of each region.
    phrase_members: [M, P, L] bool tokens of each phrase (an empty phrase is a
      dummy player: all its interactions are 0).
  """
  m, length = texts.shape
  r = region_members.shape[0]
  p = phrase_members.shape[1]
  patch_masks = jnp.asarray(subset_masks(region_members))  # [2^R, N]
  bits = jnp.asarray(shapley.all_coalitions(p).astype(np.int32))  # [2^P, P]
  token_masks = jnp.einsum("sp,mpl->msl", bits, phrase_members.astype(jnp.int32)) > 0
  # Tokens of no phrase (lead-ins, relation words) are context, always kept, as in
  # ``games.towers_game``.
  token_masks = token_masks | ~jnp.any(phrase_members, axis=1)[:, None, :]
  n_img, n_txt = patch_masks.shape[0], token_masks.shape[1]
  zimg = model.apply(
      {"params": params}, jnp.repeat(images, n_img, axis=0),
      patch_mask=jnp.tile(patch_masks, (m, 1)),
      method=type(model).embed_images).reshape(m, n_img, -1)
  ztxt = model.apply(
      {"params": params}, jnp.repeat(texts, n_txt, axis=0),
      token_mask=token_masks.reshape(m * n_txt, length),
      method=type(model).embed_texts).reshape(m, n_txt, -1)
  values = jnp.einsum("mid,mtd->mti", zimg, ztxt)  # [M, 2^P, 2^R]
  table = values.reshape(m, n_img * n_txt)  # index = region bits + phrase bits << R
  coalitions = jnp.asarray(pair_coalitions(r, p))
  _, inter = jax.vmap(shapley.exact_from_table, in_axes=(0, None))(table, coalitions)
  return inter.reshape(m, r, p)


def exact_region_interactions(model, params, images: Array, texts: Array,
                               cell_members: np.ndarray, candidates: np.ndarray) -> Array:
  """Exact I([S]) [M, K] of K candidate regions in M token-level games (TSIM).

  The players are cells (``cell_members`` [C, N] bool patches); the caption is
  kept whole. v(S) = <f(patches of the cells in S), g(caption)>, so the game
  costs 2^C image passes and one text pass per pair.

  Args:
    model: a ``TwoTowers`` (or subclass).
    params: its params.
    images: [M, H, W, 3] normalised images.
    texts: [M, L] token ids.
    cell_members: [C, N] bool.
    candidates: [K, C] bool candidate regions, each with at least one cell.
  """
  m = images.shape[0]
  patch_masks = jnp.asarray(subset_masks(cell_members))  # [2^C, N]
  n_img = patch_masks.shape[0]
  zimg = model.apply(
      {"params": params}, jnp.repeat(images, n_img, axis=0),
      patch_mask=jnp.tile(patch_masks, (m, 1)),
      method=type(model).embed_images).reshape(m, n_img, -1)
  ztxt = model.apply({"params": params}, texts, method=type(model).embed_texts)
  table = jnp.einsum("mid,md->mi", zimg, ztxt)  # [M, 2^C], index = cell bits
  _, inter = jax.vmap(shapley.exact_from_table, in_axes=(0, None))(
      table, jnp.asarray(candidates))
  return inter


def candidate_features(img_tokens: Array, candidate_members: Array) -> Array:
  """L2-normalised mean patch-token features [B, K, D] of K candidate regions."""
  cm = candidate_members.astype(jnp.float32)
  feats = jnp.einsum("kn,bnd->bkd", cm, img_tokens) / jnp.sum(cm, 1)[None, :, None]
  return _normalise(feats)


def soft_target_kl(logits: Array, targets: Array, valid: Array, temperature: float,
                   axis: int) -> Array:
  """Mean over valid rows of KL(softmax(targets / T) ‖ softmax(logits)) along
  ``axis``; no gradient is taken through the targets. ``valid`` has the shape of
  ``logits`` without ``axis``."""
  target = jax.nn.softmax(jax.lax.stop_gradient(targets) / temperature, axis)
  logq = jax.nn.log_softmax(logits, axis=axis)
  kl = jnp.sum(target * (jnp.log(jnp.maximum(target, 1e-30)) - logq), axis=axis)
  w = valid.astype(jnp.float32)
  return jnp.sum(kl * w) / jnp.maximum(jnp.sum(w), 1.0)


def _normalise(x: Array, axis: int = -1) -> Array:
  """x / |x|, and 0 (with a finite gradient) for an all-zero x (an empty phrase)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), 1e-12))


def region_phrase_features(img_tokens: Array, txt_tokens: Array, region_members: Array,
                           phrase_members: Array) -> tuple[Array, Array]:
  """L2-normalised mean token features of regions [B, R, D] and phrases [B, P, D]."""
  rm = region_members.astype(jnp.float32)
  regions = jnp.einsum("rn,bnd->brd", rm, img_tokens) / jnp.sum(rm, 1)[None, :, None]
  pm = phrase_members.astype(jnp.float32)
  phrases = jnp.einsum("bpl,bld->bpd", pm, txt_tokens) / jnp.maximum(
      jnp.sum(pm, -1), 1.0)[..., None]
  return _normalise(regions), _normalise(phrases)


def ssim_loss(align_logits: Array, target_interactions: Array, phrase_valid: Array,
              temperature: float) -> Array:
  """Mean over valid (image, phrase) of KL(softmax_r(I / T) ‖ softmax_r(logits)).

  Args:
    align_logits: [B, R, P] alignment logits.
    target_interactions: [B, R, P] interactions (no gradient is taken through them).
    phrase_valid: [B, P] bool.
    temperature: the targets' softmax temperature.
  """
  return soft_target_kl(align_logits, target_interactions, phrase_valid, temperature,
                        axis=1)


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict) -> LossFn:
  """Returns ``loss_fn(params, batch, rng, step) -> (loss, metrics)``.

  ``batch``: ``image`` [B, H, W, 3] normalised, ``text`` [B, L], ``phrase_spans``
  [B, P, 2]. Metrics: CLIP's, ``clip_loss``, ``ssim``, ``shapley_nll``,
  ``fallback_rate``, ``uncovered_rate``, ``estimator_corr`` (correlation of the
  estimator's means with the exact interactions of this step's game pairs), and
  with TSIM ``tsim``, ``tsim_top1`` (the head's best candidate is the one with the
  highest interaction), ``tsim_interaction_abs`` and ``tsim_active`` (whether this
  step ran the token-level game; the other three are 0 when it did not).
  """
  lc = _cfg(config)
  image = config.model.image
  grid = config.model.image_size // image.patch_size
  region_members = games.grid_regions(grid, grid, lc["region_grid"], lc["region_grid"])
  r = region_members.shape[0]
  max_phrases = lc["max_phrases"]
  coalitions = jnp.asarray(pair_coalitions(r, max_phrases))
  m = lc["game_images"]
  scale_t = lc["target_scale"]
  tsim_on = lc["tsim_weight"] > 0
  if tsim_on:
    tg = lc["tsim_grid"]
    cells = games.grid_regions(grid, grid, tg, tg)
    candidates = games.cell_rectangles(tg, tg, min_cells=2)  # [K, C]
    candidate_members = jnp.asarray((candidates.astype(np.int32)
                                     @ cells.astype(np.int32)) > 0)  # [K, N]

  def loss_fn(params, batch, rng, step):
    del rng
    b, length = batch["text"].shape
    zimg, ztxt, extras = model.apply({"params": params}, batch["image"], batch["text"],
                                     return_tokens=True)
    contrastive, metrics = clip.clip_loss(zimg, ztxt, extras["logit_scale"])
    phrase_members = span_mask(batch["phrase_spans"], length)  # [B, P, L]
    phrase_valid = jnp.any(phrase_members, axis=-1)  # [B, P]
    regions, phrases = region_phrase_features(
        extras["img_tokens"], extras["txt_tokens"], jnp.asarray(region_members),
        phrase_members)

    # The estimator's view of every pair (stop-gradient inputs).
    sg = jax.lax.stop_gradient
    feats = jnp.concatenate([
        jnp.concatenate([sg(regions), jnp.einsum("brd,bd->br", sg(regions), sg(ztxt))[..., None],
                         jnp.ones((b, r, 1)), jnp.zeros((b, r, 1))], -1),
        jnp.concatenate([sg(phrases), jnp.einsum("bpd,bd->bp", sg(phrases), sg(zimg))[..., None],
                         jnp.zeros((b, max_phrases, 1)), jnp.ones((b, max_phrases, 1))], -1),
    ], axis=1)
    player_mask = jnp.concatenate([jnp.ones((b, r), bool), phrase_valid], axis=1)
    pair_valid = jnp.broadcast_to(phrase_valid[:, None, :], (b, r, max_phrases))
    mean, var = model.apply({"params": params}, feats,
                            jnp.broadcast_to(coalitions, (b,) + coalitions.shape),
                            player_mask, method=LoupeModel.estimate)
    mean, var = mean.reshape(b, r, max_phrases), var.reshape(b, r, max_phrases)
    pv = pair_valid.astype(jnp.float32)
    uncertainty = jnp.sum(var * pv, (1, 2)) / jnp.maximum(jnp.sum(pv, (1, 2)), 1.0)
    has_phrase = jnp.any(phrase_valid, axis=1)

    # Exact games for the most uncertain pairs (that have a phrase).
    _, game_idx = jax.lax.top_k(jnp.where(has_phrase, uncertainty, -1.0), m)
    exact = exact_pair_interactions(
        model, sg(params), batch["image"][game_idx], batch["text"][game_idx],
        region_members, phrase_members[game_idx])
    exact = sg(exact)
    game_valid = pair_valid[game_idx].astype(jnp.float32)
    nll = jnp.sum(gaussian_nll(mean[game_idx], var[game_idx], scale_t * exact)
                  * game_valid) / jnp.maximum(jnp.sum(game_valid), 1.0)

    in_game = jnp.zeros((b,), bool).at[game_idx].set(True)
    targets = (mean / scale_t).at[game_idx].set(exact)
    w = game_valid
    def centred(x):
      return (x - jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)) * w
    target_var = jnp.sum(centred(scale_t * exact) ** 2) / jnp.maximum(jnp.sum(w), 1.0)
    uncertain = (uncertainty > lc["uncertainty_threshold"] * target_var) & has_phrase
    reliable = in_game | ~uncertain
    align = extras["logit_scale"] * jnp.einsum("brd,bpd->brp", regions, phrases)
    ssim = ssim_loss(align, targets, phrase_valid & reliable[:, None],
                     lc["target_temperature"])

    e, t = mean[game_idx] / scale_t, exact
    corr = jnp.sum(centred(e) * centred(t)) / jnp.maximum(
        jnp.sqrt(jnp.sum(centred(e) ** 2) * jnp.sum(centred(t) ** 2)), 1e-12)
    n_phr = jnp.maximum(jnp.sum(has_phrase), 1)
    metrics.update(
        clip_loss=contrastive, ssim=ssim, shapley_nll=nll,
        fallback_rate=jnp.sum(uncertain) / n_phr,
        uncovered_rate=jnp.sum(uncertain & ~in_game) / n_phr,
        estimator_corr=corr,
        exact_interaction_abs=jnp.sum(jnp.abs(t) * w) / jnp.maximum(jnp.sum(w), 1.0))
    loss = contrastive + lc["ssim_weight"] * ssim + nll

    if tsim_on:
      n = lc["tsim_images"]

      def token_level(params):
        region_inter = sg(exact_region_interactions(
            model, sg(params), batch["image"][:n], batch["text"][:n], cells,
            candidates))
        logits = model.apply(
            {"params": params},
            candidate_features(extras["img_tokens"][:n], candidate_members), ztxt[:n],
            method=LoupeModel.score_regions)
        tsim = soft_target_kl(logits, region_inter, jnp.ones((n,), bool),
                              lc["tsim_temperature"], axis=1)
        top1 = jnp.mean(jnp.argmax(logits, 1) == jnp.argmax(region_inter, 1))
        return tsim, top1, jnp.mean(jnp.abs(region_inter))

      # Every tsim_every-th step: a cond, so the skipped steps run none of it (and
      # the step compiles once).
      active = step % lc["tsim_every"] == 0
      tsim, top1, inter_abs = jax.lax.cond(
          active, token_level, lambda p: (jnp.zeros(()), jnp.zeros(()), jnp.zeros(())),
          params)
      metrics.update(tsim=tsim, tsim_top1=top1, tsim_interaction_abs=inter_abs,
                     tsim_active=active.astype(jnp.float32))
      loss = loss + lc["tsim_weight"] * tsim
    return loss, metrics

  return loss_fn


# The paper's claim (Li et al., NeurIPS 2022: zero-shot grounding with no box
# supervision), as `python -m vlkg.tools.results` measures it on the world
# (vlkg.results.claims).
from vlkg.results.claims import Claim  # noqa: E402  (declarations, kept at the end)

CLAIMS = (
    Claim(name="grounding", metric="grounding/pointing_acc", target=2.0, rule="ratio",
          paper="phrase grounding learned from image-text pairs alone"),
)
