"""Pictures for people: sample grids of the world, and patch-phrase interaction maps.

    python -m vlkg.tools.plot world [--config configs/clip.py]
        [--out docs/world_samples.png]
    python -m vlkg.tools.plot interactions --workdir DIR [--data DATASET_DIR]
        [--out FILE] [--num N] [--shapley [--regions 4] [--samples 32]]

The world grid shows training scenes with the captions they are stored with, and
test_comp scenes (held-out color-shape pairs) with their first caption.

The interaction maps (LOUPE, Li et al., NeurIPS 2022) show, for the first ``--num`` test images
of a run's world (``--data``, default the dataset of ``DIR/config.json``), the
image with its ground-truth boxes and then one map per object phrase: the phrases,
heatmaps and boxes that `vlkg.evaluators.grounding` scores. Each map is the cosine
similarity of the phrase's text embedding with every patch token, upsampled to
the image by nearest neighbour (one block per patch), min-max scaled (the range
is printed) and blended over the image; the green square is the object's box, the
white cross the peak, the cyan frame the predicted box. With ``--shapley`` each
phrase also gets the semantics-level interaction I([region, phrase]) of
`vlkg.interactions`: the image cut into ``--regions`` x ``--regions`` regions of
the patch grid (``games.grid_regions``), the phrase's tokens as one more player
(the EOS, always kept, is context), v(S) the two towers' cosine similarity with
only S kept (``games.towers_game``; a fused-text model's plain text tower), I
estimated by antithetic Monte Carlo (``shapley.monte_carlo_interactions``, seeded).
That map is red where the region and the phrase work together, blue where they
work against each other, on a scale symmetric about 0. Default out:
``DIR/interactions.png`` (``interactions_shapley.png`` with ``--shapley``).
PIL only.
"""

from __future__ import annotations

import os
import textwrap

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vlkg import console
from vlkg.files import atomic_write

