"""vlkg.evaluators.kg on a hand-made table and encoder, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from vlkg.data import kg_table
from vlkg.evaluators import kg


def _unit(*v):
  v = np.asarray(v, np.float32)
  return v / np.linalg.norm(v)


class _Encoder:
  """Texts and images (by their first pixel) to fixed unit vectors."""

  TEXTS = {"a": _unit(0, 0, 1), "b": _unit(1, 0, 0), "c": _unit(0, 1, 0),
           "r": _unit(0, 0, -1), "s": _unit(1, 0, 0),
           "a r": _unit(1, 0.5, 0), "a s": _unit(0.2, 1, 0)}
  IMAGES = {7: _unit(0, 0.6, 0.8)}

  def __init__(self):
    self.texts = []

  def encode_texts(self, texts):
    self.texts += list(texts)
    return np.stack([self.TEXTS[t] for t in texts])

  def encode_images(self, images):
    return np.stack([self.IMAGES[int(im[0, 0, 0])] for im in images])


def _table() -> kg_table.Table:
  # Entities a, b, c (texts) and X (an image); relations r, s.
  triplets = np.array([[0, 0, 1],   # (a, r, b)  held out
                       [0, 0, 2],   # (a, r, c)
                       [0, 1, 2],   # (a, s, c)  held out
                       [3, 0, 1],   # (X, r, b)  held out
                       [0, 1, 3]],  # (a, s, X)
                      np.int32)
  return kg_table.Table(
      entity_text=np.array(["a", "b", "c", "image X"]),
      entity_image=np.array([-1, -1, -1, 0], np.int32),
      images=np.full((1, 2, 2, 3), 7, np.uint8), relations=np.array(["r", "s"]),
      triplets=triplets, heldout=np.array([True, False, True, True, False]),
      neighbours=np.full((4, 1), -1, np.int32), neighbour_types=np.zeros((4, 1), np.int32))


def test_kg_metrics_by_hand(tmp_path):
  kg_table.write(str(tmp_path), _table())
  encoder = _Encoder()
  got = kg.evaluate(encoder, str(tmp_path))
  # Tails: (a, r, b) ranks b first once c (the other tail of (a, r)) is filtered;
  # (a, s, c) ranks c first (X, the other tail of (a, s), filtered); (X, r, b):
  # normalise(X + r) = (0, .95, -.32) ranks c (.95), X (.32), then b (0): third.
  # Relations: (a, b): q(a, r).b = .89 > q(a, s).b = .20, right; (a, c): r is filtered
  # (it also holds), s right; (X, b): q(X, s).b = .71 > q(X, r).b = 0, wrong.
  assert got == pytest.approx({"kg/tail_R@1": 2 / 3, "kg/tail_R@5": 1.0,
                               "kg/relation_acc": 2 / 3, "kg/n_items": 3.0})
  # Text heads are asked as "h r" texts, image heads through the relation's text.
  assert {"a r", "a s", "r", "s"} <= set(encoder.texts)
  assert "image X r" not in encoder.texts
  assert kg.evaluate(_Encoder(), str(tmp_path), max_items=1)["kg/n_items"] == 1.0


class _QueryEncoder(_Encoder):
  """`_Encoder` with its own queries (`KGQueryEncoder`), keyed by head and relation."""

  QUERIES = {("a", "r"): _unit(1, 0, 0), ("a", "s"): _unit(0, 1, 0),
             (7, "r"): _unit(1, 0.1, 0), (7, "s"): _unit(0, 0, 1)}

  def __init__(self):
    super().__init__()
    self.calls = []

  def encode_kg_queries(self, relations, *, texts=None, images=None):
    heads = list(texts) if images is None else [int(im[0, 0, 0]) for im in images]
    self.calls.append(("texts" if images is None else "images", len(heads)))
    return np.stack([self.QUERIES[h, r] for h, r in zip(heads, relations)])


def test_a_models_own_queries_replace_the_towers_rule(tmp_path):
  kg_table.write(str(tmp_path), _table())
  encoder = _QueryEncoder()
  got = kg.evaluate(encoder, str(tmp_path), batch_size=3)
  # Tails: q(a, r) = b ranks b first (c filtered); q(a, s) = c ranks c first;
  # q(X, r) = (1, .1, 0) ranks b (.995) over c (.0995) and X (.06): all three first.
  # Relations: (a, b): q(a, r).b = 1 > q(a, s).b = 0; (a, c): r filtered, s;
  # (X, b): q(X, r).b = .995 > q(X, s).b = 0: all right.
  assert got == pytest.approx({"kg/tail_R@1": 1.0, "kg/tail_R@5": 1.0,
                               "kg/relation_acc": 1.0, "kg/n_items": 3.0})
  # Two heads (a, X) with two relations each: the text heads and the image heads
  # asked apart, in batches of at most 3; no "h r" caption is embedded.
  assert sorted(encoder.calls) == [("images", 2), ("texts", 2)]
  assert not {"a r", "a s"} & set(encoder.texts)


def test_no_table_no_metrics(tmp_path):
  assert kg.evaluate(_Encoder(), str(tmp_path)) == {}
