"""The model interface that every evaluator talks to.

Evaluators never see parameters, a mesh or a jit: they get an object with the
methods below. The trainer wraps its current train state in one, and ``vlkg.api``
returns one from ``api.load``; tests use small numpy fakes. Keeping the interface
this narrow lets one evaluator score a model in training, an exported
``params.npz`` and a hand-made oracle the same way.

Both encoders return L2-normalised rows, so a dot product is the cosine similarity
that CLIP (Radford et al. 2021, §2.3) and every benchmark here rank by.

Two capabilities are optional, each with a check: ``encode_token_ids``
(`TokenIdEncoder`, `has_token_ids`) and ``encode_image_tokens``
(`ImageTokenEncoder`, `has_image_tokens`), the patch tokens that the grounding
evaluator (`vlkg.evaluators.grounding`) reads. An evaluator that needs one skips
its metrics for an encoder without it.

Two more are optional scorers for knowledge tasks, ``answer_scores``
(`AnswerScorer`, `has_answer_scores`) for knowledge VQA and ``link_scores``
(`LinkScorer`, `has_link_scores`) for entity linking, for a model that fuses
image, text and retrieved knowledge (REAVL, Rao et al., ACM MM 2023) and answers
through that fusion rather than through two embeddings.
The evaluators (`vlkg.evaluators.knowledge_vqa`, `vlkg.evaluators.entity_linking`)
use them when present, and otherwise score any dual encoder by a zero-shot rule on
its two embeddings, so that CLIP-style models are scored on the same items.
``question_features`` (`QuestionFeatureEncoder`, `has_question_features`) gives the
features of an (image, question) pair on which `vlkg.evaluators.vqa_head` fits its
answer classifier; without it they are the two embeddings side by side.
``encode_kg_queries`` (`KGQueryEncoder`, `has_kg_queries`) is the same for
knowledge-graph completion (`vlkg.evaluators.kg`), for a model that predicts a
triplet's missing tail through a fusion of head and relation (Knowledge-CLIP, Pan
et al., NeurIPS 2022).
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

import numpy as np


@typing.runtime_checkable
class Encoder(typing.Protocol):
  """Embeds images and texts into one space with unit-length rows.

  Calls come in batches of at most the evaluator's ``batch_size``; the last batch
  of a pass is smaller, so an implementation that jits should pad to a fixed
  batch shape itself rather than compile once per size.
  """

  def encode_images(self, images: np.ndarray) -> np.ndarray:
    """Embeds images.

    Args:
      images: uint8 ``[B, H, W, 3]``, raw pixels; the encoder applies its own
        preprocessing (resize, normalisation).

    Returns:
      float32 ``[B, D]``, each row of unit L2 norm.
    """
    ...

  def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
    """Embeds captions with the model's own tokenizer.

    Args:
      texts: N strings.

    Returns:
      float32 ``[N, D]``, each row of unit L2 norm.
    """
    ...


@typing.runtime_checkable
class TokenIdEncoder(Encoder, typing.Protocol):
  """An `Encoder` that can also embed captions given as token ids.

  Prepared datasets store every caption already tokenised; an encoder whose
  tokenizer IS the dataset's skips a decode/re-encode round trip with this. An
  encoder with any other tokenizer (e.g. imported CLIP weights with their BPE) must
  not offer it, because the ids would mean different words to it.
  """

  def encode_token_ids(self, ids: np.ndarray) -> np.ndarray:
    """Embeds tokenised captions.

    Args:
      ids: int32 ``[N, L]`` ids from the dataset's tokenizer, right-padded.

    Returns:
      float32 ``[N, D]``, each row of unit L2 norm.
    """
    ...


def has_token_ids(encoder: object) -> bool:
  """Whether ``encoder`` offers `TokenIdEncoder.encode_token_ids`."""
  return callable(getattr(encoder, "encode_token_ids", None))


@typing.runtime_checkable
class ImageTokenEncoder(Encoder, typing.Protocol):
  """An `Encoder` that can also give its patch tokens in the joint space.

  Fine-grained evaluations (phrase grounding, LOUPE, Li et al., NeurIPS 2022) compare each
  patch with a text embedding, so the tokens must live where ``encode_texts``
  does: projected like the pooled image embedding, each of unit norm.
  """

  def encode_image_tokens(self, images: np.ndarray) -> np.ndarray:
    """Embeds every patch of the images.

    Args:
      images: uint8 ``[B, H, W, 3]`` as for `Encoder.encode_images`. Patch
        positions map back to pixels only if the grid covers the whole image: the
        encoder may rescale but not crop (`vlkg.api.Model` center-crops a
        non-square image, so its maps are exact for square images, as the
        world's).

    Returns:
      float32 ``[B, P, D]``: ``P = g * g`` patch tokens, row-major over the patch
      grid, each of unit L2 norm, ``D`` the width of ``encode_texts``.
    """
    ...


def has_image_tokens(encoder: object) -> bool:
  """Whether ``encoder`` offers `ImageTokenEncoder.encode_image_tokens`."""
  return callable(getattr(encoder, "encode_image_tokens", None))


@typing.runtime_checkable
class AnswerScorer(Encoder, typing.Protocol):
  """An `Encoder` that scores answers to questions about images itself.

  Without it, `vlkg.evaluators.knowledge_vqa` scores answer ``a`` to question ``q``
  on image ``i`` by the cosine of ``encode_images(i)`` with
  ``encode_texts(f"{q} {a}")``.
  """

  def answer_scores(self, images: np.ndarray, questions: Sequence[str],
                    answers: Sequence[str]) -> np.ndarray:
    """Scores every answer for every (image, question).

    Args:
      images: uint8 ``[N, H, W, 3]``, as for `Encoder.encode_images`.
      questions: N questions, one per image.
      answers: The A answers to rank, the same for every question.

    Returns:
      float ``[N, A]``; higher is more likely.
    """
    ...


def has_answer_scores(encoder: object) -> bool:
  """Whether ``encoder`` offers `AnswerScorer.answer_scores`."""
  return callable(getattr(encoder, "answer_scores", None))


@typing.runtime_checkable
class QuestionFeatureEncoder(Encoder, typing.Protocol):
  """An `Encoder` that gives features of (image, question) pairs itself, for an
  answer classifier fitted on them (`vlkg.evaluators.vqa_head`).

  Without it, the features are ``[encode_images(i), encode_texts(q)]``.
  """

  def question_features(self, images: np.ndarray, questions: Sequence[str], *,
                        fit: bool = False) -> np.ndarray:
    """Features of every (image, question).

    Args:
      images: uint8 ``[N, H, W, 3]``, as for `Encoder.encode_images`.
      questions: N questions, one per image.
      fit: The features fit the head (its train and selection questions) rather
        than being scored: a test-time perturbation of the encoder (REAVL's
        ``eval_distractors``) is left out, so the head learns on clean features.

    Returns:
      float ``[N, F]``, F fixed for the model.
    """
    ...


def has_question_features(encoder: object) -> bool:
  """Whether ``encoder`` offers `QuestionFeatureEncoder.question_features`."""
  return callable(getattr(encoder, "question_features", None))


@typing.runtime_checkable
class LinkScorer(Encoder, typing.Protocol):
  """An `Encoder` that links mentions to knowledge-base entities itself.

  Without it, `vlkg.evaluators.entity_linking` scores candidate ``e`` of a mention
  by the cosine of ``normalise(encode_images(image) + encode_texts(context))`` with
  ``encode_texts(e)``.
  """

  def link_scores(self, images: np.ndarray, contexts: Sequence[str],
                  mentions: Sequence[str],
                  candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Scores each mention's candidate entities.

    Args:
      images: uint8 ``[N, H, W, 3]``: each mention's image.
      contexts: N captions, each holding its mention.
      mentions: N mention texts.
      candidates: N lists of candidate entity texts, each ``"name: description"``
        (the name alone when the knowledge base has no description).

    Returns:
      N float vectors, one score per candidate; higher is more likely.
    """
    ...


def has_link_scores(encoder: object) -> bool:
  """Whether ``encoder`` offers `LinkScorer.link_scores`."""
  return callable(getattr(encoder, "link_scores", None))


@typing.runtime_checkable
class KGQueryEncoder(Encoder, typing.Protocol):
  """An `Encoder` that embeds the query of a knowledge-graph triplet (h, r, ?) itself.

  Tails are ranked by the cosine of the query with their embeddings
  (`Encoder.encode_texts` for a text entity, `Encoder.encode_images` for an image).
  Without it, `vlkg.evaluators.kg` embeds the query of a text head as the text
  ``f"{h} {r}"`` and that of an image head as ``normalise(encode_images(h) +
  encode_texts(r))``.
  """

  def encode_kg_queries(self, relations: Sequence[str], *,
                        texts: Sequence[str] | None = None,
                        images: np.ndarray | None = None) -> np.ndarray:
    """Embeds N (head, relation) queries; the heads are all texts or all images.

    Args:
      relations: N relation texts.
      texts: N head texts, or None when the heads are images.
      images: uint8 ``[N, H, W, 3]`` head images, or None when they are texts.

    Returns:
      float32 ``[N, D]``, each row of unit L2 norm.
    """
    ...


def has_kg_queries(encoder: object) -> bool:
  """Whether ``encoder`` offers `KGQueryEncoder.encode_kg_queries`."""
  return callable(getattr(encoder, "encode_kg_queries", None))