_CONFIG = config_flags.DEFINE_config_file("config", "configs/clip.py", "Config file.",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Where to write the PNG (default: "
                           "docs/world_samples.png; DIR/interactions.png).")
_ROWS = flags.DEFINE_integer("rows", 3, "Rows of samples.")
_COLS = flags.DEFINE_integer("cols", 4, "Columns of samples.")
_SCALE = flags.DEFINE_integer("scale", 3, "Pixel upscaling of each image.")
_WORKDIR = flags.DEFINE_string("workdir", None, "interactions: run directory.")
_DATA = flags.DEFINE_string("data", None, "interactions: world dataset directory "
                            "(default: the run's own).")
_NUM = flags.DEFINE_integer("num", 4, "interactions: test images to show.")
_SHAPLEY = flags.DEFINE_bool("shapley", False, "interactions: also show I([region, "
                             "phrase]) by Monte Carlo.")
_REGIONS = flags.DEFINE_integer("regions", 4, "interactions: regions per side.")
_SAMPLES = flags.DEFINE_integer("samples", 32, "interactions: Monte Carlo samples "
                                "per coalition (even).")


def caption_grid(images: list[np.ndarray], texts: list[list[str]], cols: int,
                 scale: int):
  """Images (upscaled, nearest) above their wrapped captions, in a grid."""
  from PIL import Image, ImageDraw, ImageFont
  font = ImageFont.load_default()
  side = images[0].shape[0] * scale
  wrap = max(16, side // 6)
  lines = [[l for t in ts for l in textwrap.wrap("- " + t, wrap)] for ts in texts]
  text_h = 12 * max(len(l) for l in lines) + 8
  rows = -(-len(images) // cols)
  cell_w, cell_h = side + 16, side + text_h + 16
  canvas = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
  draw = ImageDraw.Draw(canvas)
  for k, (image, ls) in enumerate(zip(images, lines)):
    x, y = (k % cols) * cell_w + 8, (k // cols) * cell_h + 8
    canvas.paste(Image.fromarray(image).resize((side, side), Image.NEAREST), (x, y))
    for j, line in enumerate(ls):
      draw.text((x, y + side + 4 + 12 * j), line, fill="black", font=font)
  return canvas


def plot_world(config, out: str, rows: int, cols: int, scale: int) -> None:
  from vlkg.data import world as world_lib
  from vlkg.data.world import build, render
  world = world_lib.settings(config)
  spec = build.world_spec(world)
  images, texts = [], []
  for k in range(rows * cols):
    split, index = ("test_comp", k) if k >= (rows - 1) * cols else ("train", k)
    s, caps = build.scene_and_captions(spec, world, split, index)
    images.append(render.render(s))
    texts.append(caps if split == "train" else [f"[test_comp] {caps[0]}"])
  grid = caption_grid(images, texts, cols, scale)
  atomic_write(out, lambda f: grid.save(f, format="PNG"))
  print(out)


# ----------------------------------------------------------- interaction maps

# Color ramps as (position, RGB) anchors, interpolated linearly.
_HEAT = ((0.0, (0, 0, 4)), (0.35, (120, 28, 109)), (0.65, (237, 105, 37)),
         (1.0, (252, 255, 164)))  # dark to bright, like matplotlib's "inferno"
_DIVERGING = ((0.0, (33, 102, 172)), (0.5, (247, 247, 247)), (1.0, (178, 24, 43)))
_LINE = 12  # pixels per text line of PIL's default font


def colorize(values: np.ndarray, ramp=_HEAT) -> np.ndarray:
  """uint8 ``[..., 3]`` colors of ``values`` in [0, 1] along ``ramp``."""
  v = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
  stops = np.array([p for p, _ in ramp])
  colors = np.array([c for _, c in ramp], np.float64)
  out = np.stack([np.interp(v, stops, colors[:, k]) for k in range(3)], axis=-1)
  return np.round(out).astype(np.uint8)


def overlay(image: np.ndarray, grid_colors: np.ndarray, side: int,
            alpha: float = 0.6) -> np.ndarray:
  """The image upscaled to ``side`` with a ``[g, g, 3]`` map blended over it, each
  patch a block (nearest neighbour)."""
  from PIL import Image
  base = np.asarray(Image.fromarray(image).resize((side, side), Image.NEAREST),
                    np.float64)
  top = np.asarray(Image.fromarray(grid_colors).resize((side, side), Image.NEAREST),
                   np.float64)
  return np.round(alpha * top + (1 - alpha) * base).astype(np.uint8)


def _frame(draw, box, scale: float, color: str, width: int = 2) -> None:
  x, y, w, h = (v * scale for v in box)
  draw.rectangle([x, y, x + w - 1, y + h - 1], outline=color, width=width)


def _cross(draw, x: float, y: float, size: int = 5) -> None:
  for fill, width in (("black", 4), ("white", 2)):
    draw.line([x - size, y, x + size, y], fill=fill, width=width)
    draw.line([x, y - size, x, y + size], fill=fill, width=width)


class Cell:
  """One picture of the grid: pixels, boxes and markers, and its caption lines."""

  def __init__(self, pixels: np.ndarray, lines: list[str], boxes=(), pred=None,
               peak_xy=None):
    self.pixels, self.lines, self.boxes = pixels, lines, boxes
    self.pred, self.peak_xy = pred, peak_xy


def render_rows(rows: list[list[Cell]], scale: float, wrap: int):
  """Rows of cells (all ``side`` pixels square) with wrapped captions below."""
  from PIL import Image, ImageDraw, ImageFont
  font = ImageFont.load_default()
  side = rows[0][0].pixels.shape[0]
  for row in rows:
    for cell in row:
      cell.lines = [l for t in cell.lines for l in textwrap.wrap(t, wrap)]
  text_h = _LINE * max(len(c.lines) for row in rows for c in row) + 6
  cols = max(len(row) for row in rows)
  cell_w, cell_h = side + 12, side + text_h + 12
  canvas = Image.new("RGB", (cols * cell_w, len(rows) * cell_h), "white")
  draw = ImageDraw.Draw(canvas)
  for i, row in enumerate(rows):
    for j, cell in enumerate(row):
      x, y = j * cell_w + 6, i * cell_h + 6
      tile = Image.fromarray(cell.pixels)
      tile_draw = ImageDraw.Draw(tile)
      if cell.pred is not None:
        _frame(tile_draw, cell.pred, scale, "cyan", 1)
      for box in cell.boxes:
        _frame(tile_draw, box, scale, "lime")
      if cell.peak_xy is not None:
        _cross(tile_draw, cell.peak_xy[0] * scale, cell.peak_xy[1] * scale)
      canvas.paste(tile, (x, y))
      for k, line in enumerate(cell.lines):
        draw.text((x, y + side + 3 + _LINE * k), line, fill="black", font=font)
  return canvas


def phrase_ids(tokenizer, text: str) -> tuple[np.ndarray, np.ndarray]:
  """A phrase's ``[L]`` token ids and the positions of its words (no BOS/EOS/pad)."""
  from vlkg.data import tokenizer as tok_lib
  ids = np.asarray(tokenizer.encode([text])[0], np.int32)
  words = np.flatnonzero(~np.isin(ids, (tok_lib.PAD_ID, tok_lib.BOS_ID,
                                        tok_lib.EOS_ID)))
  return ids, words


def region_phrase_interactions(model, image: np.ndarray, text: str, grid: int,
                               regions: int, num_samples: int, seed: int = 0,
                               batch_size: int = 512):
  """I([region r, phrase]) for each of ``regions``^2 regions, with standard errors.

  Args:
    model: a loaded `vlkg.api.Model`.
    image: uint8 ``[H, W, 3]`` at the model's size.
    text: the phrase.
    grid: the patch grid's side.
    regions: regions per side.
    num_samples: Monte Carlo samples per coalition (even: antithetic pairs).
    seed: the PRNG seed; the result is a pure function of the arguments.
    batch_size: coalitions per call of the towers.

  Returns:
    ``(interaction, se)``, float ``[regions, regions]`` each.
  """
  import jax
  from vlkg import preprocess
  from vlkg.interactions import games, shapley
  ids, words = phrase_ids(model.tokenizer, text)
  cells = games.grid_regions(grid, grid, regions, regions)          # [R, P]
  phrase = np.zeros((1, len(ids)), bool)
  phrase[0, words] = True
  membership = games.regions_and_phrases(cells, phrase)             # [R + 1, P + L]
  game = games.towers_game(model.module, {"params": model.params},
                           preprocess.normalize_images(image), ids, membership)
  r = len(cells)
  pairs = np.zeros((r, r + 1), bool)
  pairs[np.arange(r), np.arange(r)] = True
  pairs[:, r] = True
  est = shapley.monte_carlo_interactions(game, pairs, jax.random.key(seed),
                                         num_samples, antithetic=True,
                                         batch_size=batch_size)
  shape = (regions, regions)
  return (np.asarray(est.interaction).reshape(shape),
          np.asarray(est.interaction_se).reshape(shape))


def _fmt(x: float) -> str:
  return f"{x:+.3f}"


def interaction_rows(model, images: np.ndarray, per_image, scale: int,
                     threshold: float = 0.5, shapley_regions: int | None = None,
                     num_samples: int = 32) -> list[list[Cell]]:
  """The grid of `plot_interactions`: one row per image."""
  from vlkg.evaluators import grounding
  side = images.shape[1] * scale
  hw = images.shape[1:3]
  tokens = model.encode_image_tokens(images)
  texts = sorted({p.text for ps in per_image for p in ps})
  emb = dict(zip(texts, model.encode_texts(texts))) if texts else {}
  g = grounding.grid_side(tokens.shape[1])
  rows = []
  for i, (image, phrases) in enumerate(zip(images, per_image)):
    big = overlay(image, np.zeros((g, g, 3), np.uint8), side, alpha=0.0)
    row = [Cell(big, [f"test image {i}", f"{len(phrases)} object phrase(s)"],
                boxes=[p.box for p in phrases])]
    for k, p in enumerate(phrases):
      heat = grounding.heatmaps(tokens[i], emb[p.text][None])[0]
      s = grounding.score(heat, p.box, hw, threshold)
      lo, hi = float(heat.min()), float(heat.max())
      scaled = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
      r, c = grounding.peak(heat)
      peak_xy = ((c + 0.5) * hw[1] / g, (r + 0.5) * hw[0] / g)
      row.append(Cell(overlay(image, colorize(scaled), side), [
          p.text, f"cos {_fmt(lo)}..{_fmt(hi)}",
          f"{'hit' if s.hit else 'miss'}, IoU {s.iou:.2f}"],
          boxes=[p.box], pred=s.box, peak_xy=peak_xy))
      if shapley_regions:
        inter, se = region_phrase_interactions(model, image, p.text, g,
                                               shapley_regions, num_samples, seed=k)
        bound = float(np.max(np.abs(inter))) or 1.0
        colors = colorize(0.5 + 0.5 * inter / bound, _DIVERGING)
        row.append(Cell(overlay(image, colors, side), [
            f"I([region, {p.text}])", f"|I| <= {bound:.3f}",
            f"MC se ~ {float(np.mean(se)):.3f}"], boxes=[p.box]))
    rows.append(row)
  return rows


def plot_interactions(workdir: str, out: str | None = None, num: int = 4,
                      data: str | None = None, scale: int = 3,
                      shapley_regions: int | None = None,
                      num_samples: int = 32) -> str:
  """Writes the interaction-map PNG of a run (see the module doc); returns its path."""
  from vlkg import api
  from vlkg.data import input_pipeline, prepare
  from vlkg.evaluators import grounding
  if num < 1:
    raise ValueError(f"--num must be >= 1, got {num}")
  model = api.load(workdir)
  if data is None:
    data = prepare.run_dataset_dir(workdir)
  per_image, _ = grounding.read_phrases(data, "test", max_images=num)
  images = []
  for batch in input_pipeline.eval_iterator(data, "test", batch_size=num,
                                            fields=("image",), process_index=0,
                                            process_count=1):
    images = list(batch["image"][batch["_mask"]])
    break
  images = np.stack(images[:len(per_image)])
  rows = interaction_rows(model, images, per_image, scale,
                          shapley_regions=shapley_regions, num_samples=num_samples)
  if out is None:
    out = os.path.join(workdir, "interactions_shapley.png" if shapley_regions
                       else "interactions.png")
  canvas = render_rows(rows, scale, wrap=max(16, images.shape[1] * scale // 6))
  # An adaptive palette keeps the file small (the images carry pixel noise).
  small = canvas.quantize(256, dither=0)
  atomic_write(out, lambda f: small.save(f, format="PNG", optimize=True))
  return out


def main(argv):
  usage = ("usage: python -m vlkg.tools.plot world [--config ...] | interactions "
           "--workdir DIR [--data ...] [--out ...] [--num N] [--shapley]")
  if len(argv) != 2 or argv[1] not in ("world", "interactions"):
    raise app.UsageError(usage)
  if argv[1] == "world":
    plot_world(_CONFIG.value, _OUT.value or "docs/world_samples.png", _ROWS.value,
               _COLS.value, _SCALE.value)
    return
  if not _WORKDIR.value:
    raise app.UsageError("interactions needs --workdir\n" + usage)
  print(plot_interactions(_WORKDIR.value, _OUT.value, _NUM.value, _DATA.value,
                          _SCALE.value, _REGIONS.value if _SHAPLEY.value else None,
                          _SAMPLES.value))


if __name__ == "__main__":
  console.run(main)
