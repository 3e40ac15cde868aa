"""Tests for vlkg.data.world.render: determinism, colors, textures, boxes, shapes."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from vlkg.data.world import ontology, render
from vlkg.data.world.scene import Scene, WorldObject, WorldSpec, sample_scene

RED, BLUE = (214, 39, 40), (31, 90, 220)
S = 64


def make_object(shape: str = "square", texture: str = "solid", *, cx: float = 32.0,
                cy: float = 32.0, radius: float = 12.0, rotation: float = 0.0,
                rgb: tuple[int, int, int] = RED) -> WorldObject:
  return WorldObject(shape=shape, color="red", size="large", texture=texture, cx=cx,
                     cy=cy, radius=radius, rotation=rotation, rgb=rgb)


def one_object_scene(obj: WorldObject, size: int = S, seed: int = 7) -> Scene:
  return Scene(split="train", index=0, image_size=size, objects=(obj,), noise_seed=seed)


def background_level(image: np.ndarray) -> np.ndarray:
  """Mean color of the 6x6 top-left corner, which no test object reaches."""
  return image[:6, :6].reshape(-1, 3).mean(axis=0)


def test_render_is_deterministic_and_seeded():
  scene = sample_scene(WorldSpec(), "train", 3)
  a, b = render.render(scene), render.render(scene)
  assert a.tobytes() == b.tobytes()
  other = render.render(dataclasses.replace(scene, noise_seed=scene.noise_seed + 1))
  assert other.tobytes() != a.tobytes()
  # The noise is mild: the two renders differ by a few levels per pixel.
  diff = np.abs(a.astype(int) - other.astype(int))
  assert 1.0 < diff.mean() < 15.0


@pytest.mark.parametrize("size", [32, 64, 128, 224])
def test_dtype_and_shape(size):
  scene = sample_scene(WorldSpec(image_size=size), "train", 11)
  image = render.render(scene)
  assert image.dtype == np.uint8
  assert image.shape == (size, size, 3)
  batch = render.render_many([scene, sample_scene(WorldSpec(image_size=size), "val", 2)])
  assert batch.shape == (2, size, size, 3) and batch.dtype == np.uint8
  np.testing.assert_array_equal(batch[0], image)


def test_render_many_rejects_mixed_sizes_and_empty_input():
  with pytest.raises(ValueError, match="one image size"):
    render.render_many([sample_scene(WorldSpec(image_size=s), "train", 0)
                        for s in (32, 64)])
  with pytest.raises(ValueError, match="at least one"):
    render.render_many([])


def test_background_is_light_gray_with_mild_noise():
  levels = []
  for seed in range(8):
    image = render.render(Scene("train", 0, S, (), seed)).astype(float)
    mean = image.reshape(-1, 3).mean(axis=0)
    assert np.all((200 <= mean) & (mean <= 215)), mean
    assert np.ptp(mean) < 1.0  # neutral: channels agree
    assert 2.5 < image.std() < 4.5  # sigma of the per-pixel noise
    levels.append(mean[0])
  assert np.ptp(levels) > 2.0  # the global brightness jitter


def test_solid_square_has_its_color_and_leaves_background_alone():
  obj = make_object("square", radius=14.0)
  image = render.render(one_object_scene(obj)).astype(float)
  center = image[29:35, 29:35].reshape(-1, 3).mean(axis=0)
  np.testing.assert_allclose(center, RED, atol=15)
  far = np.concatenate([image[:10, :10].reshape(-1, 3), image[-10:, -10:].reshape(-1, 3)])
  assert np.all((200 - 16 <= far) & (far <= 215 + 16))
  assert np.all((200 <= far.mean(axis=0)) & (far.mean(axis=0) <= 215))


def test_hollow_circle_shows_background_inside_and_color_on_its_rim():
  obj = make_object("circle", "hollow", radius=12.0, rgb=BLUE)
  image = render.render(one_object_scene(obj)).astype(float)
  bg = background_level(image)
  np.testing.assert_allclose(image[31:33, 31:33].reshape(-1, 3).mean(axis=0), bg, atol=8)
  # Pixel column 42 is centered 10.5 px right of the center, on the 2.6 px rim.
  np.testing.assert_allclose(image[32, 42], BLUE, atol=16)
  np.testing.assert_allclose(image[21, 32], BLUE, atol=16)


def test_striped_square_has_near_white_and_colored_pixels():
  obj = make_object("square", "striped", radius=14.0)
  image = render.render(one_object_scene(obj)).astype(int)
  inside = image[20:44, 20:44].reshape(-1, 3)
  white = np.all(inside > 220, axis=1)
  colored = (inside[:, 0] > 190) & (inside[:, 1] < 70) & (inside[:, 2] < 70)
  assert white.mean() > 0.2, white.mean()
  assert colored.mean() > 0.2, colored.mean()


def test_circle_edges_are_anti_aliased():
  obj = make_object("circle", radius=13.3, cx=31.7, cy=32.2, rgb=BLUE)
  image = render.render(one_object_scene(obj), noise=False).astype(int)
  red = image[..., 0]
  bg = red[0, 0]
  margin = 10
  between = (red > BLUE[0] + margin) & (red < bg - margin)
  # A circle of radius 13 crosses ~80 pixels; most get a partial blend.
  assert between.sum() > 40, between.sum()
  ys, xs = np.nonzero(between)
  dist = np.hypot(xs + 0.5 - obj.cx, ys + 0.5 - obj.cy)
  assert np.all(np.abs(dist - obj.radius) < 1.0)


def test_coverage_areas_match_geometry():
  # Pixel-aligned square: exact. Circle and ring: within half a percent.
  square = render.coverage(make_object("square", radius=10.0), S)
  assert square.sum() == pytest.approx(400.0, abs=1e-3)
  circle = render.coverage(make_object("circle", radius=15.3, cx=31.6), S)
  assert circle.sum() == pytest.approx(math.pi * 15.3**2, rel=5e-3)
  ring = render.coverage(make_object("circle", "hollow", radius=15.0), S)
  width = render.HOLLOW_WIDTH * 15.0
  assert ring.sum() == pytest.approx(math.pi * (15.0**2 - (15.0 - width)**2), rel=1e-2)
  assert 0.0 <= ring.min() and ring.max() <= 1.0


def _colored_pixels(obj: WorldObject, size: int) -> tuple[np.ndarray, np.ndarray]:
  """(rows, cols) of pixels that differ from a noise-free uniform background."""
  image = render.render(one_object_scene(obj, size), noise=False).astype(int)
  diff = np.abs(image - image[0, 0]).max(axis=-1)
  return np.nonzero(diff > 2)


@pytest.mark.parametrize("shape", [s.name for s in ontology.SHAPES])
def test_objects_stay_inside_and_fill_their_boxes(shape):
  rng = np.random.default_rng(0)
  for texture in ontology.TEXTURES:
    for _ in range(4):
      radius = float(rng.uniform(3.0, 20.0))
      obj = make_object(shape, texture, cx=float(rng.uniform(22, 42)),
                        cy=float(rng.uniform(22, 42)), radius=radius,
                        rotation=float(rng.uniform(-0.15, 0.15)), rgb=BLUE)
      rows, cols = _colored_pixels(obj, S)
      x, y, w, h = obj.box
      assert np.all((cols + 0.5 >= x - 1) & (cols + 0.5 <= x + w + 1)), (shape, texture)
      assert np.all((rows + 0.5 >= y - 1) & (rows + 0.5 <= y + h + 1)), (shape, texture)
      # The shape touches its box along its longer side.
      spans = (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
      assert max(spans) >= 2 * radius - 1.5, (shape, texture, spans, radius)
      # Stricter, on coverage itself: nothing at pixel centers half a pixel or more
      # outside the box, not even the anti-aliasing of sharp tips.
      cov = render.coverage(obj, S)
      centers = np.arange(S) + 0.5
      out_x = (centers <= x - 0.5) | (centers >= x + w + 0.5)
      out_y = (centers <= y - 0.5) | (centers >= y + h + 0.5)
      assert not np.any(cov[out_y[:, None] | out_x[None, :]] > 0), (shape, texture)


def test_sampled_scenes_paint_only_inside_their_boxes():
  for i in range(20):
    scene = sample_scene(WorldSpec(image_size=64), "train", i)
    image = render.render(scene, noise=False).astype(int)
    painted = np.abs(image - image[0, 0]).max(axis=-1) > 2
    inside = np.zeros_like(painted)
    centers = np.arange(64) + 0.5
    for obj in scene.objects:
      x, y, w, h = obj.box
      in_x = (centers >= x - 1) & (centers <= x + w + 1)
      in_y = (centers >= y - 1) & (centers <= y + h + 1)
      inside |= in_y[:, None] & in_x[None, :]
    assert not np.any(painted & ~inside), i


def test_shapes_are_pairwise_distinct():
  radius = 20.0
  masks = {s.name: render.coverage(make_object(s.name, radius=radius), S) > 0.5
           for s in ontology.SHAPES}
  box_area = (2 * radius)**2
  for (a, ma), (b, mb) in itertools.combinations(masks.items(), 2):
    union, inter = np.sum(ma | mb), np.sum(ma & mb)
    assert union - inter >= 0.05 * box_area, (a, b)
    assert inter / union < 0.95, (a, b)


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_are_distinct_at_small_sizes(size):
  # A small object at 32x32 is ~3 px in radius: compare at the large size there.
  radius = 0.165 * size
  masks = [render.coverage(make_object(s.name, cx=size / 2, cy=size / 2, radius=radius),
                           size) > 0.5 for s in ontology.SHAPES]
  for ma, mb in itertools.combinations(masks, 2):
    assert np.sum(ma ^ mb) >= 3


def test_diamond_is_taller_than_wide_and_ellipse_wider_than_tall():
  for shape, wider in (("diamond", False), ("ellipse", True)):
    mask = render.coverage(make_object(shape, radius=20.0), S) > 0.5
    width, height = mask.any(axis=0).sum(), mask.any(axis=1).sum()
    assert (width > 1.2 * height) if wider else (height > 1.1 * width), shape


def test_objects_are_composited_in_order():
  first = make_object("square", cx=30.0, cy=32.0, radius=10.0, rgb=RED)
  second = make_object("circle", cx=34.0, cy=32.0, radius=8.0, rgb=BLUE)
  scene = Scene("train", 0, S, (first, second), 3)
  image = render.render(scene, noise=False).astype(int)
  np.testing.assert_array_equal(image[32, 34], BLUE)
  np.testing.assert_array_equal(image[32, 22], RED)


@pytest.mark.parametrize("shape", [s.name for s in ontology.SHAPES])
def test_pixel_exactly_at_the_center(shape):
  # cx = 32.5 puts pixel (32, 32)'s center on the object's center, where some
  # distance formulas divide by zero.
  solid = render.coverage(make_object(shape, cx=32.5, cy=32.5, radius=12.0), S)
  hollow = render.coverage(make_object(shape, "hollow", cx=32.5, cy=32.5, radius=12.0), S)
  assert solid[32, 32] == 1.0
  assert hollow[32, 32] == 0.0
