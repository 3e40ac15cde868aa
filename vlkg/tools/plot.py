"""Pictures for people: sample grids of the world (and, later, interaction maps).

    python -m vlkg.tools.plot world [--config configs/clip.py] [--out docs/world_samples.png]

The world grid shows training scenes with the captions they are stored with, and
test_comp scenes (held-out color-shape pairs) with their first caption.
"""

from __future__ import annotations

import textwrap

import numpy as np
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/clip.py", "Config file.",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", "docs/world_samples.png", "Where to write the PNG.")
_ROWS = flags.DEFINE_integer("rows", 3, "Rows of samples.")
_COLS = flags.DEFINE_integer("cols", 4, "Columns of samples.")
_SCALE = flags.DEFINE_integer("scale", 3, "Pixel upscaling of each image.")


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
  from vlkg.data.world import build, render, scene as scene_lib
  spec = build.world_spec(config.world)
  images, texts = [], []
  for k in range(rows * cols):
    split, index = ("test_comp", k) if k >= (rows - 1) * cols else ("train", k)
    s = scene_lib.sample_scene(spec, split, index)
    images.append(render.render(s))
    caps = build.scene_captions(spec, config.world, s)
    texts.append(caps if split == "train" else [f"[test_comp] {caps[0]}"])
  caption_grid(images, texts, cols, scale).save(out)
  print(out)


def main(argv):
  if len(argv) != 2 or argv[1] not in ("world",):
    raise app.UsageError("usage: python -m vlkg.tools.plot world [--config ...]")
  plot_world(_CONFIG.value, _OUT.value, _ROWS.value, _COLS.value, _SCALE.value)


if __name__ == "__main__":
  app.run(main)
