"""The shape diagnosis: confuser counts by hand, and a tiny supervised run."""

import numpy as np
import pytest

from vlkg.data.world import captions as cap
from vlkg.data.world import ontology, scene as scene_lib
from vlkg.tools import shape_diagnosis


def _scene(index, *objects):
  objs = tuple(scene_lib.WorldObject(shape=s, color=c, size="large", texture="solid",
                                     cx=10.0 + 30 * k, cy=20.0, radius=5.0,
                                     rotation=0.0, rgb=(0, 0, 0))
               for k, (c, s) in enumerate(objects))
  return scene_lib.Scene("train", index, 64, objs, 0)


def test_confusers_by_hand():
  scenes = [_scene(0, ("red", "circle")), _scene(1, ("red", "square")),
            _scene(2, ("blue", "circle")), _scene(3, ("red", "circle"), ("blue", "star"))]
  captions = [(cap.NounPhrase("circle", (("color", "red"),)),),
              (cap.NounPhrase("square", (("color", "red"),)),),
              (cap.NounPhrase("circle", (("color", "blue"),)),),
              (cap.NounPhrase("star", (("color", "blue"),)),)]
  # "a red circle" without shape is "a red shape": true of scene 1 (red square),
  # where "a red circle" is false; scene 3 has a red circle, so it is no confuser.
  # "a red square" -> scenes 0 and 3; "a blue circle" -> scene 3 (a blue star);
  # "a blue star" -> scene 2 (a blue circle).
  np.testing.assert_array_equal(
      shape_diagnosis.confusers(captions, scenes, "shape"), [1, 2, 1, 1])
  # Without color: "a circle" for "a red circle" -> scene 2 (blue circle); for "a
  # blue circle" -> scenes 0 and 3 (red circles); nothing else has a square or star.
  np.testing.assert_array_equal(
      shape_diagnosis.confusers(captions, scenes, "color"), [1, 0, 2, 0])


def test_drop_kind_keeps_the_other_words():
  caption = (cap.Relation(cap.NounPhrase("circle", (("size", "large"), ("color", "red"))),
                          "left of", cap.NounPhrase("star")),)
  (rel,) = shape_diagnosis.drop_kind(caption, "color")
  assert rel.subject == cap.NounPhrase("circle", (("size", "large"),))
  (rel,) = shape_diagnosis.drop_kind(caption, "shape")
  assert rel.subject.shape is None and rel.object.shape is None
  assert rel.subject.attributes == (("size", "large"), ("color", "red"))


def test_supervised_shape_runs_and_reports_by_size():
  out = shape_diagnosis.supervised_shape(image_size=32, patch_size=8, width=16, depth=1,
                                         heads=2, steps=3, batch_size=8, num_train=32,
                                         num_test=250)
  assert set(out) == {"accuracy", "accuracy_small", "accuracy_large", "chance", "loss",
                      "seconds"}
  assert 0.0 <= out["accuracy"] <= 1.0 and out["chance"] == 1 / 9
  assert np.isfinite(out["loss"])


def test_mean_offdiagonal_cosine_by_hand():
  # Rows (1, 0), (0, 2), (1, 1): cosines 0, 1/sqrt2, 1/sqrt2; mean over 6 ordered pairs.
  x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
  assert shape_diagnosis.mean_offdiagonal_cosine(x) == pytest.approx(
      (0 + 2 / np.sqrt(2)) / 3)


def test_word_separation_sees_which_words_an_encoder_reads():
  # A fake text tower that reads the color word only: shapes collapse to one point.
  colors = [c.name for c in ontology.COLORS]

  def encode(texts):
    return np.array([[1.0] + [float(w == c) for c in colors]
                     for t in texts for w in [t.split()[1]]])

  out = shape_diagnosis.word_separation(encode)
  assert out["words/shape"] == pytest.approx(1.0)
  assert out["words/shape_after_color"] == pytest.approx(1.0)
  assert out["words/color"] == pytest.approx(0.5)
