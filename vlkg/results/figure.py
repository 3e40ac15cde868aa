"""``results.png``: one panel per suite, the runs side by side with error bars.

Drawn with PIL, as ``vlkg.tools.plot`` draws, so that the protocol needs no
plotting library: a bar per run (the base first, in grey, a single value), the
mean over seeds with a whisker of ± one standard error, on a fixed 0–1 axis so
that panels compare at a glance.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from vlkg.results import report

PANEL_W, PANEL_H = 200, 160
PLOT_TOP, PLOT_BOTTOM = 26, 140  # the 0-1 axis, in panel pixels
BAR_LEFT, BAR_RIGHT = 30, 192
COLUMNS = 4
LEGEND_H = 22
BASE_COLOR = (150, 150, 150)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
           (148, 103, 189), (140, 86, 75), (227, 119, 194), (23, 190, 207),
           (188, 189, 34))


def value_y(value: float) -> int:
  """Panel y of an accuracy on the clipped 0-1 axis."""
  value = min(max(value, 0.0), 1.0)
  return round(PLOT_BOTTOM - value * (PLOT_BOTTOM - PLOT_TOP))


def bar_span(index: int, count: int) -> tuple[int, int]:
  """Left and right panel x of bar ``index`` of ``count``."""
  width = (BAR_RIGHT - BAR_LEFT) / count
  return round(BAR_LEFT + index * width + 2), round(BAR_LEFT + (index + 1) * width - 2)


def colors(names: Sequence[str]) -> dict[str, tuple[int, int, int]]:
  return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def render(base: Mapping[str, float], runs: Mapping, metrics: Sequence[str]):
  """A PIL image; metrics that no run has are left out."""
  from PIL import Image, ImageDraw, ImageFont
  font = ImageFont.load_default()
  names = list(runs)
  palette = colors(names)
  shown = [m for m in metrics if m in base or report.run_stats(runs, m)]
  rows = max(1, -(-len(shown) // COLUMNS))
  canvas = Image.new("RGB", (PANEL_W * COLUMNS, LEGEND_H + PANEL_H * rows), "white")
  draw = ImageDraw.Draw(canvas)
  x = 6
  for name, color in [("base", BASE_COLOR), *palette.items()]:
    draw.rectangle([x, 6, x + 10, 16], fill=color)
    draw.text((x + 14, 5), name, fill="black", font=font)
    x += 14 + 7 * len(name) + 14
  bars = ["base", *names]
  for k, metric in enumerate(shown):
    ox = (k % COLUMNS) * PANEL_W
    oy = LEGEND_H + (k // COLUMNS) * PANEL_H
    draw.text((ox + 4, oy + 4), metric, fill="black", font=font)
    for tick in (0.0, 0.5, 1.0):
      y = oy + value_y(tick)
      draw.line([ox + BAR_LEFT - 2, y, ox + BAR_RIGHT, y], fill=(220, 220, 220))
      draw.text((ox + 4, y - 6), f"{tick:.1f}", fill="gray", font=font)
    stats = report.run_stats(runs, metric)
    for i, name in enumerate(bars):
      if name == "base":
        mean, se, color = base.get(metric), None, BASE_COLOR
      elif name in stats:
        mean, se, color = stats[name].mean, stats[name].se, palette[name]
      else:
        continue
      if mean is None:
        continue
      x0, x1 = bar_span(i, len(bars))
      draw.rectangle([ox + x0, oy + value_y(mean), ox + x1, oy + value_y(0.0)],
                     fill=color)
      if se:
        xm = ox + (x0 + x1) // 2
        lo, hi = oy + value_y(mean - se), oy + value_y(mean + se)
        draw.line([xm, lo, xm, hi], fill="black")
        draw.line([xm - 3, lo, xm + 3, lo], fill="black")
        draw.line([xm - 3, hi, xm + 3, hi], fill="black")
  return canvas


def write(path: str, base: Mapping[str, float], runs: Mapping,
          metrics: Sequence[str] = report.SUITE_METRICS) -> None:
  render(base, runs, metrics).save(path)
