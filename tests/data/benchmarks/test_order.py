"""Tests for the COCO-Order / Flickr30k-Order caption cleaning and perturbations
(Yuksekgonul et al., "When and why vision-language models behave like
bags-of-words, and what to do about it?", ICLR 2023) and their precision@1."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from vlkg.data.benchmarks import order


def test_clean_caption_examples():
  assert order.clean_caption('A Man (smiling) said: "Hi!"  ~ wow;') == \
      "a man smiling said hi wow"
  # Commas and apostrophes are not in the official list and stay.
  assert order.clean_caption("A dog's toy, red.") == "a dog's toy, red"
  assert order.clean_caption("  Two   #dogs*  \n") == "two dogs"
  # The official regex collapses runs of 2+ whitespace only: a lone tab stays.
  assert order.clean_caption("a\tb") == "a\tb"
  words = [f"W{i}" for i in range(31)]
  assert order.clean_caption(" ".join(words) + ".") == " ".join(
      w.lower() for w in words[:30])
  assert order.clean_caption(" ".join(words[:30])) == " ".join(
      w.lower() for w in words[:30])
  assert order.clean_caption("a b c", max_words=2) == "a b"


_LEXICON = {"man": "noun", "horse": "noun", "dog": "noun", "field": "noun",
            "big": "adj", "brown": "adj", "green": "adj"}


def _tag(token: str) -> str | None:
  return _LEXICON.get(token.lower())


_CAPTION = "A big man riding a brown horse near a dog in a green field."


def test_simple_tokenize():
  assert order.simple_tokenize("A man's hat, t-shirt.") == [
      "A", "man", "'s", "hat", ",", "t-shirt", "."]


def test_perturbations_preserve_tokens_and_are_seeded():
  tokens = order.simple_tokenize(_CAPTION)
  first = order.perturbations(_CAPTION, _tag, np.random.default_rng(3))
  again = order.perturbations(_CAPTION, _tag, np.random.default_rng(3))
  assert first == again and len(first) == 4
  for perturbed in first:
    assert collections.Counter(perturbed.split(" ")) == collections.Counter(tokens)
  seen = {tuple(order.perturbations(_CAPTION, _tag, np.random.default_rng(s)))
          for s in range(10)}
  assert len(seen) > 1


def test_noun_adj_shuffle_permutes_within_class_only():
  tokens = order.simple_tokenize(_CAPTION)
  nouns = {i for i, t in enumerate(tokens) if _tag(t) == "noun"}
  adjs = {i for i, t in enumerate(tokens) if _tag(t) == "adj"}
  assert nouns == {2, 6, 9, 13} and adjs == {1, 5, 12}
  changed = False
  for seed in range(20):
    out = order.perturbations(_CAPTION, _tag, np.random.default_rng(seed))[0].split(" ")
    for i, token in enumerate(out):
      if i in nouns:
        assert _tag(token) == "noun"
      elif i in adjs:
        assert _tag(token) == "adj"
      else:
        assert token == tokens[i]
    changed |= out != tokens
  assert changed
  # With a bool tagger nouns and adjectives form one pool.
  pooled = lambda t: _tag(t) is not None  # noqa: E731
  mixed = False
  for seed in range(20):
    rng = np.random.default_rng(seed)
    out = order.perturbations(_CAPTION, pooled, rng)[0].split(" ")
    assert all(out[i] == tokens[i] for i in range(len(tokens)) if i not in nouns | adjs)
    mixed |= any(_tag(out[i]) == "adj" for i in nouns)
  assert mixed


def test_allbut_shuffle_keeps_tagged_tokens_in_place():
  tokens = order.simple_tokenize(_CAPTION)
  tagged = {i for i, t in enumerate(tokens) if _tag(t)}
  for seed in range(10):
    out = order.perturbations(_CAPTION, _tag, np.random.default_rng(seed))[1].split(" ")
    assert all(out[i] == tokens[i] for i in tagged)
    assert sorted(out[i] for i in range(len(out)) if i not in tagged) == sorted(
        tokens[i] for i in range(len(tokens)) if i not in tagged)


class _FixedPermutations:
  """Stands in for np.random.Generator, handing out given permutations in order."""

  def __init__(self, *perms):
    self.perms = [list(p) for p in perms]

  def permutation(self, n):
    perm = self.perms.pop(0)
    assert sorted(perm) == list(range(n))
    return np.array(perm)


def test_trigrams_hand_worked():
  assert order.trigrams("a b c d e f g".split()) == [
      ["a", "b", "c"], ["d", "e", "f"], ["g"]]
  assert order.trigrams("a b c d e".split()) == [["a", "b", "c"], ["d", "e"]]
  assert order.trigrams([]) == []


def test_perturbations_hand_worked_with_fixed_draws():
  # Tokens: A(0) big(1) man(2) rides(3) a(4) brown(5) horse(6) .(7)
  caption = "A big man rides a brown horse."
  # Draws in order: one per word class in order of first appearance ("big" comes
  # before "man", so adjectives first), one for the untagged tokens, one per
  # trigram, one for the trigram order.
  rng = _FixedPermutations(
      [1, 0],              # (1) adjectives big, brown -> brown, big
      [1, 0],              # (1) nouns man, horse -> horse, man
      [3, 2, 1, 0],        # (2) untagged A, rides, a, . -> ., a, rides, A
      [2, 1, 0],           # (3) trigram [A big man] -> [man big A]
      [0, 2, 1],           # (3) trigram [rides a brown] -> [rides brown a]
      [1, 0],              # (3) short last group [horse .] -> [. horse]
      [2, 0, 1],           # (4) groups -> [horse .] [A big man] [rides a brown]
  )
  assert order.perturbations(caption, _tag, rng) == [
      "A brown horse rides a big man .",
      ". big man a rides brown horse A",
      "man big A rides brown a . horse",
      "horse . A big man rides a brown",
  ]
  assert rng.perms == []


def test_order_options_clean_after_perturbing_the_raw_caption():
  caption = "A big man rides a brown horse."
  rng = _FixedPermutations([1, 0], [1, 0], [3, 2, 1, 0], [2, 1, 0], [0, 2, 1],
                           [1, 0], [2, 0, 1])
  assert order.order_options(caption, _tag, rng) == [
      "a big man rides a brown horse",
      "a brown horse rides a big man",
      "big man a rides brown horse a",  # the "." token is cleaned away afterwards
      "man big a rides brown a horse",
      "horse a big man rides a brown",
  ]
  long_caption = " ".join(["A brown dog"] * 12) + "."  # 36 words
  options = order.order_options(long_caption, _tag, np.random.default_rng(0))
  assert len(options) == 5
  assert all(len(o.split(" ")) == 30 for o in options)
  assert options[0] == order.clean_caption(long_caption)


def test_precision_at_1_ties_count_as_correct():
  scores = np.array([
      [1.0, 1.0, 0.0, 0.0, 0.0],  # tie with a perturbation -> argmax 0 -> correct
      [0.0, 1.0, 0.0, 0.0, 0.0],  # wrong
      [2.0, 2.0, 2.0, 2.0, 2.0],  # all tied -> correct
      [0.5, 0.1, 0.2, 0.3, 0.4],  # correct
  ])
  assert order.precision_at_1(scores) == 0.75
  with pytest.raises(ValueError, match="NaN"):
    order.precision_at_1(np.array([[np.nan, 0, 0, 0, 0]]))
  with pytest.raises(ValueError, match="shape"):
    order.precision_at_1(np.zeros(5))
