"""The official VQA accuracy: hand-worked leave-one-out values and normalisation."""

from __future__ import annotations

import pytest

from vlkg.evaluators import vqa


def _ten(gold: str, m: int, other: str = "cat") -> list[str]:
  return [gold] * m + [other] * (10 - m)


@pytest.mark.parametrize("m, expected", [
    (0, 0.0),
    (1, 0.3),   # 9 subsets hold the one match: 9 * (1/3) / 10
    (2, 0.6),   # 2 * (1/3) + 8 * (2/3) = 6, over 10
    (3, 0.9),   # 3 * (2/3) + 7 * 1 = 9, over 10
    (4, 1.0),
    (10, 1.0),
])
def test_leave_one_out_values(m, expected):
  assert vqa.accuracy("dog", _ten("dog", m)) == pytest.approx(expected, abs=1e-12)


def test_accuracy_normalises_prediction_and_answers():
  # Number words become digits, articles go, punctuation goes.
  assert vqa.accuracy("Two.", _ten("2", 2)) == pytest.approx(0.6)
  assert vqa.accuracy("2", _ten("two", 3)) == pytest.approx(0.9)
  assert vqa.accuracy("the red one", ["red one"] * 10) == 1.0
  assert vqa.accuracy("four", ["4"] * 10) == 1.0
  # "twelve" is past the official table's "ten": no digit for it.
  assert vqa.accuracy("12", ["twelve"] * 10) == 0.0


def test_accuracy_with_fewer_answers_averages_over_them():
  # Five answers (A-OKVQA-like partial lists): 2 matches -> (2*(1/3) + 3*(2/3)) / 5.
  assert vqa.accuracy("a", ["a", "a", "b", "c", "d"]) == pytest.approx(8 / 15)


def test_accuracy_errors():
  with pytest.raises(ValueError, match="at least one"):
    vqa.accuracy("x", [])
  with pytest.raises(TypeError, match="list of strings"):
    vqa.accuracy("x", "x")
  with pytest.raises(TypeError, match="must be a str"):
    vqa.accuracy("x", ["x", 3])


@pytest.mark.parametrize("raw, normalised", [
    ("Two dogs.", "2 dogs"),
    ("  yes!\n", "yes"),
    ("The Beatles", "beatles"),
    ("An apple", "apple"),
    ("none", "0"),
    ("Zero", "0"),
    ("ten", "10"),
    ("eleven", "eleven"),
    ("dont know", "don't know"),
    ("hot-dog", "hot dog"),        # a mark touching no space becomes a space
    ("hot - dog", "hot dog"),      # a mark touching a space is deleted
    ("1,000", "1000"),             # a digit-comma-digit group: marks deleted
    ("3.5 m.", "3.5 m"),           # a period before a digit stays
    ("(red)", "red"),
    ("yes/no", "yes no"),
    ("can't", "can't"),
    ("Im", "im"),                  # capitalised table entries never match
])
def test_normalize_answer(raw, normalised):
  assert vqa.normalize_answer(raw) == normalised


def test_period_strip_keeps_the_official_count_quirk():
  # The official call passes re.UNICODE (32) as re.sub's count.
  assert vqa.normalize_answer("." * 40) == "." * 8
