"""Renders the synthetic world's scenes to anti-aliased RGB images.

``render(scene)`` is a pure function of the scene: the only randomness (background
brightness and pixel noise) is drawn from ``scene.noise_seed``, so every host renders
the same bytes for the same scene.

Each object is drawn from a signed distance field (pixels, negative inside) evaluated
at the pixel centers of the object's own patch only. Coverage is that distance on a
one-pixel ramp, which anti-aliases edges without supersampling, and a hollow outline
is the shape minus the shape eroded by the outline width. Every shape is scaled,
after its rotation, to touch the object's box (center +- radius) without leaving it,
and only the pixels whose centers lie less than half a pixel outside that box are
painted, so the scene's boxes are true ground truth.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from typing import NamedTuple, Sequence

import numpy as np

from vlkg.data.world.scene import Scene, WorldObject

BACKGROUND_LEVEL = 207.5  # light neutral gray
BACKGROUND_JITTER = 6.0  # +- uniform, per image
NOISE_SIGMA = 3.5  # per pixel and channel, objects included
STRIPE_LEVEL = 235.0  # the near-white of striped objects
HOLLOW_WIDTH, MIN_HOLLOW_WIDTH_PX = 0.22, 1.2  # outline width: fraction of radius
STRIPE_PERIOD, MIN_STRIPE_PERIOD_PX = 0.5, 3.0  # stripe period: fraction of radius

# Shape proportions, in a unit box [-1, 1]^2 with y pointing down.
ELLIPSE_ASPECT = 0.6
DIAMOND_ASPECT = 0.8  # width / height: a rhombus, never confused with a square
STAR_INNER = 0.45  # inner over outer radius
CROSS_HALF_ARM = 0.4  # the arm width is 0.4 of the extent


# ---------------------------------------------------------------------------
# Shapes in the unit box.


@dataclasses.dataclass(frozen=True)
class _Geometry:
  """A shape in the unit box: how far it extends, and how its distance is found.

  ``kind`` is "planes" (a union of convex pieces, each an intersection of half
  planes), "ellipse" or "star". ``planes`` is [pieces, edges, 3] of (nx, ny, c),
  nx * x + ny * y <= c inside, with (nx, ny) a unit vector.
  """
  kind: str
  outline: np.ndarray | None = None  # [n, 2] points whose hull is the shape's hull
  planes: np.ndarray | None = None
  semi_axes: tuple[float, float] = (1.0, 1.0)

  def extent(self, cos: float, sin: float) -> tuple[float, float, float, float]:
    """(center x, center y, half width, half height) of the rotated shape's box."""
    if self.kind == "ellipse":
      a, b = self.semi_axes
      return (0.0, 0.0, math.sqrt((a * cos) ** 2 + (b * sin) ** 2),
              math.sqrt((a * sin) ** 2 + (b * cos) ** 2))
    p = self.outline @ np.array([[cos, sin], [-sin, cos]])
    (x0, y0), (x1, y1) = p.min(axis=0).tolist(), p.max(axis=0).tolist()
    return (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2


def _regular(n: int, start_deg: float, radius: float = 1.0) -> np.ndarray:
  t = np.deg2rad(start_deg + 360.0 / n * np.arange(n))
  return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _planes(vertices: np.ndarray) -> np.ndarray:
  """Half planes [edges, 3] of a convex polygon given in either winding."""
  edges = np.roll(vertices, -1, axis=0) - vertices
  normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
  normals /= np.linalg.norm(normals, axis=1, keepdims=True)
  c = np.sum(normals * vertices, axis=1)
  flip = normals @ vertices.mean(axis=0) > c  # the centroid must be inside
  sign = np.where(flip, -1.0, 1.0)[:, None]
  return np.concatenate([normals * sign, c[:, None] * sign], axis=1)


def _polygon(vertices: np.ndarray) -> _Geometry:
  return _Geometry("planes", outline=vertices,
                   planes=_planes(vertices)[None].astype(np.float32))


def _rectangle(half_w: float, half_h: float) -> np.ndarray:
  return np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h],
                   [-half_w, half_h]])


def _star_outline() -> np.ndarray:
  points = np.empty((10, 2))
  points[0::2] = _regular(5, -90.0)  # the tips; the first points up
  points[1::2] = _regular(5, -54.0, STAR_INNER)
  return points


