"""The one correctness rule of every choice benchmark, parameterised by its tie rule.

An item offers K captions (or images) with one score each; it is correct when the
right option wins. The benchmarks differ only in where the right option stands and
in how a tie with it is counted, which matters for collapsed or bag-of-words models
that give two captions with the same words the same score. Each benchmark family
declares its convention as a `ChoiceRule` in its own module:

* ARO VG-Relation / VG-Attribution (Yuksekgonul et al., "When and why
  vision-language models behave like bags-of-words, and what to do about it?",
  ICLR 2023, official ``evaluate_scores``): options ``[false, true]``, correct iff
  ``np.argmax == 1``; argmax returns the first maximum, so a tie is WRONG.
* COCO/Flickr-Order (same paper): option 0 is the original, correct iff
  ``np.argmax == 0``; a tie with the original is CORRECT.
* SugarCrepe (Hsieh et al., NeurIPS 2023 D&B, ``text_retrieval``): options
  ``[positive, negative]``, ``pos_score > neg_score``; a tie is WRONG.
* Winoground (Thrush et al., CVPR 2022): each of its four comparisons is strict, so
  a tie is WRONG.

A NaN never beats nor ties anything (every comparison with it is false), so an item
whose right option scores NaN is wrong; callers whose official code would let
``argmax`` pick a NaN refuse NaNs before scoring.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np

Ties = Literal["wrong", "correct"]
TIES: tuple[str, ...] = ("wrong", "correct")


def choice_correct(scores: Any, answer: int, ties: Ties) -> np.ndarray:
  """Whether option ``answer`` wins each item.

  Args:
    scores: ``[..., K]`` scores, the options along the last axis.
    answer: The index of the right option.
    ties: ``"wrong"``: the right option must score strictly higher than every
      other; ``"correct"``: it must score at least as high (``np.argmax`` with the
      right option first).

  Returns:
    bool ``[...]``.

  Raises:
    ValueError: If ``ties`` is unknown or ``answer`` is not an option.
  """
  if ties not in TIES:
    raise ValueError(f"ties={ties!r}; expected one of {TIES}")
  s = np.asarray(scores, dtype=np.float64)
  if s.ndim < 1 or not 0 <= answer < s.shape[-1]:
    raise ValueError(f"answer {answer} is not an option of scores of shape {s.shape}")
  right = s[..., answer:answer + 1]
  others = np.delete(s, answer, axis=-1)
  wins = right > others if ties == "wrong" else right >= others
  return np.all(wins, axis=-1)


@dataclasses.dataclass(frozen=True)
class ChoiceRule:
  """A benchmark family's convention: where the right option stands, and ties."""
  answer: int
  ties: Ties

  def correct(self, scores: Any) -> np.ndarray:
    """`choice_correct` under this rule."""
    return choice_correct(scores, self.answer, self.ties)
