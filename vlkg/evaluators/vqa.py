"""The official VQA accuracy of one answer, with the official answer normalisation.

VQA accuracy is the metric of Antol et al., "VQA: Visual Question Answering", ICCV
2015 (its evaluation section), kept by VQA v2 and by the knowledge benchmarks OK-VQA
(Marino et al., CVPR 2019) and A-OKVQA (Schwenk et al., ECCV 2022). Every
question has ten human answers; an answer counts as fully right when at least three
humans gave it. The official evaluation (github.com/GT-Vision-Lab/VQA,
``vqaEval.py``) averages ``min(1, matches / 3)`` over the ten ways of leaving one
human answer out, so that the score of a prediction that ``m`` of the ten humans
gave is

  ========  ======================================================
  ``m``     accuracy
  ========  ======================================================
  0         0
  1         (9 * 1/3) / 10 = 0.3
  2         (2 * 1/3 + 8 * 2/3) / 10 = 0.6
  3         (3 * 2/3 + 7 * 1) / 10 = 0.9
  >= 4      1
  ========  ======================================================

Normalisation, as the official code does it to the prediction: newlines and tabs
become spaces and the ends are stripped; then ``processPunctuation`` (each of the
punctuation marks is deleted if it touches a space anywhere in the answer or if the
answer holds a digit-comma-digit group, else it becomes a space; a period not
followed by a digit is deleted, at most 32 of them, because the official call passes
``re.UNICODE`` where ``re.sub`` takes its count); then ``processDigitArticle``
(lower case, split on whitespace, number words "none"/"zero" .. "ten" to digits,
the articles "a", "an", "the" dropped, apostrophe-less contractions such as "dont"
given back their apostrophe).

One difference from the official code, on purpose: the official script normalises
the ten human answers only when they disagree (and then, in its newest version,
only their punctuation), because the VQA and OK-VQA annotations store answers
already normalised. Here every human answer goes through the same normalisation as
the prediction, so that answers stored raw (A-OKVQA's ``direct_answers``, the
world's "four") compare as their normalised forms; on normalised annotations the
two rules agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The official table of contractions written without their apostrophe. Entries with
# capitals never match (the text is lower-cased first) and "somebody'd" maps the
# other way; both are kept as the official code has them, so scores agree.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's",
    "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
               ">", "<", "@", "`", ",", "?", "!")
# As the official pattern is written: "(?!<=\d)" is a look-ahead (a mistyped
# look-behind) that always holds before a period, so the pattern deletes every
# period that no digit follows.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official call is ``periodStrip.sub("", text, re.UNICODE)``: the flag lands in
# ``count``, so at most re.UNICODE (32) periods are deleted.
_PERIOD_COUNT = int(re.UNICODE)
# min(1, matches / HUMANS_FOR_FULL_CREDIT): three agreeing humans make an answer right.
HUMANS_FOR_FULL_CREDIT = 3


def process_punctuation(text: str) -> str:
  """The official ``processPunctuation``: see the module docstring."""
  out = text
  has_number_comma = _COMMA_STRIP.search(text) is not None
  for mark in PUNCTUATION:
    if mark + " " in text or " " + mark in text or has_number_comma:
      out = out.replace(mark, "")
    else:
      out = out.replace(mark, " ")
  return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
  """The official ``processDigitArticle``: see the module docstring."""
  words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
  words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
  return " ".join(words)


def normalize_answer(text: str) -> str:
  """An answer as the official evaluation compares it ("Two dogs." -> "2 dogs").

  Raises:
    TypeError: If ``text`` is not a string.
  """
  if not isinstance(text, str):
    raise TypeError(f"an answer must be a str, got {type(text).__name__}")
  text = text.replace("\n", " ").replace("\t", " ").strip()
  return process_digit_article(process_punctuation(text))


def accuracy_of_normalized(prediction: str, answers: Sequence[str]) -> float:
  """`accuracy` for a prediction and answers already passed through
  `normalize_answer` (evaluators normalise each human answer once)."""
  if not answers:
    raise ValueError("VQA accuracy needs at least one human answer")
  matches = sum(a == prediction for a in answers)
  total = 0.0
  for answer in answers:  # leave this one out: the others' matches
    others = matches - (answer == prediction)
    total += min(1.0, others / HUMANS_FOR_FULL_CREDIT)
  return total / len(answers)


def accuracy(prediction: str, answers: Sequence[str]) -> float:
  """The official VQA accuracy of ``prediction`` given the human ``answers``.

  Args:
    prediction: The model's answer, raw.
    answers: The human answers (ten in VQA, OK-VQA and A-OKVQA), raw.

  Returns:
    The mean over the leave-one-out subsets of ``min(1, matches / 3)``, in [0, 1];
    e.g. 0.6 when two of ten humans gave the prediction (module docstring).

  Raises:
    ValueError: If ``answers`` is empty.
    TypeError: If an answer is not a string.
  """
  if isinstance(answers, str):
    raise TypeError("answers must be a list of strings, not one string")
  return accuracy_of_normalized(normalize_answer(prediction),
                                [normalize_answer(a) for a in answers])
