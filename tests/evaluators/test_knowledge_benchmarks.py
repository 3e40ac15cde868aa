"""OK-VQA, A-OKVQA and WikiDiverse scored end to end on small files in their release
layouts, by hand-designed encoders whose every score is worked out below.

`ColorStub` embeds an image as its one color and a text as the color words it holds,
so the zero-shot rules score 1 exactly when the text names the image's color. The
`*Scorer` encoders offer ``answer_scores`` / ``link_scores`` and check what they are
given.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib

import numpy as np
import pytest
from PIL import Image

from vlkg.evaluators import common, knowledge_vqa, real_benchmarks

COLORS = ("red", "green", "blue", "yellow", "gray")
RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
       "yellow": (255, 255, 0), "gray": (128, 128, 128)}


def _unit(rows) -> np.ndarray:
  x = np.asarray(rows, np.float64)
  x[x.sum(axis=1) == 0, -1] = 1.0
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class ColorStub:
  """Image -> one-hot of its (solid) color; text -> its color words."""

  def __init__(self):
    self.text_calls = 0

  def encode_images(self, images):
    out = []
    palette = np.array([RGB[c] for c in COLORS], np.float64)
    for image in np.asarray(images):  # the nearest color: JPEG shifts pixels a little
      nearest = int(((palette - image[0, 0]) ** 2).sum(-1).argmin())
      out.append([k == nearest for k in range(len(COLORS))] + [False])
    return _unit(out)

  def encode_texts(self, texts):
    self.text_calls += 1
    words = [t.lower().replace(".", " ").replace("?", " ").split() for t in texts]
    return _unit([[c in w for c in COLORS] + [False] for w in words])


def _solid(path: pathlib.Path, color: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full((6, 8, 3), RGB[color], np.uint8)).save(path)


def _json(path: pathlib.Path, data) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data))
  return str(path)


def _evaluate(encoder, benchmark, data, images=None, **options):
  return real_benchmarks.evaluate(encoder, benchmark=benchmark, data=str(data),
                                  images=None if images is None else str(images),
                                  batch_size=2, **options)


# -------------------------------------------------------------------------- OK-VQA


def write_okvqa(root: pathlib.Path) -> pathlib.Path:
  """Four questions; image 30 is missing. Colors and human answers:

  ==  =====  ===========================  ======================================
  id  image  human answers                zero-shot prediction, VQA accuracy
  ==  =====  ===========================  ======================================
  9   red    2 red, 8 green               red: 2 matches -> 0.6
  25  blue   3 Blue, 7 yellow             blue: 3 matches (normalised) -> 0.9
  30  —      10 gray                      (missing image)
  40  green  10 green                     green -> 1.0
  ==  =====  ===========================  ======================================

  Vocabulary by frequency: green 18, gray 10, yellow 7, blue 3, red 2.
  """
  spec = [(9, "red", ["red"] * 2 + ["green"] * 8), (25, "blue", ["Blue"] * 3 + ["yellow"] * 7),
          (30, None, ["gray"] * 10), (40, "green", ["green"] * 10)]
  questions, annotations = [], []
  for image_id, color, answers in spec:
    questions.append({"image_id": image_id, "question": "What is the car's paint?",
                      "question_id": image_id * 10})
    annotations.append({"image_id": image_id, "question_id": image_id * 10,
                        "question_type": "other", "answer_type": "other",
                        "answers": [{"answer": a, "answer_id": k + 1}
                                    for k, a in enumerate(answers)]})
    if color:
      _solid(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", color)
  _json(root / "OpenEnded_mscoco_val2014_questions.json",
        {"questions": questions, "data_subtype": "val2014"})
  _json(root / "mscoco_val2014_annotations.json", {"annotations": annotations})
  return root


def test_answer_vocabulary_keeps_the_common_spelling():
  vocab = knowledge_vqa.answer_vocabulary(
      [["Four", "four", "4", "two"], ["four", "two", "the cat", ""]])
  # normal forms: 4 x4, 2 x2, cat x1; "four" (twice) is the commonest spelling of "4".
  assert vocab == ["four", "two", "the cat"]
  assert knowledge_vqa.answer_vocabulary([["y", "x", "x", "y", "z"]], 2) == ["x", "y"]
  assert knowledge_vqa.answer_vocabulary([["a", "the"]]) == []  # articles only


def test_okvqa_zero_shot_hand_worked(tmp_path):
  root = write_okvqa(tmp_path)
  metrics = _evaluate(ColorStub(), "okvqa", root)
  assert metrics == pytest.approx({
      "okvqa/accuracy": (0.6 + 0.9 + 1.0) / 3, "okvqa/answer_ceiling": 1.0,
      "okvqa/n_answers": 5.0, "okvqa/n_items": 3.0, "okvqa/missing_images": 1.0})


def test_okvqa_small_vocabulary(tmp_path):
  # Vocabulary [green, gray]: the red and blue images tie at 0, the first (green)
  # wins: 9 -> green (8 matches, 1.0), 25 -> green (0), 40 -> green (1.0).
  metrics = _evaluate(ColorStub(), "okvqa", write_okvqa(tmp_path), max_answers=2)
  assert metrics["okvqa/accuracy"] == pytest.approx(2 / 3)
  assert metrics["okvqa/answer_ceiling"] == pytest.approx(2 / 3)
  assert metrics["okvqa/n_answers"] == 2


class AnswerScorer(ColorStub):
  """Scores "yellow" highest for every question; records its calls."""

  def __init__(self):
    super().__init__()
    self.calls = []

  def answer_scores(self, images, questions, answers):
    assert images.dtype == np.uint8 and images.shape[1:] == (6, 8, 3)
    assert len(questions) == len(images)
    self.calls.append((len(images), list(answers)))
    return np.tile([float(a == "yellow") for a in answers], (len(images), 1))


def test_okvqa_uses_answer_scores(tmp_path):
  encoder = AnswerScorer()
  metrics = _evaluate(encoder, "okvqa", write_okvqa(tmp_path))
  # yellow: 0 for 9, 7 matches (1.0) for 25, 0 for 40.
  assert metrics["okvqa/accuracy"] == pytest.approx(1 / 3)
  assert [n for n, _ in encoder.calls] == [2, 1]  # batch_size 2, three found images
  assert encoder.calls[0][1] == ["green", "gray", "yellow", "Blue", "red"]
  assert encoder.text_calls == 0


def test_okvqa_bad_scores_are_an_error(tmp_path):
  encoder = AnswerScorer()
  encoder.answer_scores = lambda images, questions, answers: np.zeros((1, 2))
  with pytest.raises(ValueError, match="answer_scores returned shape"):
    _evaluate(encoder, "okvqa", write_okvqa(tmp_path))


# ------------------------------------------------------------------------- A-OKVQA


def write_aokvqa(root: pathlib.Path) -> pathlib.Path:
  """Four questions (image 4 missing). Multiple choice: 1 right ("red car" names the
  red image), 2 wrong (gold index 0 "yellow", the blue image picks "blue"), 3 right;
  2/3. Direct answer (3 is difficult, 4 missing): 1 -> "red", 4 of 10 humans: VQA
  1.0, official min(1, 4/3) = 1; 2 -> "blue", 2 of 10: VQA 0.6, official 2/3."""
  records = [
      (1, "red", ["blue car", "red car", "green car", "a car"], 1,
       ["red"] * 4 + ["maroon"] * 6, False),
      (2, "blue", ["yellow", "green", "blue", "gray"], 0,
       ["blue"] * 2 + ["navy"] * 8, False),
      (3, "green", ["green", "red", "blue", "gray"], 0, ["green"] * 10, True),
      (4, None, ["a", "b", "c", "d"], 0, ["gray"] * 10, False)]
  data = []
  for image_id, color, choices, idx, direct, difficult in records:
    data.append({"split": "val", "image_id": image_id, "question_id": f"q{image_id}",
                 "question": "Which one is it?", "choices": choices,
                 "correct_choice_idx": idx, "direct_answers": direct,
                 "difficult_direct_answer": difficult, "rationales": []})
    if color:
      _solid(root / "val2017" / f"{image_id:012d}.jpg", color)
  _json(root / "aokvqa_v1p0_val.json", data)
  return root


def test_aokvqa_hand_worked(tmp_path):
  root = write_aokvqa(tmp_path)
  metrics = _evaluate(ColorStub(), "aokvqa", root / "aokvqa_v1p0_val.json")
  assert metrics == pytest.approx({
      "aokvqa/multiple_choice": 2 / 3, "aokvqa/direct_answer": (1.0 + 0.6) / 2,
      "aokvqa/direct_answer_official": (1.0 + 2 / 3) / 2,
      "aokvqa/answer_ceiling": 1.0, "aokvqa/n_answers": 6.0, "aokvqa/n_items": 3.0,
      "aokvqa/n_direct_answer_items": 2.0, "aokvqa/missing_images": 1.0})
  assert _evaluate(ColorStub(), "aokvqa", root) == metrics  # the folder, split val


def test_aokvqa_multiple_choice_through_answer_scores(tmp_path):
  encoder = AnswerScorer()  # "yellow" wins: item 2's gold; items 1 and 3 tie -> 0
  metrics = _evaluate(encoder, "aokvqa", write_aokvqa(tmp_path))
  # Ties pick the first choice: 1 -> "blue car" (gold 1, wrong), 3 -> "green" (right).
  assert metrics["aokvqa/multiple_choice"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------- WikiDiverse


def _url_image(root: pathlib.Path, name: str, color: str) -> str:
  url = f"https://upload.wikimedia.org/wikinews/en/0/00/{name}"
  ext = name.rsplit(".", 1)[1].replace("svg", "png")  # the release stores SVGs as PNG
  _solid(root / f"{hashlib.md5(name.encode()).hexdigest()}.{ext}", color)
  return url


def write_wikidiverse(root: pathlib.Path) -> pathlib.Path:
  """Six mentions: 1 right (the red image and "red" in the caption pick "Red Team"),
  2 NIL, 3 gold not among candidates (wrong), 4 no candidates (wrong), 5 image
  missing, 6 right. Scored: 1, 3, 4, 6: accuracy 2/4, in candidates 2/2, recall 2/4.
  """
  images = root / "wikinews"
  red = _url_image(images, "Red_match.jpg", "red")
  green = _url_image(images, "Green.match.JPG", "green")
  blue = _url_image(images, "Blue.svg", "blue")
  missing = "https://upload.wikimedia.org/wikinews/en/0/00/Gone.jpg"
  wiki = "https://en.wikipedia.org/wiki/"
  rows = [
      ("The red team beat the blue team.", red, "red team", wiki + "Red_Team",
       ["Blue Team", "Red Team", "Green Team"]),
      ("The red team beat the blue team.", red, "blue team", "NIL", ["Blue Team"]),
      ("A team played.", green, "team", "Yellow Team", ["Green Team", "Blue Team"]),
      ("The match.", blue, "match", "Blue Team", []),
      ("The red team.", missing, "red team", "Red Team", ["Red Team"]),
      ("The blue team won.", blue, "blue team", wiki + "Blue_Team",
       ["Green Team", "Blue Team", "Green Team"])]
  data = [[s, url, m, "Organization", [], [], e, c, "sports", 0, len(m)]
          for s, url, m, e, c in rows]
  _json(root / "test_w_10cands.json", data)
  _json(root / "valid_w_10cands.json", data[:1])
  (root / "entity2desc.txt").write_text(
      "Red Team@@@@a red squad\nBlue Team@@@@a blue squad\nGreen Team@@@@green squad\n")
  return root


def test_wikidiverse_zero_shot_hand_worked(tmp_path):
  root = write_wikidiverse(tmp_path)
  metrics = _evaluate(ColorStub(), "wikidiverse", root, tmp_path / "wikinews")
  assert metrics == pytest.approx({
      "wikidiverse/accuracy": 0.5, "wikidiverse/accuracy_in_candidates": 1.0,
      "wikidiverse/candidate_recall": 0.5, "wikidiverse/n_items": 4.0,
      "wikidiverse/n_nil": 1.0, "wikidiverse/missing_images": 1.0})
  valid = _evaluate(ColorStub(), "wikidiverse", root, tmp_path / "wikinews",
                    split="valid")
  assert valid["wikidiverse/accuracy"] == 1.0 and valid["wikidiverse/n_items"] == 1


def test_wikidiverse_zero_shot_query_mixes_image_and_caption():
  # Mention 1 of `write_wikidiverse`: image red, caption "red ... blue": the query is
  # red (1 + 1/sqrt 2) + blue (1/sqrt 2), normalised, so "Red Team" wins.
  cache = common.EmbeddingCache(ColorStub(), 4)
  query = cache.images([np.full((2, 2, 3), RGB["red"], np.uint8)])[0] + cache.texts(
      ["The red team beat the blue team."])[0]
  query /= np.linalg.norm(query)
  red, blue = cache.texts(["Red Team: a red squad", "Blue Team: a blue squad"])
  norm = math.sqrt((1 + 1 / math.sqrt(2)) ** 2 + 0.5)
  assert query @ red == pytest.approx((1 + 1 / math.sqrt(2)) / norm, abs=1e-6)
  assert query @ blue == pytest.approx((1 / math.sqrt(2)) / norm, abs=1e-6)


class LinkScorer(ColorStub):
  """Prefers the last candidate; records the candidate texts it was given."""

  def __init__(self):
    super().__init__()
    self.candidates = []

  def link_scores(self, images, contexts, mentions, candidates):
    assert len(images) == len(contexts) == len(mentions) == len(candidates)
    self.candidates += candidates
    return [np.arange(len(c), dtype=np.float64) for c in candidates]


def test_wikidiverse_uses_link_scores(tmp_path):
  encoder = LinkScorer()
  metrics = _evaluate(encoder, "wikidiverse", write_wikidiverse(tmp_path),
                      tmp_path / "wikinews")
  # Last candidate: 1 -> Green Team (wrong), 3 -> Blue Team (wrong), 6 -> Blue Team.
  assert metrics["wikidiverse/accuracy"] == 0.25
  assert encoder.candidates[0] == ["Blue Team: a blue squad", "Red Team: a red squad",
                                   "Green Team: green squad"]
  assert encoder.text_calls == 0


def test_wikidiverse_without_kb_shows_names(tmp_path):
  root = write_wikidiverse(tmp_path)
  (root / "entity2desc.txt").unlink()
  encoder = LinkScorer()
  _evaluate(encoder, "wikidiverse", root, tmp_path / "wikinews")
  assert encoder.candidates[0] == ["Blue Team", "Red Team", "Green Team"]


def test_knowledge_benchmarks_are_registered():
  assert real_benchmarks.BENCHMARKS[-3:] == ("okvqa", "aokvqa", "wikidiverse")


def test_no_image_found_is_an_error(tmp_path):
  root = write_okvqa(tmp_path)
  with pytest.raises(FileNotFoundError, match="none of the images"):
    _evaluate(ColorStub(), "okvqa", root, tmp_path / "elsewhere")


def _okvqa_split(root: pathlib.Path, subtype: str, colors) -> None:
  """One question per solid image, "what color is it?", answered with its color
  (ten times; one "purple" on the first, outside the images' colors)."""
  questions, annotations = [], []
  for image_id, color in enumerate(colors, start=1):
    answers = [color] * 10 if image_id > 1 else [color] * 9 + ["purple"]
    questions.append({"image_id": image_id, "question": "what color is it?",
                      "question_id": image_id})
    annotations.append({"image_id": image_id, "question_id": image_id,
                        "answers": [{"answer": a, "answer_id": k + 1}
                                    for k, a in enumerate(answers)]})
    _solid(root / subtype / f"COCO_{subtype}_{image_id:012d}.jpg", color)
  _json(root / f"OpenEnded_mscoco_{subtype}_questions.json",
        {"questions": questions, "data_subtype": subtype})
  _json(root / f"mscoco_{subtype}_annotations.json", {"annotations": annotations})


def test_okvqa_head_learns_the_answer_from_train(tmp_path):
  """The head on the towers' features of the color stub learns color -> answer
  from 40 train questions and answers the 10 val ones: accuracy 1 (purple, said
  once, is in the vocabulary but never the best answer)."""
  train, val = tmp_path / "train", tmp_path / "val"
  _okvqa_split(train, "train2014", [COLORS[k % 4] for k in range(40)])
  _okvqa_split(val, "val2014", [COLORS[k % 4] for k in range(10)])
  (val / "train2014").symlink_to(train / "train2014")
  metrics = _evaluate(ColorStub(), "okvqa", val, train=str(train),
                      head={"hidden": 16, "steps": 400, "select_every": 100,
                            "lr": 1e-2, "batch_size": 32})
  assert metrics["okvqa/accuracy_head"] == pytest.approx(1.0)
  assert metrics["okvqa/head_answer_ceiling"] == pytest.approx(1.0)
  assert metrics["okvqa/n_fit"] == 40 and metrics["okvqa/missing_fit_images"] == 0
  # The zero-shot rule beside it: the stub's text embedding of "what color is it?
  # <color>" is that color, so it is right too.
  assert metrics["okvqa/accuracy"] == pytest.approx(1.0)


def test_train_is_an_okvqa_option(tmp_path):
  from absl import app
  from vlkg.tools import evaluate as tool
  with pytest.raises(app.UsageError, match="--train is for --benchmark okvqa or aokvqa"):
    tool.evaluate(str(tmp_path), "sugarcrepe", data=str(tmp_path), train=str(tmp_path))


def test_aokvqa_head_learns_the_direct_answers_from_train(tmp_path):
  """40 train questions (every fifth difficult and left out: 32 fitted) whose direct
  answers are the image's color, and the val file of `write_aokvqa`. The head
  answers each val image with its color: 1 -> "red" (4 of 10 humans: 1.0), 2 ->
  "blue" (2 of 10: 0.6); the train vocabulary (the four colors) holds no better
  answer, so that is also the ceiling."""
  root = write_aokvqa(tmp_path)
  train = []
  for k in range(40):
    color = COLORS[k % 4]
    train.append({"split": "train", "image_id": 100 + k, "question_id": f"t{k}",
                  "question": "Which one is it?", "choices": ["a", "b", "c", "d"],
                  "correct_choice_idx": 0, "direct_answers": [color] * 10,
                  "difficult_direct_answer": k % 5 == 4, "rationales": []})
    _solid(root / "train2017" / f"{100 + k:012d}.jpg", color)
  _json(root / "aokvqa_v1p0_train.json", train)
  metrics = _evaluate(ColorStub(), "aokvqa", root, train=str(root),
                      head={"hidden": 16, "steps": 400, "select_every": 100,
                            "lr": 1e-2, "batch_size": 32})
  assert metrics["aokvqa/direct_answer_head"] == pytest.approx((1.0 + 0.6) / 2)
  assert metrics["aokvqa/head_answer_ceiling"] == pytest.approx((1.0 + 0.6) / 2)
  assert metrics["aokvqa/n_fit"] == 32 and metrics["aokvqa/missing_fit_images"] == 0
