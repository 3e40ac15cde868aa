"""Tests for vlkg.data.benchmarks.choice: the one tie rule and each family's use."""

from __future__ import annotations

import numpy as np
import pytest

from vlkg.data.benchmarks import aro, order, sugarcrepe
from vlkg.data.benchmarks.choice import ChoiceRule, choice_correct


def test_ties_wrong_is_strict_and_ties_correct_is_argmax_first():
  scores = np.array([[0.5, 0.5, 0.1],
                     [0.6, 0.5, 0.6],
                     [0.7, 0.2, 0.1],
                     [0.1, 0.3, 0.2]])
  np.testing.assert_array_equal(choice_correct(scores, 0, "wrong"),
                                [False, False, True, False])
  np.testing.assert_array_equal(choice_correct(scores, 0, "correct"),
                                [True, True, True, False])
  # "correct" is exactly np.argmax == answer when the answer is option 0.
  np.testing.assert_array_equal(choice_correct(scores, 0, "correct"),
                                np.argmax(scores, -1) == 0)
  np.testing.assert_array_equal(choice_correct(scores, 1, "wrong"),
                                [False, False, False, True])
  # Leading axes are kept; a single option always wins.
  assert choice_correct(np.zeros((2, 3, 1)), 0, "wrong").shape == (2, 3)
  assert choice_correct(np.zeros((2, 3, 1)), 0, "wrong").all()


def test_nan_never_wins_or_ties():
  scores = np.array([[np.nan, 0.1], [0.1, np.nan], [np.nan, np.nan]])
  for ties in ("wrong", "correct"):
    assert not choice_correct(scores, 0, ties).any()


def test_bad_arguments():
  with pytest.raises(ValueError, match="ties='sometimes'"):
    choice_correct(np.zeros((1, 2)), 0, "sometimes")
  with pytest.raises(ValueError, match="answer 2"):
    choice_correct(np.zeros((1, 2)), 2, "wrong")
  with pytest.raises(ValueError, match="answer 0"):
    choice_correct(np.float64(1.0), 0, "wrong")


def test_each_family_keeps_its_documented_convention():
  tie = np.array([[0.3, 0.3]])
  assert aro.TIE_RULE == ChoiceRule(answer=1, ties="wrong")
  assert sugarcrepe.TIE_RULE == ChoiceRule(answer=0, ties="wrong")
  assert order.TIE_RULE == ChoiceRule(answer=0, ties="correct")
  assert not aro.TIE_RULE.correct(tie)[0]
  assert not sugarcrepe.TIE_RULE.correct(tie)[0]
  assert order.TIE_RULE.correct(tie)[0]
  np.testing.assert_array_equal(order.order_correct([[0.2, 0.2, 0.1], [0.1, 0.2, 0.0]]),
                                [True, False])
  with pytest.raises(ValueError, match="NaN"):
    order.order_correct([[np.nan, 0.0]])
