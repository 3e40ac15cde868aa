"""The grounding evaluator (LOUPE, Li et al., NeurIPS 2022): pointing, component boxes, IoU and
chance against hand-worked examples; object phrases and their ambiguity; end to end
on a tiny prepared world with an oracle encoder (every peak inside its box) and a
constant encoder (every map a tie: the first patch is the peak, the whole image the
box), both checked against references computed here from the scenes themselves."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

from configs import clip
from vlkg.data import prepare, world as world_lib
from vlkg.data.world import build, ontology, render, scene as scene_lib
from vlkg.evaluators import grounding, world
from vlkg.graphs import world_parser

TINY = ("smoke,world.num_train=64,world.num_val=16,world.num_test=16,"
        "world.num_test_comp=16,world.num_shards=2,world.workers=1")
SIDE, GRID = 64, 8  # the smoke world: 64 px images, 8 px patches
# An object's identity as the oracle sees it: (color, shape, size, texture).
KINDS = list(itertools.product([c.name for c in ontology.COLORS],
                               [s.name for s in ontology.SHAPES], ontology.SIZES,
                               ontology.TEXTURES))


# ------------------------------------------------------------- hand-worked


def test_pointing_by_hand_with_inclusive_edges():
  heat = np.zeros((3, 3))
  heat[1, 2] = 1.0  # the peak's center: (25, 15) on a 30 x 30 image
  assert grounding.pointing_hit(heat, (20, 10, 5, 5), (30, 30))  # both on the edge
  assert grounding.pointing_hit(heat, (25, 15, 1, 1), (30, 30))  # at the corner
  assert not grounding.pointing_hit(heat, (25.01, 10, 5, 10), (30, 30))
  assert not grounding.pointing_hit(heat, (0, 0, 20, 30), (30, 30))
  # A non-square image: cells are 10 wide and 20 high, centers (25, 30).
  assert grounding.pointing_hit(heat, (24, 29, 2, 2), (60, 30))


def test_ties_go_to_the_first_patch_in_row_major_order():
  assert grounding.peak(np.full((4, 4), 0.3)) == (0, 0)
  heat = np.zeros((4, 4))
  heat[2, 1] = heat[1, 3] = heat[3, 0] = 0.7
  assert grounding.peak(heat) == (1, 3)


def test_component_box_by_hand():
  heat = np.array([[0.0, 0.1, 0.0, 0.0],
                   [0.2, 1.0, 0.6, 0.0],
                   [0.0, 0.5, 0.2, 0.0],
                   [0.0, 0.0, 0.0, 0.9]])
  # Cut at 0 + 0.5 * (1 - 0) = 0.5 (inclusive): the peak (1,1), (1,2) and (2,1);
  # (3,3) is above the cut but not 4-connected to the peak.
  want = np.zeros((4, 4), bool)
  want[1, 1] = want[1, 2] = want[2, 1] = True
  np.testing.assert_array_equal(grounding.peak_component(heat), want)
  # Cells are 10 x 10 px: rows 1-2, cols 1-2.
  assert grounding.component_box(heat, (40, 40)) == (10.0, 10.0, 20.0, 20.0)
  # A higher cut keeps the peak alone; a cut of 0 keeps the whole grid.
  assert grounding.component_box(heat, (40, 40), 0.7) == (10.0, 10.0, 10.0, 10.0)
  assert grounding.component_box(heat, (40, 40), 0.0) == (0.0, 0.0, 40.0, 40.0)
  # A diagonal neighbour is not connected.
  diag = np.eye(3)
  assert grounding.component_box(diag, (30, 30)) == (0.0, 0.0, 10.0, 10.0)
  # A constant map: every patch passes, the box is the image.
  assert grounding.component_box(np.ones((4, 4)), (40, 40)) == (0.0, 0.0, 40.0, 40.0)
  with pytest.raises(ValueError):
    grounding.peak_component(heat, 1.5)


def test_iou_by_hand():
  assert grounding.iou((0, 0, 10, 10), (5, 5, 10, 10)) == pytest.approx(25 / 175)
  assert grounding.iou((0, 0, 10, 10), (0, 0, 5, 10)) == pytest.approx(0.5)
  assert grounding.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
  assert grounding.iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0  # touching
  assert grounding.iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_chance_and_ceiling_by_hand():
  # 4 x 4 cells of 10 px: centers at 5, 15, 25, 35 on each axis.
  assert grounding.pointing_chance((10, 10, 20, 20), (4, 4), (40, 40)) == 4 / 16
  assert grounding.pointing_chance((15, 15, 10, 10), (4, 4), (40, 40)) == 4 / 16
  assert grounding.pointing_chance((16, 0, 8, 40), (4, 4), (40, 40)) == 0.0
  # A box on cell edges is reachable exactly; a 6 x 6 box inside one cell is best
  # matched by that cell: 36 / 100.
  assert grounding.best_cells_iou((10, 10, 20, 20), (4, 4), (40, 40)) == 1.0
  assert grounding.best_cells_iou((12, 12, 6, 6), (4, 4),
                                  (40, 40)) == pytest.approx(0.36)
  # Across cell edges, against every span of whole cells by brute force.
  box = (6, 12, 12, 6)
  best = max(grounding.iou(box, (x0 * 10, y0 * 10, (x1 - x0) * 10, (y1 - y0) * 10))
             for x0, x1 in itertools.combinations(range(5), 2)
             for y0, y1 in itertools.combinations(range(5), 2))
  assert grounding.best_cells_iou(box, (4, 4), (40, 40)) == pytest.approx(best)


def test_heatmaps_are_row_major_cosines():
  rng = np.random.default_rng(0)
  tokens = rng.normal(size=(9, 5))
  tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
  phrases = rng.normal(size=(2, 5))
  phrases /= np.linalg.norm(phrases, axis=1, keepdims=True)
  maps = grounding.heatmaps(tokens, phrases)
  assert maps.shape == (2, 3, 3)
  assert maps[1, 2, 0] == pytest.approx(float(phrases[1] @ tokens[6]))
  with pytest.raises(ValueError, match="square"):
    grounding.heatmaps(tokens[:8], phrases)


def test_check_tokens_rejects_bad_outputs():
  good = np.zeros((2, 4, 3), np.float32)
  good[..., 0] = 1.0
  assert grounding.check_tokens(good, 2).shape == (2, 4, 3)
  with pytest.raises(ValueError, match="shape"):
    grounding.check_tokens(good[0], 2)
  with pytest.raises(ValueError, match="norm"):
    grounding.check_tokens(2 * good, 2)


# ----------------------------------------------------------------- phrases


def _object(shape, color, size="small", texture="solid", box=(0, 0, 10, 10)):
  return {"shape": shape, "color": color, "size": size, "texture": texture}, box


def test_object_phrases_are_the_worlds_wording_and_ambiguity_is_counted():
  objects = [_object("cross", "red", "large", "striped", (1, 2, 3, 4)),
             _object("circle", "blue"),
             _object("star", "green", "small", "hollow"),
             _object("star", "green", "small", "hollow", (30, 30, 5, 5))]
  phrases, skipped = grounding.scene_phrases(objects)
  assert [(p.text, p.box, p.object_index) for p in phrases] == [
      ("a large red striped cross", (1, 2, 3, 4), 0),
      ("a small blue circle", (0, 0, 10, 10), 1)]  # "solid" is not said
  assert skipped == {"ambiguous": 2}  # both stars


def test_caption_phrases_are_parsed_matched_and_deduplicated():
  objects = [_object("circle", "red"), _object("circle", "blue"),
             _object("square", "blue", "large", "striped", (5, 5, 20, 20))]
  captions = ["a red disc to the left of a big blue square",
              "there is a circle and a red circle",
              "a scarlet crux"]
  phrases, skipped = grounding.scene_phrases(objects, captions, "captions")
  assert [(p.text, p.object_index) for p in phrases] == [
      ("a red circle", 0), ("a large blue square", 2)]
  assert skipped == {"ambiguous": 1, "unmatched": 1}  # "a circle"; the aliases
  with pytest.raises(ValueError, match="source"):
    grounding.scene_phrases(objects, source="boxes")


# -------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def world_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  config = clip.get_config(TINY + f",data_dir='{root}'")
  dataset = prepare.ensure_prepared(config)
  spec = build.world_spec(world_lib.settings(config))
  scenes = [scene_lib.sample_scene(spec, "test", i) for i in range(16)]
  return dataset, scenes


def _key(image: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _centers() -> np.ndarray:
  return (np.arange(GRID) + 0.5) * SIDE / GRID


class OracleEncoder:
  """Knows each test scene from its pixels. A patch token is the one-hot of the
  identity (color, shape, size, texture) of the object whose box holds the patch
  center (a last dimension for background); a phrase is the normalised sum of the
  one-hots of the identities it can name (by its parse). So a phrase's map is > 0
  exactly on the patches of the objects it names, and 0 elsewhere."""

  def __init__(self, scenes):
    self.scenes = {_key(render.render(s)): s for s in scenes}
    self.dim = len(KINDS) + 1
    self.token_calls = 0

  def encode_images(self, images):
    out = np.zeros((len(images), self.dim), np.float32)
    out[:, -1] = 1.0
    return out

  def encode_image_tokens(self, images):
    self.token_calls += 1
    c = _centers()
    out = np.zeros((len(images), GRID * GRID, self.dim), np.float32)
    out[..., -1] = 1.0
    for n, image in enumerate(images):
      for o in self.scenes[_key(image)].objects:
        x, y, w, h = o.box
        for r, col in itertools.product(range(GRID), range(GRID)):
          if x <= c[col] <= x + w and y <= c[r] <= y + h:
            out[n, r * GRID + col] = 0.0
            out[n, r * GRID + col,
                KINDS.index((o.color, o.shape, o.size, o.texture))] = 1.0
    return out

  def encode_texts(self, texts):
    out = np.zeros((len(texts), self.dim), np.float32)
    for row, text in enumerate(texts):
      graph = world_parser.parse(text)
      said = set(graph.attributes_of(0)) | {graph.objects[0]}
      dims = [k for k, kind in enumerate(KINDS) if said <= set(kind)]
      out[row, dims] = 1.0 / np.sqrt(len(dims))
    return out


class ConstantEncoder:
  """Every patch and every phrase is the same vector: every map is constant."""

  def encode_images(self, images):
    return np.full((len(images), 4), 0.5, np.float32)

  def encode_image_tokens(self, images):
    return np.full((len(images), GRID * GRID, 4), 0.5, np.float32)

  def encode_texts(self, texts):
    return np.full((len(texts), 4), 0.5, np.float32)


def _reference(scenes, constant: bool = False) -> dict[str, float]:
  """The metrics by brute force from the scenes' own boxes."""
  c = _centers()
  hits, ious, chance, ceiling = [], [], [], []
  for o in (o for s in scenes for o in s.objects):
    x, y, w, h = o.box
    cols = [k for k in range(GRID) if x <= c[k] <= x + w]
    rows = [k for k in range(GRID) if y <= c[k] <= y + h]
    cell = SIDE / GRID
    if constant:  # peak: patch (0, 0); box: the whole image
      hits.append(x <= c[0] <= x + w and y <= c[0] <= y + h)
      pred = (0.0, 0.0, SIDE, SIDE)
    else:  # peak: the first patch of the object; box: its patches
      hits.append(bool(cols and rows))
      pred = (cols[0] * cell, rows[0] * cell, len(cols) * cell, len(rows) * cell)
    ix = max(0.0, min(x + w, pred[0] + pred[2]) - max(x, pred[0]))
    iy = max(0.0, min(y + h, pred[1] + pred[3]) - max(y, pred[1]))
    ious.append(ix * iy / (w * h + pred[2] * pred[3] - ix * iy))
    chance.append(len(cols) * len(rows) / GRID**2)
    best = 0.0
    for x0, x1 in itertools.combinations(range(GRID + 1), 2):
      for y0, y1 in itertools.combinations(range(GRID + 1), 2):
        bx, by, bw, bh = x0 * cell, y0 * cell, (x1 - x0) * cell, (y1 - y0) * cell
        jx = max(0.0, min(x + w, bx + bw) - max(x, bx))
        jy = max(0.0, min(y + h, by + bh) - max(y, by))
        best = max(best, jx * jy / (w * h + bw * bh - jx * jy))
    ceiling.append(best >= 0.5)
  return {"grounding/pointing_acc": np.mean(hits),
          "grounding/iou50_acc": np.mean(np.array(ious) >= 0.5),
          "grounding/mean_iou": np.mean(ious),
          "grounding/pointing_acc_chance": np.mean(chance),
          "grounding/iou50_acc_ceiling": np.mean(ceiling),
          "grounding/n_items": len(hits), "grounding/n_images": len(scenes),
          "grounding/skipped_ambiguous": 0, "grounding/skipped_unmatched": 0,
          "grounding/missing_images": 0}


