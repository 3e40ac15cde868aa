"""ARO COCO-Order / Flickr30k-Order: caption cleaning, word-order perturbations, metric.

From Yuksekgonul et al., "When and why vision-language models behave like
bags-of-words, and what to do about it?", ICLR 2023 (github.com/mertyg/
vision-language-models-are-bows). Our own implementation, written after reading the
official ``dataset_zoo/aro_datasets.py`` (``COCO_Order``, ``Flickr30k_Order``),
``dataset_zoo/perturbations.py`` (``TextShuffler``) and ``dataset_zoo/retrieval.py``
(``pre_caption``). What it matches:

* Each Karpathy test caption gives five options: ``pre_caption(caption, 30)`` and
  ``pre_caption(perturb(caption), 30)`` for the four perturbations, in the order
  nouns-and-adjectives shuffle, shuffle of all but nouns and adjectives, shuffle
  within trigrams, shuffle of trigrams. The perturbations act on the RAW caption
  (case and punctuation intact, not truncated) and the result is then cleaned, so a
  perturbed option of a long caption may keep words that the original option lost
  to the 30-word cut.
* The perturbations work on tokens (spaCy's for the first two, NLTK's
  ``word_tokenize`` for the trigram ones), so punctuation marks are tokens of their
  own that take part in the shuffles and the trigrams; the result is joined with
  single spaces. Our default tokenizer, `simple_tokenize`, approximates this.
* The nouns-and-adjectives shuffle permutes the nouns (Penn tags NN, NNS, NNP, NNPS)
  among the noun positions and, separately, the adjectives (JJ, JJR, JJS) among the
  adjective positions. The second perturbation permutes every other token among
  the remaining positions. Here a tagger callable replaces spaCy; see
  `perturbations` for how it expresses the noun/adjective split.
* Trigrams are consecutive groups of three tokens from the start; a last group of
  one or two tokens is kept as a shorter group, is shuffled within like the others
  and moves as one unit when the groups are shuffled.
* Precision@1: ``np.argmax`` over the five scores equals 0. Since argmax returns the
  first maximum, a tie with the original counts as correct.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from vlkg.data.benchmarks.choice import ChoiceRule

MAX_WORDS = 30
# Option 0 is the original; argmax's first maximum makes a tie with it correct.
TIE_RULE = ChoiceRule(answer=0, ties="correct")
# Characters that pre_caption replaces by a space.
_PUNCT_RE = re.compile(r'[.!"()*#:;~]')
_MULTI_SPACE_RE = re.compile(r"\s{2,}")
# Words (letters/digits/underscore, inner hyphens allowed), clitics like 's, and
# every other non-space character on its own.
_TOKEN_RE = re.compile(r"\w+(?:-\w+)*|'\w+|[^\w\s]")

Tagger = Callable[[str], bool | str | None]
Tokenizer = Callable[[str], Sequence[str]]


def clean_caption(text: str, max_words: int = MAX_WORDS) -> str:
  """Cleans a caption exactly like the official ``pre_caption``.

  Steps: lowercase; replace each of ``. ! " ( ) * # : ; ~`` by a space; replace each
  run of two or more whitespace characters by one space (a lone tab or newline is
  kept, as in the official regex ``\\s{2,}``); strip trailing newlines, then leading
  and trailing spaces; keep the first ``max_words`` space-separated words.

  Args:
    text: The raw caption.
    max_words: Words to keep (the Order datasets use 30).

  Returns:
    The cleaned caption.
  """
  text = _PUNCT_RE.sub(" ", text.lower())
  text = _MULTI_SPACE_RE.sub(" ", text)
  text = text.rstrip("\n").strip(" ")
  words = text.split(" ")
  if len(words) > max_words:
    text = " ".join(words[:max_words])
  return text


def simple_tokenize(text: str) -> list[str]:
  """Splits text into words and punctuation marks, like spaCy/NLTK roughly do.

  ``"A man's hat."`` -> ``["A", "man", "'s", "hat", "."]``. Hyphenated words stay
  whole. It does not reproduce every rule of spaCy or NLTK (e.g. NLTK's ``n't``
  split or its rewriting of ``"`` as two backticks / two quotes).

  Args:
    text: The raw caption.

  Returns:
    The tokens in order.
  """
  return _TOKEN_RE.findall(text)


def _word_class(tagger: Tagger, token: str) -> str | None:
  tag = tagger(token)
  if tag is None or tag is False or tag == "":
    return None
  if tag is True:
    return "noun_or_adj"
  if isinstance(tag, str):
    return tag
  raise TypeError(
      f"tagger must return bool, str or None, got {type(tag).__name__} for {token!r}")


def _permute_positions(tokens: list[str], positions: list[int],
                       rng: np.random.Generator) -> None:
  order = rng.permutation(len(positions))
  values = [tokens[p] for p in positions]
  for p, j in zip(positions, order):
    tokens[p] = values[j]


def trigrams(tokens: Sequence[str]) -> list[list[str]]:
  """Consecutive groups of three tokens; a last group of 1-2 tokens is kept.

  ``[a, b, c, d, e]`` -> ``[[a, b, c], [d, e]]`` (official ``get_trigrams``).
  """
  return [list(tokens[i:i + 3]) for i in range(0, len(tokens), 3)]


def shuffle_nouns_and_adj(tokens: Sequence[str], is_noun_or_adj: Tagger,
                          rng: np.random.Generator) -> list[str]:
  """Permutes tagged tokens among the positions of their own class.

  Classes are taken in order of first appearance; each is permuted with one
  ``rng.permutation`` call. Untagged tokens stay in place.
  """
  out = list(tokens)
  classes: dict[str, list[int]] = {}
  for i, token in enumerate(tokens):
    cls = _word_class(is_noun_or_adj, token)
    if cls is not None:
      classes.setdefault(cls, []).append(i)
  for positions in classes.values():
    _permute_positions(out, positions, rng)
  return out


def shuffle_allbut_nouns_and_adj(tokens: Sequence[str], is_noun_or_adj: Tagger,
                                 rng: np.random.Generator) -> list[str]:
  """Permutes the untagged tokens among their positions; tagged ones stay put."""
  out = list(tokens)
  positions = [i for i, t in enumerate(tokens)
               if _word_class(is_noun_or_adj, t) is None]
  _permute_positions(out, positions, rng)
  return out


def shuffle_within_trigrams(tokens: Sequence[str],
                            rng: np.random.Generator) -> list[str]:
  """Permutes the tokens inside each trigram (the short last group too)."""
  out: list[str] = []
  for group in trigrams(tokens):
    out.extend(group[j] for j in rng.permutation(len(group)))
  return out


def shuffle_trigrams(tokens: Sequence[str], rng: np.random.Generator) -> list[str]:
  """Permutes the order of the trigrams (the short last group moves as a unit)."""
  groups = trigrams(tokens)
  return [t for j in rng.permutation(len(groups)) for t in groups[j]]


def perturbations(
    caption: str,
    is_noun_or_adj: Tagger,
    rng: np.random.Generator,
    *,
    tokenize: Tokenizer = simple_tokenize,
) -> list[str]:
  """The four ARO order perturbations of a raw caption, in the official order.

  1. nouns-and-adjectives shuffle, 2. shuffle of all but nouns and adjectives,
  3. shuffle within trigrams, 4. shuffle of trigrams. Each tokenizes ``caption``
  and joins the result with single spaces; nothing is cleaned (the official code
  cleans afterwards, see `order_options`). The random draws are, in order: one
  permutation per word class for (1), one for (2), one per trigram for (3), one for
  (4), all from ``rng``. As in the official code, a perturbation may happen to give
  back the original order.

  Args:
    caption: The raw caption.
    is_noun_or_adj: Tagger for one token. It returns False/None/"" for a token that
      is neither noun nor adjective. For a noun or adjective it returns either True
      (all such tokens form one class) or a class label string (e.g. ``"noun"`` /
      ``"adj"``); perturbation (1) permutes tokens only among positions of the same
      class. The official code shuffles nouns and adjectives separately, which
      labels reproduce; True pools them. Perturbation (2) only needs truthiness.
    rng: Source of randomness; the same generator state gives the same output.
    tokenize: Splits the caption into tokens; default `simple_tokenize`.

  Returns:
    The four perturbed captions.
  """
  tokens = list(tokenize(caption))
  return [
      " ".join(shuffle_nouns_and_adj(tokens, is_noun_or_adj, rng)),
      " ".join(shuffle_allbut_nouns_and_adj(tokens, is_noun_or_adj, rng)),
      " ".join(shuffle_within_trigrams(tokens, rng)),
      " ".join(shuffle_trigrams(tokens, rng)),
  ]


def order_options(
    caption: str,
    is_noun_or_adj: Tagger,
    rng: np.random.Generator,
    *,
    tokenize: Tokenizer = simple_tokenize,
    max_words: int = MAX_WORDS,
) -> list[str]:
  """The five options of one Order test case; option 0 is the original.

  ``[clean_caption(caption)] + [clean_caption(p) for p in perturbations(caption)]``,
  i.e. the perturbations see the raw caption and every option is cleaned and cut
  to ``max_words`` afterwards, as in ``COCO_Order`` / ``Flickr30k_Order``.

  Args:
    caption: The raw caption from the Karpathy test JSON.
    is_noun_or_adj: Tagger, see `perturbations`.
    rng: Source of randomness.
    tokenize: Tokenizer, see `perturbations`.
    max_words: Words kept by the cleaning (official: 30).

  Returns:
    Five cleaned captions.
  """
  perturbed = perturbations(caption, is_noun_or_adj, rng, tokenize=tokenize)
  return [clean_caption(c, max_words) for c in [caption, *perturbed]]


def order_correct(scores: np.ndarray) -> np.ndarray:
  """Whether the original (option 0) gets the top score, per test case.

  Official: ``np.argmax(scores, axis=-1) == 0``; argmax returns the first maximum,
  so a tie between the original and a perturbation counts as correct.

  Args:
    scores: ``[N, 5]`` (or ``[N, K]``) scores, option 0 the original caption.

  Returns:
    bool ``[N]``.

  Raises:
    ValueError: If ``scores`` is not ``[N, K]`` with K >= 1 or holds a NaN (argmax
      would silently pick the NaN).
  """
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 2 or scores.shape[1] == 0:
    raise ValueError(f"scores must be [N, K], got shape {scores.shape}")
  if np.isnan(scores).any():
    raise ValueError("scores hold a NaN")
  return TIE_RULE.correct(scores)


def precision_at_1(scores: np.ndarray) -> float:
  """Fraction of test cases whose original (option 0) gets the top score; see
  `order_correct`.

  Raises:
    ValueError: If ``scores`` is not a non-empty 2-D array or holds a NaN.
  """
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
    raise ValueError(
        f"scores must be a non-empty [N, K] array, got shape {scores.shape}")
  return float(np.mean(order_correct(scores)))
