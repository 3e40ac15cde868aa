"""vlkg.data.kg_table: the held-out split, neighbourhoods, groups and the file."""

from __future__ import annotations

import numpy as np
import pytest

from vlkg.data import kg_table


def _image(value: int) -> np.ndarray:
  return np.full((4, 4, 3), value, np.uint8)


def _small_table(fraction=0.0) -> kg_table.Table:
  b = kg_table.Builder(4)
  red, color, warm, scarlet = (b.text(t) for t in ("red", "color", "warm color", "scarlet"))
  img0, img1 = b.image(_image(1), "object 0"), b.image(_image(2), "object 1")
  b.fact(red, "is a", color)
  b.fact(red, "is a", warm)
  b.fact(scarlet, "alias of", red)
  b.fact(img0, "has color", red)
  b.fact(img1, "has color", scarlet)
  b.fact(img0, "left of", img1)
  b.fact(img0, "left of", img1)  # a repeated fact is one triplet
  b.fact(red, "is a", red)  # a loop is dropped
  return b.finish(seed=0, heldout_fraction=fraction, max_neighbours=3)


def test_builder_entities_relations_triplets_groups():
  t = _small_table()
  assert t.entity_text.tolist() == ["red", "color", "warm color", "scarlet",
                                    "object 0", "object 1"]
  assert t.entity_image.tolist() == [-1, -1, -1, -1, 0, 1]
  assert t.images[:, 0, 0, 0].tolist() == [1, 2]
  assert t.relations.tolist() == ["alias of", "has color", "is a", "left of"]
  assert t.triplets.tolist() == [[0, 2, 1], [0, 2, 2], [3, 0, 0], [4, 1, 0],
                                 [5, 1, 3], [4, 3, 5]]
  assert t.group_of().tolist() == [0, 0, 0, 1, 1, 2]
  assert t.training("mixed").tolist() == [3, 4]
  assert t.describe()["train_image_image"] == 1
  # Text neighbours along training triplets; incoming edges typed R + relation.
  r = len(t.relations)
  assert t.neighbours[0].tolist() == [1, 2, 3]  # red: color, warm color, scarlet
  assert t.neighbour_types[0].tolist() == [2, 2, r + 0]
  assert t.neighbours[4].tolist() == [0, -1, -1]  # object 0: red (object 1 is no text)
  assert t.neighbour_types[4].tolist() == [1, 0, 0]


def test_neighbourhoods_keep_n_drawn_seeded():
  triplets = np.array([[0, 0, k] for k in range(1, 7)], np.int32)
  ids, _ = kg_table.neighbourhoods(triplets, np.ones(7, bool), 1, 3, seed=0)
  again, _ = kg_table.neighbourhoods(triplets, np.ones(7, bool), 1, 3, seed=0)
  assert (ids == again).all()
  assert len(set(ids[0].tolist())) == 3 and set(ids[0].tolist()) <= {1, 2, 3, 4, 5, 6}
  assert ids[1].tolist() == [0, -1, -1]


def test_split_keeps_every_entity_of_a_heldout_triplet_in_training():
  rng = np.random.default_rng(1)
  triplets = np.stack([rng.integers(0, 30, 400), rng.integers(0, 5, 400),
                       rng.integers(0, 30, 400)], axis=1).astype(np.int32)
  heldout = kg_table.split(triplets, 30, 0.2, seed=3)
  assert heldout.sum() == 80
  assert (heldout == kg_table.split(triplets, 30, 0.2, seed=3)).all()
  assert not (heldout == kg_table.split(triplets, 30, 0.2, seed=4)).all()
  train = triplets[~heldout]
  seen = set(train[:, 0]) | set(train[:, 2])
  for h, _, t in triplets[heldout]:
    assert h in seen and t in seen
  # A chain a -> b -> c: only... nothing can go, every entity would lose its fact.
  chain = np.array([[0, 0, 1], [1, 0, 2]], np.int32)
  assert not kg_table.split(chain, 3, 0.5, seed=0).any()


def test_write_read_round_trip(tmp_path):
  t = _small_table(fraction=0.2)
  kg_table.write(str(tmp_path), t)
  back = kg_table.read(str(tmp_path))
  for name in ("entity_text", "entity_image", "images", "relations", "triplets",
               "heldout", "neighbours", "neighbour_types"):
    assert (getattr(back, name) == getattr(t, name)).all(), name
  with pytest.raises(FileNotFoundError, match="no knowledge-graph triplets"):
    kg_table.read(str(tmp_path / "none"))


class _Tok:
  pad_id, eos_id = 0, 3

  def encode(self, texts):
    out = np.zeros((len(texts), 6), np.int32)
    for i, t in enumerate(texts):
      ids = [10 + len(w) for w in t.split()][:5] + [3]
      out[i, :len(ids)] = ids
    return out


def test_text_ids_cut_texts_end_with_eot():
  ids = kg_table.text_ids(["a bb", "a bb ccc dddd"], _Tok(), 3)
  assert ids.tolist() == [[11, 12, 3], [11, 12, 3]]
  assert kg_table.text_ids(["a"], _Tok(), 8).tolist() == [[11, 3, 0, 0, 0, 0, 0, 0]]


def test_from_graph_text_nodes_and_visualsem_images(tmp_path):
  import json

  from PIL import Image

  from vlkg.graphs import kg
  (tmp_path / "images" / "ab").mkdir(parents=True)
  Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / "images/ab/ab1.jpg")
  (tmp_path / kg.VISUALSEM_NODES).write_text(json.dumps({
      "bn:1": {"ms": "dog", "se": [], "ims": ["ab1", "ab2"]},  # ab2 has no file
      "bn:2": {"ms": "canine", "se": [], "ims": []}}))
  (tmp_path / kg.VISUALSEM_TUPLES).write_text(json.dumps(
      {"bn:2": [{"s": "bn:1", "r": "is-a"}]}))
  t = kg_table.from_graph(kg.read(tmp_path, "visualsem"), 8, heldout_fraction=0.0)
  assert t.entity_text[~t.is_image].tolist() == ["dog", "canine"]
  assert t.images.shape == (1, 8, 8, 3) and abs(int(t.images[0, 4, 4, 0]) - 200) < 3
  facts = {(t.entity_text[h], t.relations[r], t.entity_text[e]) for h, r, e in t.triplets}
  assert facts == {("dog", "is-a", "canine"),
                   (str(tmp_path / "images/ab/ab1.jpg"), kg_table.IMAGE_OF, "dog")}