def _geometries() -> dict[str, _Geometry]:
  bar, post = _rectangle(1.0, CROSS_HALF_ARM), _rectangle(CROSS_HALF_ARM, 1.0)
  diamond = [[0.0, -1.0], [DIAMOND_ASPECT, 0.0], [0.0, 1.0], [-DIAMOND_ASPECT, 0.0]]
  return {
      "circle": _Geometry("ellipse"),
      "ellipse": _Geometry("ellipse", semi_axes=(1.0, ELLIPSE_ASPECT)),
      "triangle": _polygon(np.array([[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])),
      "square": _polygon(_rectangle(1.0, 1.0)),
      "diamond": _polygon(np.array(diamond)),
      "pentagon": _polygon(_regular(5, -90.0)),
      # Tip down and flat sides set the hexagon apart from the flat-bottomed pentagon.
      "hexagon": _polygon(_regular(6, -90.0)),
      "star": _Geometry("star", outline=_star_outline()),
      "cross": _Geometry("planes", outline=np.concatenate([bar, post]),
                         planes=np.stack([_planes(bar), _planes(post)]).astype(
                             np.float32)),
  }


_GEOMETRY = _geometries()


# ---------------------------------------------------------------------------
# Distance fields over an object's patch.


@functools.lru_cache(maxsize=512)
def _grid(h: int, w: int) -> np.ndarray:
  """[3, h * w] float32: column, row and 1 of every pixel of an h x w patch."""
  grid = np.ones((3, h, w), np.float32)
  grid[0] = np.arange(w, dtype=np.float32)
  grid[1] = np.arange(h, dtype=np.float32)[:, None]
  grid.flags.writeable = False  # shared by every caller
  return grid.reshape(3, h * w)


class _Frame(NamedTuple):
  """Where an object's patch lies, and how its pixels map to the unit box."""
  y0: int  # the patch's first row and column in the image
  x0: int
  h: int
  w: int
  ox: float  # offset of the patch's first pixel center from the object's center
  oy: float
  scale: float  # pixels per unit
  cos: float
  sin: float
  mx: float  # the unit-box point that lands on the object's center
  my: float

  def to_unit(self) -> np.ndarray:
    """[2, 3]: unit-box (u, v) of a patch pixel (column, row, 1)."""
    c, s, k, ox, oy = self.cos, self.sin, self.scale, self.ox, self.oy
    return np.array(
        [[c / k, s / k, (ox * c + oy * s) / k + self.mx * c + self.my * s],
         [-s / k, c / k, (oy * c - ox * s) / k + self.my * c - self.mx * s]],
        np.float32)


def _frame(obj: WorldObject, geom: _Geometry, image_size: int) -> _Frame | None:
  """The object's frame; None when its box misses the canvas."""
  cos, sin = math.cos(obj.rotation), math.sin(obj.rotation)
  mx, my, hx, hy = geom.extent(cos, sin)
  # Scale after rotating, so that the rotated shape (not the upright one) fills the
  # object's box without leaving it.
  scale = obj.radius / max(hx, hy)
  hx, hy = hx * scale, hy * scale
  x0, x1 = max(0, math.floor(obj.cx - hx)), min(image_size, math.ceil(obj.cx + hx))
  y0, y1 = max(0, math.floor(obj.cy - hy)), min(image_size, math.ceil(obj.cy + hy))
  if x1 <= x0 or y1 <= y0:
    return None
  # Only this patch is ever painted: the pixels whose centers lie less than half a
  # pixel outside the tight box, which is inside the object's box.
  return _Frame(y0, x0, y1 - y0, x1 - x0, x0 + 0.5 - obj.cx, y0 + 0.5 - obj.cy,
                scale, cos, sin, mx, my)


def _distance(geom: _Geometry, frame: _Frame) -> np.ndarray:
  """Signed distance [h * w], pixels, from each patch pixel center to the outline."""
  grid = _grid(frame.h, frame.w)
  if geom.kind == "planes":
    return _planes_distance(geom.planes, frame, grid)
  u, v = frame.to_unit() @ grid
  if geom.kind == "star":
    d = _star_distance(u, -v, STAR_INNER)  # the star's own frame is y-up
  elif geom.semi_axes == (1.0, 1.0):
    d = np.hypot(u, v)
    d -= 1
  else:
    d = _ellipse_distance(u, v, *geom.semi_axes)
  d *= np.float32(frame.scale)
  return d


def _planes_distance(planes: np.ndarray, frame: _Frame, grid: np.ndarray) -> np.ndarray:
  # The map from pixels to the unit box is a similarity, so every edge becomes one
  # pixel half plane and the whole field is one small matrix product.
  to_unit = frame.to_unit() * np.float32(frame.scale)
  to_pixels = np.zeros((3, 3), np.float32)
  to_pixels[:2] = to_unit
  to_pixels[2, 2] = -frame.scale
  n_pieces, n_edges, _ = planes.shape
  coef = (planes @ to_pixels).reshape(n_pieces * n_edges, 3)
  # Max over a piece's edges (exact inside a convex piece), min over the pieces.
  d = (coef @ grid).reshape(n_pieces, n_edges, -1).max(axis=1)
  return d[0] if n_pieces == 1 else d.min(axis=0)


def _ellipse_distance(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
  """Distance, in units, to an ellipse of semi-axes a >= b.

  First order (value over gradient norm): exact on the axes and on the outline
  itself, which is where coverage and outline widths are decided.
  """
  k0 = np.hypot(u * np.float32(1 / a), v * np.float32(1 / b))
  k1 = np.hypot(u * np.float32(1 / a**2), v * np.float32(1 / b**2))
  # k0 / k1 always lies in [b, a]; clamping it there also settles 0 / 0 at the
  # center, which would otherwise put the outline (d = 0) on the center pixel.
  ratio = k0 / np.maximum(k1, np.float32(1e-12))
  np.maximum(ratio, np.float32(b), out=ratio)
  np.minimum(ratio, np.float32(a), out=ratio)
  k0 -= 1
  return k0 * ratio


_K1 = (math.cos(math.pi / 5), -math.sin(math.pi / 5))


def _star_distance(x: np.ndarray, y: np.ndarray, inner: float) -> np.ndarray:
  """Exact distance, in units, to a 5-point star of outer radius 1, tip up, y up.

  Inigo Quilez's folding construction: mirror the point into one tenth of the star,
  then measure to the single edge from the tip to the inner corner.
  """
  kx, ky = _K1
  x = np.abs(x)
  t = np.maximum(kx * x + ky * y, 0) * 2
  x, y = x - t * kx, y - t * ky
  t = np.maximum(-kx * x + ky * y, 0) * 2
  x, y = np.abs(x + t * kx), y - t * ky - 1
  bx, by = inner * -ky, inner * kx - 1  # from the tip to the inner corner
  h = _clip01((x * bx + y * by) * (1 / (bx * bx + by * by)))
  dist = np.hypot(x - h * bx, y - h * by)
  return np.copysign(dist, y * bx - x * by)


# ---------------------------------------------------------------------------
# Coverage, texture and compositing.


def _clip01(x: np.ndarray) -> np.ndarray:
  # In place, with two ufuncs: np.clip's dispatch costs more than the work on
  # patches this small.
  np.maximum(x, 0, out=x)
  return np.minimum(x, 1, out=x)


def _coverage(obj: WorldObject, d: np.ndarray) -> np.ndarray:
  """Pixel coverage: the distance on a one-pixel ramp."""
  cov = _clip01(np.float32(0.5) - d)
  if obj.texture == "hollow":
    # The outline is the shape minus the shape eroded by the width, {d <= -width}.
    width = max(MIN_HOLLOW_WIDTH_PX, HOLLOW_WIDTH * obj.radius)
    cov -= _clip01(np.float32(0.5 - width) - d)
  return cov


def _stripes(obj: WorldObject, frame: _Frame) -> np.ndarray:
  """Fraction [h * w] of each patch pixel covered by the near-white stripes."""
  period = max(MIN_STRIPE_PERIOD_PX, STRIPE_PERIOD * obj.radius)
  angle = math.pi / 4 + obj.rotation  # the stripes turn with the object
  dx, dy = math.cos(angle), math.sin(angle)
  to_phase = np.array([dx, dy, dx * frame.ox + dy * frame.oy], np.float32) / period
  phase = to_phase @ _grid(frame.h, frame.w)
  phase -= np.floor(phase)
  # The distance into the white half-period along the stripe normal, over the
  # pixel's footprint along that normal, is a box-filtered edge.
  footprint = abs(dx) + abs(dy)
  inside = np.abs(phase - np.float32(0.75), out=phase)
  inside *= np.float32(-period / footprint)
  inside += np.float32(0.25 * period / footprint + 0.5)
  return _clip01(inside)


def _paint(canvas: np.ndarray, obj: WorldObject) -> None:
  """Alpha-blends ``obj`` over ``canvas`` in place."""
  geom = _GEOMETRY[obj.shape]
  frame = _frame(obj, geom, canvas.shape[0])
  if frame is None:
    return
  h, w = frame.h, frame.w
  cov = _coverage(obj, _distance(geom, frame)).reshape(h, w, 1)
  region = canvas[frame.y0:frame.y0 + h, frame.x0:frame.x0 + w]
  color = np.array(obj.rgb, np.float32) + np.float32(0.5)  # see render()
  if obj.texture == "striped":
    white = _stripes(obj, frame).reshape(h, w, 1)
    color = color + white * (np.float32(STRIPE_LEVEL + 0.5) - color)
  region += cov * (color - region)


@functools.lru_cache(maxsize=None)
def _noise_quantiles() -> np.ndarray:
  """Gaussian quantiles at 2**16 evenly spaced levels, times the noise sigma.

  Indexing them with uniform 16-bit integers is inverse-CDF sampling: Gaussian to
  far below one gray level, at a fraction of the cost of ``standard_normal``.
  """
  dist = statistics.NormalDist(0.0, NOISE_SIGMA)
  n = 2**16
  return np.array([dist.inv_cdf((i + 0.5) / n) for i in range(n)], np.float32)


# ---------------------------------------------------------------------------
# Public API.


def coverage(obj: WorldObject, image_size: int) -> np.ndarray:
  """The fraction [S, S] (float32) of each pixel that ``obj`` paints.

  Hollow objects cover only their outline. Doubles as a segmentation mask.
  """
  out = np.zeros((image_size, image_size), np.float32)
  geom = _GEOMETRY[obj.shape]
  frame = _frame(obj, geom, image_size)
  if frame is not None:
    cov = _coverage(obj, _distance(geom, frame)).reshape(frame.h, frame.w)
    out[frame.y0:frame.y0 + frame.h, frame.x0:frame.x0 + frame.w] = cov
  return out


def render(scene: Scene, *, noise: bool = True) -> np.ndarray:
  """The scene as a uint8 image [S, S, 3]; deterministic in ``scene``.

  ``noise=False`` leaves out the per-pixel noise (the background keeps its
  brightness jitter), for checks that need exact colors.
  """
  s = scene.image_size
  rng = np.random.default_rng(scene.noise_seed)
  level = BACKGROUND_LEVEL + rng.uniform(-BACKGROUND_JITTER, BACKGROUND_JITTER)
  # Every level carries +0.5 so that the final truncation to uint8 rounds; alpha
  # blending is affine, so the offset survives compositing unchanged.
  canvas = np.full((s, s, 3), level + 0.5, np.float32)
  for obj in scene.objects:
    _paint(canvas, obj)
  if noise:
    levels = rng.integers(0, 2**16, size=(s, s, 3), dtype=np.uint16)
    canvas += _noise_quantiles().take(levels)
  np.clip(canvas, 0, 255, out=canvas)
  return canvas.astype(np.uint8)


def render_many(scenes: Sequence[Scene], *, noise: bool = True) -> np.ndarray:
  """Renders scenes of one image size into a uint8 batch [N, S, S, 3]."""
  if not scenes:
    raise ValueError("render_many needs at least one scene")
  sizes = sorted({scene.image_size for scene in scenes})
  if len(sizes) > 1:
    raise ValueError(f"render_many needs scenes of one image size; got {sizes}")
  out = np.empty((len(scenes), sizes[0], sizes[0], 3), np.uint8)
  for i, scene in enumerate(scenes):
    out[i] = render(scene, noise=noise)
  return out
