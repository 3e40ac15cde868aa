"""OK-VQA, A-OKVQA and WikiDiverse readers on small files in their real layouts."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from vlkg.data.benchmarks import aokvqa, okvqa, wikidiverse
from vlkg.data.benchmarks.errors import BenchmarkFormatError


def _json(path, data):
  path.write_text(json.dumps(data))
  return str(path)


def okvqa_files(root, questions=None, annotations=None):
  """A two-question OK-VQA val split as the release ships it."""
  questions = questions or [
      {"image_id": 9, "question": "What sport can you use this for?",
       "question_id": 90},
      {"image_id": 25, "question": "Which country is this from?", "question_id": 250}]
  answers = lambda *texts: [{"answer": t, "raw_answer": t, "answer_confidence": "yes",
                             "answer_id": k + 1} for k, t in enumerate(texts)]
  annotations = annotations or [
      {"image_id": 9, "question_id": 90, "question_type": "eight",
       "answer_type": "other", "confidence": 3,
       "answers": answers(*(["race"] * 4 + ["racing"] * 4 + ["motocross"] * 2))},
      {"image_id": 25, "question_id": 250, "question_type": "four",
       "answer_type": "other", "confidence": 3,
       "answers": answers(*(["japan"] * 10))}]
  q = _json(root / "OpenEnded_mscoco_val2014_questions.json",
            {"questions": questions, "data_subtype": "val2014",
             "task_type": "Open-Ended", "data_type": "mscoco"})
  a = _json(root / "mscoco_val2014_annotations.json",
            {"annotations": annotations, "data_subtype": "val2014"})
  return q, a


def test_okvqa_reads_the_release_layout(tmp_path):
  q, a = okvqa_files(tmp_path)
  items, subtype = okvqa.read_okvqa(q, a)
  assert subtype == "val2014"
  assert [it.question_id for it in items] == [90, 250]
  assert items[0].answers == tuple(["race"] * 4 + ["racing"] * 4 + ["motocross"] * 2)
  assert items[1].image_id == 25 and items[1].question_type == "four"
  assert okvqa.find_okvqa_files(tmp_path) == (q, a)
  assert okvqa.find_okvqa_files(q) == (q, a)
  assert okvqa.coco_image_name("val2014", 9) == "COCO_val2014_000000000009.jpg"


def test_okvqa_round_trip(tmp_path):
  items = [okvqa.VqaItem(3, 7, "how many corners does the red shape have?",
                         ("four",) * 10, "corners")]
  q, a = str(tmp_path / "OpenEnded_world_test_questions.json"), str(
      tmp_path / "world_test_annotations.json")
  okvqa.write_okvqa(q, a, items, data_subtype="test")
  assert okvqa.read_okvqa(q, a) == (items, "test")
  assert okvqa.find_okvqa_files(tmp_path) == (q, a)


@pytest.mark.parametrize("which, change, message", [
    ("questions", lambda d: d["questions"][1].pop("question"),
     "item 1: missing field 'question'"),
    ("questions", lambda d: d["questions"][0].update(image_id="9"),
     "item 0: field 'image_id' must be an integer, got str"),
    ("questions", lambda d: d["questions"][1].update(question_id=90),
     "item 1: question_id 90 appears twice"),
    ("annotations", lambda d: d["annotations"][1].update(answers=[]),
     "item 1: field 'answers' must be a non-empty list"),
    ("annotations", lambda d: d["annotations"][0]["answers"][3].pop("answer"),
     "item 0: answers\\[3\\] must be an object with a string 'answer'"),
    ("annotations", lambda d: d["annotations"].pop(1),
     "no annotation for question_id 250"),
    ("annotations", lambda d: d["annotations"][0].update(image_id=10),
     "question_id 90 has image_id 10"),
])
def test_okvqa_errors_name_file_item_and_field(tmp_path, which, change, message):
  q, a = okvqa_files(tmp_path)
  path = q if which == "questions" else a
  data = json.loads(open(path).read())
  change(data)
  _json(tmp_path / os.path.basename(path), data)
  with pytest.raises(BenchmarkFormatError, match=message) as info:
    okvqa.read_okvqa(q, a)
  assert os.path.basename(path) in str(info.value)


def test_okvqa_find_files_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="one \\*_questions.json"):
    okvqa.find_okvqa_files(tmp_path)
  q, _ = okvqa_files(tmp_path)
  os.remove(tmp_path / "mscoco_val2014_annotations.json")
  with pytest.raises(FileNotFoundError, match="annotations file"):
    okvqa.find_okvqa_files(q)


# ------------------------------------------------------------------------ A-OKVQA


def aokvqa_record(qid, image_id, choices, idx, direct, difficult=False):
  return {"split": "val", "image_id": image_id, "question_id": qid,
          "question": f"question {qid}?", "choices": choices,
          "correct_choice_idx": idx, "direct_answers": direct,
          "difficult_direct_answer": difficult, "rationales": ["because."] * 3}


def test_aokvqa_reads_the_release_layout(tmp_path):
  path = _json(tmp_path / "aokvqa_v1p0_val.json", [
      aokvqa_record("22MexNkBPpdZGX6sxbxVBH", 299207,
                    ["skateboarder", "train", "delivery", "cab"], 3, ["cab"] * 10),
      aokvqa_record("x2", 5, ["a", "b", "c", "d"], 0, ["a"] * 10, difficult=True)])
  items = aokvqa.read_aokvqa(path)
  assert items[0].choices[items[0].correct_choice_idx] == "cab"
  assert items[0].image_id == 299207 and items[0].split == "val"
  assert items[1].difficult_direct_answer
  assert aokvqa.coco2017_image_name(299207) == "000000299207.jpg"


def test_aokvqa_official_direct_answer_rule():
  answers = ["cab"] * 2 + ["taxi"] * 8
  assert aokvqa.official_direct_answer_accuracy("cab", answers) == pytest.approx(2 / 3)
  assert aokvqa.official_direct_answer_accuracy("taxi", answers) == 1.0
  assert aokvqa.official_direct_answer_accuracy("Taxi", answers) == 0.0  # raw strings


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("correct_choice_idx"), "item 0: missing field "
     "'correct_choice_idx': the test split's answers are private"),
    (lambda r: r.update(correct_choice_idx=4), "item 0: field 'correct_choice_idx' "
     "must be an index into the 4 choices, got 4"),
    (lambda r: r.update(direct_answers="cab"), "item 0: field 'direct_answers' must "
     "be a non-empty list of strings"),
    (lambda r: r.update(image_id=None), "item 0: field 'image_id' must be an integer"),
    (lambda r: r.update(difficult_direct_answer="no"),
     "item 0: field 'difficult_direct_answer' must be a boolean"),
])
def test_aokvqa_errors(tmp_path, change, message):
  record = aokvqa_record("q", 1, ["a", "b", "c", "d"], 0, ["a"] * 10)
  change(record)
  path = _json(tmp_path / "aokvqa_v1p0_val.json", [record])
  with pytest.raises(BenchmarkFormatError, match=message):
    aokvqa.read_aokvqa(path)


# -------------------------------------------------------------------- WikiDiverse


LIONS_URL = "https://en.wikipedia.org/wiki/Detroit_Lions"
PACKERS_URL = "https://en.wikipedia.org/wiki/Green_Bay_Packers"
IMAGE_URL = ("https://upload.wikimedia.org/wikipedia/commons/0/06/"
             "DetroitLionsRunningPlay-2007.jpg")


def mention_row(mention, start, end, entity, candidates):
  text = "The Lions versus the Packers (2007)."
  return [text, IMAGE_URL, mention, "Organization", text[:start].lower().split(),
          text[end:].lower().split(), entity, candidates, "sports", start, end]


def test_wikidiverse_reads_both_levels_and_the_kb(tmp_path):
  passages = _json(tmp_path / "test.json", [[
      "The Lions versus the Packers (2007).", IMAGE_URL, "sports",
      [["Lions", "Organization", 4, 9, LIONS_URL],
       ["Packers", "Organization", 21, 28, PACKERS_URL]]]])
  read = wikidiverse.read_passages(passages)
  assert read[0].mentions[1] == ("Packers", "Organization", 21, 28, PACKERS_URL)
  mentions = _json(tmp_path / "test_w_10cands.json", [
      mention_row("Lions", 4, 9, LIONS_URL,
                  ["Detroit Lions", "Lions", "Detroit Lions", "British and Irish Lions"]),
      mention_row("Packers", 21, 28, "nil", ["Green Bay Packers"])])
  (tmp_path / "entity2desc_filtered.txt").write_text(
      "Detroit Lions@@@@American football team@@@@from Detroit\n\n"
      "Lions@@@@big cats\n")
  items = wikidiverse.read_mentions(mentions)
  assert items[0].candidates == ("Detroit Lions", "Lions", "British and Irish Lions")
  assert items[0].left_context == ("the",) and items[0].start == 4
  assert wikidiverse.is_nil(items[1].entity) and not wikidiverse.is_nil(LIONS_URL)
  found = wikidiverse.find_files(tmp_path)
  assert found == (mentions, str(tmp_path / "entity2desc_filtered.txt"))
  kb = wikidiverse.KnowledgeBase(wikidiverse.read_kb(found[1]))
  assert len(kb) == 2
  assert kb.text(LIONS_URL) == "Detroit Lions: American football team@@@@from Detroit"
  assert kb.text("British and Irish Lions") == "British and Irish Lions"


def test_wikidiverse_entities_compare_as_the_release_does():
  assert wikidiverse.clean_entity("https://en.wikipedia.org/wiki/Caf%C3%A9_Royal") == (
      "Café Royal")
  assert wikidiverse.clean_entity("nhttps://en.wikipedia.org/wiki/Non-convex") == (
      "Non convex")
  assert wikidiverse.same_entity(LIONS_URL, "Detroit Lions")
  assert not wikidiverse.same_entity(LIONS_URL, "Lions")


def test_wikidiverse_image_path_follows_the_readme():
  name = "DetroitLionsRunningPlay-2007.jpg"
  md5 = hashlib.md5(name.encode()).hexdigest()
  assert wikidiverse.image_path("/imgs", IMAGE_URL) == f"/imgs/{md5}.jpg"
  svg = "https://upload.wikimedia.org/wikinews/en/a/ab/Map.of.Asia.SVG"
  md5 = hashlib.md5(b"Map.of.Asia.SVG").hexdigest()
  assert wikidiverse.image_path("/imgs", svg) == f"/imgs/{md5}.png"
  assert wikidiverse.image_path("/root", "images/test/000003.png") == (
      "/root/images/test/000003.png")


def test_wikidiverse_round_trip(tmp_path):
  mention = wikidiverse.Mention(
      "the scarlet shape is left of a disc", "images/test/000001.png", "scarlet",
      "color", "red", ("red", "orange", "blue"), "world", 4, 11, ("the",),
      ("shape", "is", "left", "of", "a", "disc"))
  wikidiverse.write_mentions(str(tmp_path / "test_w_10cands.json"), [mention])
  assert wikidiverse.read_mentions(tmp_path / "test_w_10cands.json") == [mention]
  passage = wikidiverse.Passage(mention.sentence, mention.img_url, "world",
                                (("scarlet", "color", 4, 11, "red"),))
  wikidiverse.write_passages(str(tmp_path / "test.json"), [passage])
  assert wikidiverse.read_passages(tmp_path / "test.json") == [passage]
  wikidiverse.write_kb(str(tmp_path / "entity2desc.txt"), {"red": "a warm color"})
  assert wikidiverse.read_kb(tmp_path / "entity2desc.txt") == {"red": "a warm color"}


@pytest.mark.parametrize("row, message", [
    ("x", "item 0: an item must be a JSON list, got str"),
    (mention_row("Lions", 4, 9, LIONS_URL, [])[:10],
     "item 0: an item must have 11 fields"),
    (["t", IMAGE_URL, "sports", []], "item 0: a passage-level item"),
    (mention_row("Lions", 4, 9, LIONS_URL, [])[:9] + ["4", 9],
     "item 0: field 9 \\('start'\\) must be int, got str"),
    (mention_row("Lions", 4, 9, LIONS_URL, [3]),
     "item 0: field 'candidates' must be a list of strings"),
])
def test_wikidiverse_mention_errors(tmp_path, row, message):
  path = _json(tmp_path / "test_w_10cands.json", [row])
  with pytest.raises(BenchmarkFormatError, match=message):
    wikidiverse.read_mentions(path)


def test_wikidiverse_passage_and_kb_errors(tmp_path):
  path = _json(tmp_path / "test.json", [[
      "The Lions versus", IMAGE_URL, "sports",
      [["Lions", "Organization", 3, 9, LIONS_URL]]]])
  with pytest.raises(BenchmarkFormatError, match="item 0: mentions\\[0\\]: text"):
    wikidiverse.read_passages(path)
  (tmp_path / "entity2desc.txt").write_text("a@@@@b\nno separator here\n")
  with pytest.raises(BenchmarkFormatError, match="entity2desc.txt:2: expected"):
    wikidiverse.read_kb(tmp_path / "entity2desc.txt")
  with pytest.raises(FileNotFoundError, match="_w_10cands.json"):
    wikidiverse.find_files(tmp_path)
