"""The world's knowledge VQA answered by a head trained on the frozen model.

REAVL (Rao et al., ACM MM 2023, §4.2) fine-tunes on a knowledge-VQA benchmark's
train questions and answers by classification over its answer vocabulary.
The zero-shot rule of `vlkg.evaluators.knowledge_vqa` (``world/kvqa``) asks a
model what it was never trained to say; this evaluator trains the answering and
keeps the model fixed (as a linear probe does for an image tower), so that what
the model's features hold decides the score:

1. the train split's questions on its first ``fit_scenes`` scenes
   (`vlkg.data.world.knowledge_benchmarks.train_vqa_items`, drawn as the val and
   test suites are) with their images;
2. features of each (image, question): the encoder's ``question_features``
   (REAVL: the fusion's output with the retrieved knowledge, and the towers'
   embeddings) or else ``[encode_images(i), encode_texts(q)]``;
3. an answer classifier over the train, val and test questions' closed answer
   vocabulary (`vlkg.evaluators.answer_head`), fitted on train, selected on the
   ``val`` suite, and scored on ``test`` with the official VQA accuracy. The fit
   and selection features are asked for with ``fit=True``: a test-time
   perturbation of the encoder (REAVL's distractor items) touches the test
   features only.

Every model is read by the same head, trained on the same questions with the same
seed, so the comparison is between what the models' features hold.

A real benchmark's train split fits the same head (`head_on_files`: the
``--train`` of ``python -m vlkg.tools.evaluate`` for OK-VQA and A-OKVQA), with every
tenth train question held out for the selection.

Metrics: ``world/kvqa_head`` (test), ``world_val/kvqa_head`` (the selection score),
``world/kvqa_head/<type>`` (test accuracy per question type) and
``world/kvqa_head_n_fit`` (train questions); with ``heads`` > 1, each the mean over
that many head seeds, and ``world/kvqa_head_se`` the standard error of the first.
On data without the world's knowledge suites nothing is reported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from vlkg.data.world import knowledge_benchmarks as kb_lib
from vlkg.evaluators import answer_head, encoder as encoder_lib
from vlkg.evaluators import knowledge_vqa, vqa, world_knowledge
from vlkg.evaluators.benchmark_images import pixel_chunks


def features(encoder, images: np.ndarray, questions: Sequence[str],
             batch_size: int, *, fit: bool = False) -> np.ndarray:
  """[N, F] features of (image k, question k); see the module docstring. ``fit``:
  they fit the head (`vlkg.evaluators.encoder.QuestionFeatureEncoder`)."""
  out = []
  for s in range(0, len(questions), batch_size):
    img, qs = images[s:s + batch_size], list(questions[s:s + batch_size])
    if encoder_lib.has_question_features(encoder):
      out.append(np.asarray(encoder.question_features(img, qs, fit=fit), np.float32))
    else:
      out.append(np.concatenate([np.asarray(encoder.encode_images(img), np.float32),
                                 np.asarray(encoder.encode_texts(qs), np.float32)], 1))
  return np.concatenate(out)


def _file_features(encoder, paths: Sequence[str], questions: Sequence[str],
                   batch_size: int, fit: bool) -> np.ndarray:
  """[N, F] features of image files (all present) and their questions, in order."""
  out = {}
  for group, pixels in pixel_chunks(encoder, paths, np.arange(len(paths)), batch_size):
    rows = features(encoder, pixels, [questions[i] for i in group], batch_size, fit=fit)
    out.update(zip(group, rows))
  return np.stack([out[i] for i in range(len(paths))])


def _suite(encoder, dataset_dir: str, split: str, batch_size: int, fit: bool):
  """(features, questions) of the split's written suite, images from its files."""
  questions = world_knowledge.read(dataset_dir, split)["questions"]
  paths = [kb_lib.image_file(dataset_dir, split, q.image_id) for q in questions]
  return (_file_features(encoder, paths, [q.question for q in questions], batch_size,
                         fit), questions)


def labels(questions, vocabulary: Sequence[str]) -> np.ndarray:
  """[N] each question's answer as an index of ``vocabulary`` (normalised alike)."""
  index = {vqa.normalize_answer(a): k for k, a in enumerate(vocabulary)}
  return np.array([index[vqa.normalize_answer(q.answers[0])] for q in questions])


def per_type(picks: np.ndarray, questions, vocabulary: Sequence[str]) -> dict:
  """Exact-answer accuracy of ``picks`` per question type."""
  right = labels(questions, vocabulary) == picks
  types = np.array([q.question_type or "" for q in questions])
  return {t: float(right[types == t].mean()) for t in sorted(set(types))}


