"""The blind attribute-swap analysis on hand-worked embeddings and a tiny world."""

from __future__ import annotations

import numpy as np
import pytest

from configs import clip
from vlkg.data import prepare
from vlkg.data.benchmarks import aro, sugarcrepe
from vlkg.data.world import ontology
from vlkg.evaluators import text_prior


def _unit(rows):
  x = np.asarray(rows, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_blind_analysis_hand_worked():
  # Item 0: the image picks the true caption, and so does the mean image.
  # Item 1: the image picks the true caption, the mean image the false one.
  # Item 2: the image picks the false caption, the mean image too.
  # Item 3: a tie with the image (wrong, as in ARO); the mean image picks true.
  image = _unit([[1, 0], [0, 1], [1, 0], [1, 1]])
  true = _unit([[1, 0], [0, 1], [0, 1], [1, 0]])
  false = _unit([[0, 1], [1, 0], [1, 0], [0, 1]])
  # Mean image ~ [0.68, 0.43]: prefers the caption along x.
  got = text_prior.blind_analysis(image, true, false,
                                  ["color", "color", "size", "size"], "p")
  assert got == {"p/sighted": 0.5, "p/blind": 0.5, "p/agreement": 0.5,
                 "p/color": 1.0, "p/color_n_items": 2.0,
                 "p/size": 0.0, "p/size_n_items": 2.0}


def test_replaced_word_skips_articles():
  assert text_prior.replaced_word("a red square", "an orange square") == ("red", "orange")
  assert text_prior.replaced_word("a small red square left of a star",
                                  "a small red square left of a striped star") is None
  assert text_prior.replaced_word("a large circle", "a small circle") == ("large", "small")
  assert text_prior.replaced_word("a circle", "an circle") is None


def test_replace_kinds_and_the_replacing_word_named_elsewhere():
  items = [sugarcrepe.SugarCrepeItem("x.png", "a red square above a blue star",
                                     "a blue square above a blue star"),
           sugarcrepe.SugarCrepeItem("x.png", "a striped square", "a solid square"),
           sugarcrepe.SugarCrepeItem("x.png", "a square", "a square above a star")]
  kinds, named = text_prior.replace_kinds(items)
  assert kinds == ["color", "texture", "other"]
  assert named.tolist() == [True, False, False]


def test_attribute_kind():
  item = aro.AroItem("x.png", (0, 0, 1, 1), "t", "f", attributes=("red", "blue"))
  assert text_prior.attribute_kind(item) == "color"
  item = aro.AroItem("x.png", (0, 0, 1, 1), "t", "f", attributes=("small", "large"))
  assert text_prior.attribute_kind(item) == "size"
  item = aro.AroItem("x.png", (0, 0, 1, 1), "t", "f", attributes=("red", "small"))
  assert text_prior.attribute_kind(item) == "mixed"


class CaptionOnly:
  """Ignores the image (constant embedding) and likes captions that start with a
  color early in the alphabet: its sighted and blind choices are the same."""

  def encode_images(self, images):
    return np.tile(_unit([[1.0, 0.0]]), (len(images), 1))

  def encode_texts(self, texts):
    angle = [0.1 * (ord(t.split()[1][0]) - ord("a")) for t in texts]
    return np.stack([np.cos(angle), np.sin(angle)], 1)


TINY = ("smoke,world.num_train=64,world.num_val=16,world.num_test=48,"
        "world.num_test_comp=32,world.num_shards=2,world.workers=1")


def test_a_caption_only_model_is_fully_explained_by_its_blind_score(tmp_path):
  data = prepare.ensure_prepared(clip.get_config(TINY + f",data_dir='{tmp_path}'"))
  got = text_prior.evaluate(CaptionOnly(), data)
  for split in ("test", "test_comp"):
    p = f"text_prior/{split}"
    mine = {k: v for k, v in got.items()
            if k.startswith(p + "/")
            and not k.startswith((p + "/replace_att/", p + "/relation_swap/"))}
    assert got[f"{p}/agreement"] == 1.0
    assert got[f"{p}/sighted"] == got[f"{p}/blind"]
    n = sum(v for k, v in mine.items() if k.endswith("_n_items"))
    kinds = [k[len(p) + 1:-len("_n_items")] for k in mine if k.endswith("_n_items")]
    assert n > 0 and set(kinds) <= {"color", "size", "texture"}
    weighted = sum(got[f"{p}/{k}"] * got[f"{p}/{k}_n_items"] for k in kinds) / n
    assert weighted == pytest.approx(got[f"{p}/sighted"])


def test_replace_att_analysis_matches_a_direct_count(tmp_path):
  data = prepare.ensure_prepared(clip.get_config(TINY + f",data_dir='{tmp_path}'"))
  got = text_prior.evaluate(CaptionOnly(), data, splits=("test",))
  p = "text_prior/test/replace_att"
  items = sugarcrepe.read_sugarcrepe_file(f"{data}/benchmarks/test/sugarcrepe/replace_att.json")
  model = CaptionOnly()
  # The model's image is constant, so each choice is the larger x of the captions.
  pos = model.encode_texts([it.caption for it in items])[:, 0]
  neg = model.encode_texts([it.negative_caption for it in items])[:, 0]
  correct = pos > neg
  assert got[f"{p}/sighted"] == pytest.approx(correct.mean())
  assert got[f"{p}/blind"] == got[f"{p}/sighted"] and got[f"{p}/agreement"] == 1.0
  kinds, named = text_prior.replace_kinds(items)
  for kind in set(kinds):
    mask = np.asarray(kinds) == kind
    assert got[f"{p}/{kind}"] == pytest.approx(correct[mask].mean())
    assert got[f"{p}/{kind}_n_items"] == mask.sum()
  assert (got.get(f"{p}/replacing_word_in_caption_n_items", 0)
          + got[f"{p}/replacing_word_not_in_caption_n_items"]) == len(items)
  # By whether another object of the scene has the replacing attribute, each
  # item's scene regenerated from the world's seed (not read from its records).
  from vlkg.data import world as world_lib
  from vlkg.data.world import build, scene as scene_lib, suites
  spec = build.world_spec(world_lib.settings(clip.get_config(TINY)))
  lexicon = ontology.lexicon()
  in_scene = []
  for it in items:
    index = suites.scene_index_of(it.filename)
    objects = scene_lib.sample_scene(spec, "test", index).objects
    old, new = text_prior.replaced_word(it.caption, it.negative_caption)
    kind = ontology.KIND_OF_VALUE[lexicon[new]]
    assert any(getattr(o, kind) == lexicon[old] for o in objects)  # the edited one
    in_scene.append(any(getattr(o, kind) == lexicon[new] for o in objects))
  in_scene = np.asarray(in_scene)
  assert 0 < in_scene.sum() < len(items)
  for name, mask in (("replacing_value_in_scene", in_scene),
                     ("replacing_value_not_in_scene", ~in_scene)):
    assert got[f"{p}/{name}_n_items"] == mask.sum()
    assert got[f"{p}/{name}"] == pytest.approx(correct[mask].mean())
    for kind in set(kinds):
      both = mask & (np.asarray(kinds) == kind)
      if both.any():
        assert got[f"{p}/{kind}/{name}"] == pytest.approx(correct[both].mean())


def test_relation_swap_analysis_matches_a_direct_count(tmp_path):
  data = prepare.ensure_prepared(clip.get_config(TINY + f",data_dir='{tmp_path}'"))
  got = text_prior.evaluate(CaptionOnly(), data, splits=("test",))
  p = "text_prior/test/relation_swap"
  items = aro.read_aro(f"{data}/benchmarks/test/relation_swap.json", "relation")
  # The model's image is constant, so each choice is the larger x of the captions.
  x = lambda texts: CaptionOnly().encode_texts(texts)[:, 0]
  correct = x([it.true_caption for it in items]) > x([it.false_caption for it in items])
  assert got[f"{p}/sighted"] == pytest.approx(correct.mean())
  assert got[f"{p}/blind"] == got[f"{p}/sighted"] and got[f"{p}/agreement"] == 1.0
  names = np.asarray([it.relation_name.replace(" ", "_") for it in items])
  for name in set(names):
    assert got[f"{p}/{name}"] == pytest.approx(correct[names == name].mean())
    assert got[f"{p}/{name}_n_items"] == (names == name).sum()
  assert set(names) <= {"left_of", "right_of", "above", "below", "bigger_than",
                        "smaller_than"}


def test_relation_kind():
  item = aro.AroItem("x.png", (0, 0, 1, 1), "t", "f", relation_name="left of")
  assert text_prior.relation_kind(item) == "left_of"