def _assert_metrics(got, want):
  assert set(got) == set(want)
  for key, value in want.items():
    # The records store boxes in float32, the scenes in float64.
    assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_oracle_points_inside_every_box(world_data):
  dataset, scenes = world_data
  encoder = OracleEncoder(scenes)
  metrics = grounding.evaluate(encoder, dataset, batch_size=8)
  want = _reference(scenes)
  _assert_metrics(metrics, want)
  assert metrics["grounding/pointing_acc"] == 1.0
  # The maps are the objects' own patches: high, but bounded by the 8 px grid.
  assert 0.5 < metrics["grounding/iou50_acc"] <= metrics["grounding/iou50_acc_ceiling"]
  assert metrics["grounding/pointing_acc_chance"] < 0.2
  assert encoder.token_calls == 2  # 16 images in batches of 8
  # The caption phrases name objects by fewer attributes; an oracle still points
  # at the one object each kept phrase names.
  by_caption = grounding.evaluate(encoder, dataset, phrases="captions")
  assert by_caption["grounding/pointing_acc"] == 1.0
  assert by_caption["grounding/n_items"] > 0
  assert by_caption["grounding/skipped_unmatched"] == 0


def test_constant_encoder_ties_to_the_first_patch_and_the_whole_image(world_data):
  dataset, scenes = world_data
  metrics = grounding.evaluate(ConstantEncoder(), dataset)
  _assert_metrics(metrics, _reference(scenes, constant=True))
  assert metrics["grounding/iou50_acc"] == 0.0  # no object covers half the image


def test_world_evaluator_reports_grounding_when_it_can(world_data):
  dataset, scenes = world_data
  encoder = OracleEncoder(scenes)
  metrics = world.evaluate(encoder, dataset, splits=(), retrieval_split=None)
  _assert_metrics(metrics, _reference(scenes))
  assert world.evaluate(encoder, dataset, splits=(), retrieval_split=None,
                        grounding=False) == {}
  capped = world.evaluate(encoder, dataset, splits=(), retrieval_split=None,
                          max_items=5)
  _assert_metrics(capped, _reference(scenes[:5]))


def test_encoder_without_tokens_is_refused(world_data):
  dataset, _ = world_data

  class NoTokens:
    encode_images = encode_texts = ConstantEncoder.encode_texts

  with pytest.raises(ValueError, match="encode_image_tokens"):
    grounding.evaluate(NoTokens(), dataset)