def evaluate(encoder, dataset_dir: str, *, fit_scenes: int = 24000,
             batch_size: int = 256, heads: int = 1, **head) -> dict[str, float]:
  """Fits the head on train questions and scores it; see the module docstring.

  Args:
    encoder: The frozen model (`vlkg.evaluators.encoder.Encoder`).
    dataset_dir: A prepared world dataset.
    fit_scenes: The first this many train scenes give the fit questions.
    batch_size: Images per encoder call.
    heads: Heads fitted on the same features, with seeds ``seed``, ``seed + 1``,
      ...; every score is their mean (a head's seed moves ``world/kvqa_head`` by
      a point or two on the world), with ``world/kvqa_head_se`` its standard
      error when there are several.
    **head: `vlkg.evaluators.answer_head.HeadConfig` keys.
  """
  if heads < 1:
    raise ValueError(f"vqa_head: heads={heads} must be >= 1")
  if not os.path.exists(os.path.join(dataset_dir, "world.json")):
    logging.info("vqa_head: %s is not a world dataset; skipped", dataset_dir)
    return {}
  config = answer_head.HeadConfig(**head)
  fit_images, fit_q = kb_lib.train_vqa_items(dataset_dir, fit_scenes)
  fit_x = features(encoder, fit_images, [q.question for q in fit_q], batch_size,
                   fit=True)
  val_x, val_q = _suite(encoder, dataset_dir, "val", batch_size, fit=True)
  test_x, test_q = _suite(encoder, dataset_dir, "test", batch_size, fit=False)
  vocabulary = knowledge_vqa.answer_vocabulary(
      [q.answers for q in (*fit_q, *val_q, *test_q)])
  accuracy = lambda scores, qs: knowledge_vqa.vqa_accuracy(
      scores, vocabulary, [q.answers for q in qs])[0]
  fit_y = labels(fit_q, vocabulary)
  select = lambda logits: accuracy(logits(val_x), val_q)
  runs = []
  for i in range(heads):
    fitted = answer_head.fit(fit_x, fit_y, len(vocabulary), select,
                             config._replace(seed=config.seed + i))
    scores = fitted.logits(test_x)
    run = {"world/kvqa_head": accuracy(scores, test_q),
           "world_val/kvqa_head": fitted.selected_score}
    for kind, value in per_type(np.argmax(scores, 1), test_q, vocabulary).items():
      run[f"world/kvqa_head/{kind}"] = value
    runs.append(run)
  out = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
  out["world/kvqa_head_n_fit"] = float(len(fit_q))
  if heads > 1:
    accuracies = [r["world/kvqa_head"] for r in runs]
    out["world/kvqa_head_se"] = float(np.std(accuracies, ddof=1) / np.sqrt(heads))
  return out


def head_on_files(encoder, fit: tuple, scored: tuple, vocabulary: Sequence[str], *,
                  encode_batch: int, hold_out_every: int = 10, **head) -> np.ndarray:
  """Scores of a head fitted on a benchmark's train split; see the module docstring.

  Args:
    encoder: The frozen model.
    fit: ``(paths, questions, answer lists)`` of the train questions whose image
      exists; every ``hold_out_every``-th selects the head, the rest fit it.
    scored: ``(paths, questions)`` of the items to score.
    vocabulary: The answers (`knowledge_vqa.answer_vocabulary` of the train split);
      a train question is fitted on its most common answer in it (questions with
      none are left out).
    encode_batch: Images per encoder call.
    **head: `vlkg.evaluators.answer_head.HeadConfig` keys.

  Returns:
    [len(scored paths), len(vocabulary)] answer logits.
  """
  paths, questions, human = fit
  index = {vqa.normalize_answer(a): k for k, a in enumerate(vocabulary)}
  label, keep = [], []
  for k, answers in enumerate(human):
    known = [index[n] for n in map(vqa.normalize_answer, answers) if n in index]
    if known:
      label.append(max(set(known), key=lambda a: (known.count(a), -a)))
      keep.append(k)
  if len(keep) < 2:
    raise ValueError(f"{len(keep)} train questions with an answer in the vocabulary; "
                     "the head needs at least 2")
  x = _file_features(encoder, [paths[k] for k in keep], [questions[k] for k in keep],
                     encode_batch, fit=True)
  y = np.array(label)
  held = np.arange(len(keep)) % hold_out_every == hold_out_every - 1
  if held.all() or not held.any():
    held = np.arange(len(keep)) == len(keep) - 1
  held_human = [human[keep[k]] for k in np.flatnonzero(held)]
  select = lambda logits: knowledge_vqa.vqa_accuracy(logits(x[held]), vocabulary,
                                                     held_human)[0]
  fitted = answer_head.fit(x[~held], y[~held], len(vocabulary), select,
                           answer_head.HeadConfig(**head))
  return fitted.logits(_file_features(encoder, scored[0], scored[1], encode_batch,
                                      fit=False))
