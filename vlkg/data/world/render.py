"""Renders the synthetic world's scenes to anti-aliased RGB images.

``render(scene)`` is a pure function of the scene: the only randomness (background
brightness and pixel noise) is drawn from ``scene.noise_seed``, so any host renders
the same bytes for the same scene.

Each object is drawn from a signed distance field (pixels, negative inside) evaluated
at the pixel centers of the object's own patch only. Coverage is that distance on a
one-pixel ramp, which anti-aliases edges without supersampling, and a hollow outline
is the shape minus the shape eroded by the outline width, which is exact for a
distance field. Every shape is scaled, after its rotation, to touch the object's box
(center +- radius) and the distance is clamped to that box, so the scene's boxes are
true ground truth: no pixel centre more than half a pixel outside a box is touched.
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
NOISE_SIGMA = 3.5  # per pixel and channel
STRIPE_LEVEL = 235.0  # the near-white of striped objects
HOLLOW_WIDTH, MIN_HOLLOW_WIDTH_PX = 0.22, 1.2  # outline width: fraction of radius
STRIPE_PERIOD, MIN_STRIPE_PERIOD_PX = 0.5, 3.0  # stripe period: fraction of radius

# Shape proportions, in a unit box [-1, 1]^2 with y pointing down.
ELLIPSE_ASPECT = 0.6
DIAMOND_ASPECT = 0.8  # width / height: a rhombus, never confused with a square
STAR_INNER = 0.45
CROSS_HALF_ARM = 0.4  # arm width is 0.4 of the extent


@dataclasses.dataclass(frozen=True)
class _Geometry:
  """A shape in the unit box: how far it extends, and its distance field.

  ``kind`` is "planes" (a union of convex pieces, each an intersection of half
  planes), "ellipse" or "star". ``planes`` is [pieces, edges, 3] of (nx, ny, c) with
  nx*x + ny*y <= c inside and (nx, ny) a unit vector.
  """
  kind: str
  outline: np.ndarray | None = None  # [n, 2] points whose hull is the shape
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
  """Half planes [edges, 3] of a convex polygon, in either winding."""
  edges = np.roll(vertices, -1, axis=0) - vertices
  normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
  normals /= np.linalg.norm(normals, axis=1, keepdims=True)
  c = np.sum(normals * vertices, axis=1)
  inward = normals @ vertices.mean(axis=0) > c  # the centroid must be inside
  sign = np.where(inward, -1.0, 1.0)
  return np.concatenate([normals * sign[:, None], (c * sign)[:, None]], axis=1)


def _polygon(vertices: np.ndarray) -> _Geometry:
  return _Geometry("planes", outline=vertices,
                   planes=_planes(vertices)[None].astype(np.float32))


def _rectangle(half_w: float, half_h: float) -> np.ndarray:
  return np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h],
                   [-half_w, half_h]])


def _star_outline() -> np.ndarray:
  points = np.empty((10, 2))
  points[0::2] = _regular(5, -90.0)  # tips; the first one points up
  points[1::2] = _regular(5, -54.0, STAR_INNER)
  return points


def _geometries() -> dict[str, _Geometry]:
  bar, arm = _rectangle(1.0, CROSS_HALF_ARM), _rectangle(CROSS_HALF_ARM, 1.0)
  return {
      "circle": _Geometry("ellipse"),
      "ellipse": _Geometry("ellipse", semi_axes=(1.0, ELLIPSE_ASPECT)),
      "triangle": _polygon(np.array([[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])),
      "square": _polygon(_rectangle(1.0, 1.0)),
      "diamond": _polygon(np.array(
          [[0.0, -1.0], [DIAMOND_ASPECT, 0.0], [0.0, 1.0], [-DIAMOND_ASPECT, 0.0]])),
      "pentagon": _polygon(_regular(5, -90.0)),
      "hexagon": _polygon(_regular(6, 0.0)),  # flat top: unlike the pentagon's apex
      "star": _Geometry("star", outline=_star_outline()),
      "cross": _Geometry("planes", outline=np.concatenate([bar, arm]),
                         planes=np.stack([_planes(bar), _planes(arm)]).astype(np.float32)),
  }


_GEOMETRY = _geometries()


@functools.lru_cache(maxsize=None)
def _pixel_centers(image_size: int) -> np.ndarray:
  return np.arange(image_size, dtype=np.float32) + np.float32(0.5)


@functools.lru_cache(maxsize=None)
def _noise_quantiles() -> np.ndarray:
  """Gaussian quantiles at 2**16 evenly spaced levels, times the noise sigma.

  Indexing them with uniform 16-bit integers is inverse-CDF sampling: Gaussian to
  far below one gray level, at a quarter of the cost of ``standard_normal``.
  """
  dist = statistics.NormalDist(0.0, NOISE_SIGMA)
  n = 2**16
  return np.array([dist.inv_cdf((i + 0.5) / n) for i in range(n)], np.float32)


def _clip01(x: np.ndarray) -> np.ndarray:
  # In place, and two ufuncs: np.clip's dispatch costs more than the work on patches
  # this small.
  np.maximum(x, 0, out=x)
  return np.minimum(x, 1, out=x)


@dataclasses.dataclass(frozen=True)
class _Frame:
  """Maps pixel offsets from the object's center to its unit box."""
  scale: float  # pixels per unit
  cos: float
  sin: float
  mx: float  # the unit-box point that lands on the object's center
  my: float
  hx: float  # half width and height, pixels, of the shape's tight box
  hy: float

  def local(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-box coordinates [h, w] of pixel offsets xs [w] and ys [h]."""
    c, s = self.cos / self.scale, self.sin / self.scale
    u0 = self.mx * self.cos + self.my * self.sin
    v0 = self.my * self.cos - self.mx * self.sin
    u = (xs * np.float32(c) + np.float32(u0))[None, :] + (ys * np.float32(s))[:, None]
    v = (xs * np.float32(-s) + np.float32(v0))[None, :] + (ys * np.float32(c))[:, None]
    return u, v

  def box_distance(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.maximum((np.abs(xs) - np.float32(self.hx))[None, :],
                      (np.abs(ys) - np.float32(self.hy))[:, None])


def _distance(geom: _Geometry, frame: _Frame, xs: np.ndarray,
              ys: np.ndarray) -> np.ndarray:
  """Signed distance [h, w] in pixels from pixel offsets to the shape's outline.

  Where the distance is not exact it is clamped to the shape's tight box: an
  overestimated coverage would otherwise reach past the box at sharp tips.
  """
  if geom.kind == "planes":
    return _planes_distance(geom.planes, frame, xs, ys)
  if geom.semi_axes == (1.0, 1.0):  # a circle, centered: no rotation to undo
    return np.hypot(xs[None, :], ys[:, None]) - np.float32(frame.scale)
  u, v = frame.local(xs, ys)
  if geom.kind == "ellipse":
    d = _ellipse_distance(u, v, *geom.semi_axes)
    d *= np.float32(frame.scale)
    return np.maximum(d, frame.box_distance(xs, ys), out=d)
  d = _star_distance(u, -v, STAR_INNER)  # the star's own frame is y-up
  d *= np.float32(frame.scale)
  return d


def _planes_distance(planes: np.ndarray, frame: _Frame, xs: np.ndarray,
                     ys: np.ndarray) -> np.ndarray:
  # A half plane stays a half plane under the similarity from pixels to the unit
  # box, so each edge is one affine function a*x + b*y + off of the pixel offsets.
  k, c, s, mx, my = frame.scale, frame.cos, frame.sin, frame.mx, frame.my
  to_pixels = np.array([[c, s, k * (mx * c + my * s)],
                        [-s, c, k * (my * c - mx * s)],
                        [0.0, 0.0, -k]], np.float32)
  n_pieces, n_edges, _ = planes.shape
  coef = np.empty((n_pieces, n_edges + 4, 3), np.float32)
  coef[:, :n_edges] = planes @ to_pixels
  # Max-of-planes overestimates coverage past sharp tips; the tight box's sides,
  # added to every convex piece, stop it there.
  hx, hy = frame.hx, frame.hy
  coef[:, n_edges:] = ((1, 0, -hx), (-1, 0, -hx), (0, 1, -hy), (0, -1, -hy))
  coef = coef.reshape(-1, 3)
  d = np.multiply.outer(xs, coef[:, 0])
  d += coef[:, 2]
  d = np.multiply.outer(ys, coef[:, 1])[:, None, :] + d
  d = d.reshape(len(ys), len(xs), n_pieces, n_edges + 4).max(axis=-1)
  return d[..., 0] if n_pieces == 1 else d.min(axis=-1)


def _ellipse_distance(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
  # First-order distance (value over gradient norm): exact on the axes and on the
  # outline itself, which is where coverage and outline widths are decided.
  k0 = np.hypot(u * np.float32(1 / a), v * np.float32(1 / b))
  k1 = np.hypot(u * np.float32(1 / a**2), v * np.float32(1 / b**2))
  return k0 * (k0 - 1) / np.maximum(k1, np.float32(1e-6))


_K1 = (math.cos(math.pi / 5), -math.sin(math.pi / 5))


def _star_distance(x: np.ndarray, y: np.ndarray, inner: float) -> np.ndarray:
  """Exact distance to a 5-point star of outer radius 1, tip up, y pointing up.

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


class _Patch(NamedTuple):
  y0: int
  x0: int
  xs: np.ndarray  # [w] pixel-center offsets from the object's center
  ys: np.ndarray  # [h]
  distance: np.ndarray  # [h, w] pixels, negative inside


def _patch(obj: WorldObject, image_size: int) -> _Patch | None:
  """The object's distance field over its tight box; None if off the canvas."""
  geom = _GEOMETRY[obj.shape]
  cos, sin = math.cos(obj.rotation), math.sin(obj.rotation)
  mx, my, hx, hy = geom.extent(cos, sin)
  # Scale after rotating, so that the rotated shape (not the upright one) touches
  # the object's box.
  scale = obj.radius / max(hx, hy)
  hx, hy = hx * scale, hy * scale
  x0, x1 = max(0, math.floor(obj.cx - hx)), min(image_size, math.ceil(obj.cx + hx))
  y0, y1 = max(0, math.floor(obj.cy - hy)), min(image_size, math.ceil(obj.cy + hy))
  if x1 <= x0 or y1 <= y0:
    return None
  centers = _pixel_centers(image_size)
  xs = centers[x0:x1] - np.float32(obj.cx)
  ys = centers[y0:y1] - np.float32(obj.cy)
  frame = _Frame(scale, cos, sin, mx, my, hx, hy)
  return _Patch(y0, x0, xs, ys, _distance(geom, frame, xs, ys))


def _coverage(obj: WorldObject, d: np.ndarray) -> np.ndarray:
  """Pixel coverage [h, w]: the distance on a one-pixel ramp."""
  cov = _clip01(np.float32(0.5) - d)
  if obj.texture == "hollow":
    # Outline = shape minus the shape eroded by the width: {d <= -width}.
    width = max(MIN_HOLLOW_WIDTH_PX, HOLLOW_WIDTH * obj.radius)
    cov -= _clip01(np.float32(0.5 - width) - d)
  return cov


def _stripes(obj: WorldObject, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
  """Fraction [h, w] of each pixel covered by the near-white stripes."""
  period = max(MIN_STRIPE_PERIOD_PX, STRIPE_PERIOD * obj.radius)
  angle = math.pi / 4 + obj.rotation  # the stripes turn with the object
  dx, dy = math.cos(angle), math.sin(angle)
  phase = ((xs * np.float32(dx / period))[None, :]
           + (ys * np.float32(dy / period))[:, None])
  phase -= np.floor(phase)
  # Distance into the white half-period, along the stripe normal, in units of the
  # pixel's footprint along that normal: a box-filtered edge.
  footprint = abs(dx) + abs(dy)
  inside = np.abs(phase - np.float32(0.75), out=phase)
  inside *= np.float32(-period / footprint)
  inside += np.float32(0.25 * period / footprint + 0.5)
  return _clip01(inside)


def _paint(canvas: np.ndarray, obj: WorldObject) -> None:
  """Alpha-blends ``obj`` over ``canvas`` in place."""
  patch = _patch(obj, canvas.shape[0])
  if patch is None:
    return
  h, w = patch.distance.shape
  cov = _coverage(obj, patch.distance)[..., None]
  region = canvas[patch.y0:patch.y0 + h, patch.x0:patch.x0 + w]
  color = np.array(obj.rgb, np.float32) + np.float32(0.5)  # see render()
  if obj.texture == "striped":
    white = _stripes(obj, patch.xs, patch.ys)[..., None]
    color = color + white * (np.float32(STRIPE_LEVEL + 0.5) - color)
  region += cov * (color - region)


def coverage(obj: WorldObject, image_size: int) -> np.ndarray:
  """The fraction [S, S] (float32) of each pixel that ``obj`` paints.

  Hollow objects cover only their outline. Useful as a segmentation mask.
  """
  out = np.zeros((image_size, image_size), np.float32)
  patch = _patch(obj, image_size)
  if patch is not None:
    h, w = patch.distance.shape
    out[patch.y0:patch.y0 + h, patch.x0:patch.x0 + w] = _coverage(obj, patch.distance)
  return out


def render(scene: Scene, *, noise: bool = True) -> np.ndarray:
  """The scene as a uint8 image [S, S, 3]; deterministic in ``scene``.

  ``noise=False`` leaves out the per-pixel noise (the background keeps its
  brightness jitter), for tests that need exact colors.
  """
  s = scene.image_size
  rng = np.random.default_rng(scene.noise_seed)
  level = BACKGROUND_LEVEL + rng.uniform(-BACKGROUND_JITTER, BACKGROUND_JITTER)
  # Every level carries +0.5 so that the final float->uint8 truncation rounds;
  # alpha blending is affine, so the offset survives compositing unchanged.
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
  sizes = {scene.image_size for scene in scenes}
  if len(sizes) > 1:
    raise ValueError(f"render_many needs one image size; got {sorted(sizes)}")
  out = np.empty((len(scenes), scenes[0].image_size, scenes[0].image_size, 3), np.uint8)
  for i, scene in enumerate(scenes):
    out[i] = render(scene, noise=noise)
  return out
