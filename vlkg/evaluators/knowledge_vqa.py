"""Knowledge VQA: OK-VQA, A-OKVQA and the world's suite, answered by classification.

Knowledge VQA asks questions whose answer needs a fact the image does not show
(OK-VQA, Marino et al., CVPR 2019; A-OKVQA, Schwenk et al., ECCV 2022), the tasks
REAVL (Rao et al., ACM MM 2023) is judged on. Every model here answers by
classification over a closed answer vocabulary:

* an encoder with ``answer_scores`` (`vlkg.evaluators.encoder.AnswerScorer`) scores
  the vocabulary itself;
* any other dual encoder scores answer ``a`` to question ``q`` on image ``i`` zero-shot,
  by the cosine of ``encode_images(i)`` with ``encode_texts(f"{q} {a}")``.

The prediction is the best-scoring answer (the first on a tie) and is scored with the
official VQA accuracy (`vlkg.evaluators.vqa`).

Vocabulary (`answer_vocabulary`): the benchmark's distinct human answers up to the
official normalisation, each said by its most common spelling (so the world's "four"
is offered as "four", not as its normal form "4"), most frequent first; for the real
benchmarks only the ``max_answers`` most frequent (default 1000: the zero-shot rule
encodes questions x answers texts). ``<b>/answer_ceiling`` is the accuracy of a
perfect chooser from that vocabulary, and ``<b>/n_answers`` its size. A-OKVQA's
multiple choice ranks each question's own four ``choices`` instead.

Images stream from disk as for every real benchmark
(`vlkg.evaluators.benchmark_images`): a missing file leaves its questions out and is
counted in ``<b>/missing_images``.

The ``train`` option of OK-VQA and of A-OKVQA's direct answers also fits an answer
head on the frozen model over the train split's questions
(`vlkg.evaluators.vqa_head.head_on_files`), the way the benchmarks' models are
trained, and reports ``okvqa/accuracy_head`` / ``aokvqa/direct_answer_head``.

Metrics: ``okvqa/accuracy``; ``aokvqa/multiple_choice``, ``aokvqa/direct_answer``
(VQA accuracy, leave-one-out over normalised answers, difficult questions left out)
and ``aokvqa/direct_answer_official`` (the A-OKVQA script's ``min(1, exact
matches / 3)``); each with ``n_items`` and ``missing_images``.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Sequence

import numpy as np

from vlkg import files
from vlkg.data.benchmarks import aokvqa, okvqa
from vlkg.evaluators import common, encoder as encoder_lib, vqa
from vlkg.evaluators.benchmark_images import (View, default_image_root, embed_views,
                                              existing, pixel_chunks, report_missing,
                                              subdir_or_root)

DEFAULT_MAX_ANSWERS = 1000
# Zero-shot rule: (question, answer) texts encoded per chunk, to bound memory.
_TEXTS_PER_CHUNK = 4096


def answer_vocabulary(answer_lists: Sequence[Sequence[str]],
                      max_answers: int | None = None) -> list[str]:
  """The closed answer vocabulary; see the module docstring.

  Args:
    answer_lists: Each question's human answers, raw.
    max_answers: Keep the most frequent this many (None or 0: all).

  Returns:
    Answers, most frequent normal form first (ties by normal form), each in its
    most common raw spelling (ties by the spelling).
  """
  counts: collections.Counter = collections.Counter()
  spellings: dict[str, collections.Counter] = collections.defaultdict(
      collections.Counter)
  for answers in answer_lists:
    for raw in answers:
      norm = vqa.normalize_answer(raw)
      if norm:
        counts[norm] += 1
        spellings[norm][raw.strip()] += 1
  order = sorted(counts, key=lambda n: (-counts[n], n))[:max_answers or None]
  return [min(spellings[n], key=lambda s: (-spellings[n][s], s)) for n in order]


def _check_scores(scores, n: int, a: int, what: str) -> np.ndarray:
  arr = np.asarray(scores, dtype=np.float64)
  if arr.shape != (n, a) or not np.isfinite(arr).all():
    raise ValueError(f"{what} returned shape {arr.shape} (or non-finite values) for "
                     f"{n} items and {a} answers; expected finite [{n}, {a}]")
  return arr


def _zero_shot(cache: common.EmbeddingCache, image_emb: np.ndarray,
               questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
  """Cosines of each image with ``"{question} {answer}"``: each distinct question's
  texts are encoded once, a chunk at a time, and not kept."""
  distinct = list(dict.fromkeys(questions))
  position = {q: k for k, q in enumerate(distinct)}
  of_item = np.array([position[q] for q in questions], dtype=np.int64)
  out = np.zeros((len(questions), len(answers)))
  per = max(1, _TEXTS_PER_CHUNK // len(answers))
  for start in range(0, len(distinct), per):
    part = distinct[start:start + per]
    emb = common.encode_batched(cache.encoder.encode_texts,
                                [f"{q} {a}" for q in part for a in answers],
                                cache.batch_size, "encode_texts")
    emb = emb.reshape(len(part), len(answers), -1)
    rows = np.flatnonzero((of_item >= start) & (of_item < start + len(part)))
    out[rows] = np.einsum("nad,nd->na", emb[of_item[rows] - start], image_emb[rows])
  return out


def answer_scores(cache: common.EmbeddingCache, paths: Sequence[str],
                  questions: Sequence[str], answers: Sequence[str]
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """``[kept, A]`` scores of every answer for the items whose image exists.

  Args:
    cache: Wraps the encoder (its image embeddings are reused).
    paths: Each item's image file.
    questions: Each item's question.
    answers: The vocabulary, shared by all items.

  Returns:
    ``(scores, kept, missing)``: scores of the kept items in order, the bool mask of
    kept items, and the distinct missing image files.
  """
  encoder = cache.encoder
  kept, missing = existing(paths)
  items = np.flatnonzero(kept)
  if encoder_lib.has_answer_scores(encoder):
    out = np.zeros((len(items), len(answers)))
    row = {int(i): r for r, i in enumerate(items)}
    for group, pixels in pixel_chunks(encoder, paths, items, cache.batch_size):
      scores = encoder.answer_scores(pixels, [questions[i] for i in group],
                                     list(answers))
      out[[row[i] for i in group]] = _check_scores(scores, len(group), len(answers),
                                                   "answer_scores")
    return out, kept, missing
  rows, matrix, _ = embed_views(cache, [View(paths[i]) for i in items])
  return (_zero_shot(cache, matrix[rows], [questions[i] for i in items], answers),
          kept, missing)


def choice_scores(cache: common.EmbeddingCache, paths: Sequence[str],
                  questions: Sequence[str], choices: Sequence[Sequence[str]]
                  ) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
  """Like `answer_scores`, with each item's own options (A-OKVQA's choices): one
  score vector per kept item."""
  encoder = cache.encoder
  kept, missing = existing(paths)
  items = np.flatnonzero(kept)
  out: dict[int, np.ndarray] = {}
  if encoder_lib.has_answer_scores(encoder):
    for group, pixels in pixel_chunks(encoder, paths, items, cache.batch_size):
      union = list(dict.fromkeys(c for i in group for c in choices[i]))
      scores = _check_scores(encoder.answer_scores(
          pixels, [questions[i] for i in group], union), len(group), len(union),
          "answer_scores")
      col = {c: k for k, c in enumerate(union)}
      for r, i in enumerate(group):
        out[i] = scores[r, [col[c] for c in choices[i]]]
    return [out[int(i)] for i in items], kept, missing
  rows, matrix, _ = embed_views(cache, [View(paths[i]) for i in items])
  texts = [f"{questions[i]} {c}" for i in items for c in choices[i]]
  text_rows, text_matrix = cache.text_rows(texts)
  start = 0
  for r, i in enumerate(items):
    k = len(choices[i])
    out[int(i)] = text_matrix[text_rows[start:start + k]] @ matrix[rows[r]]
    start += k
  return [out[int(i)] for i in items], kept, missing


def vqa_accuracy(scores: np.ndarray, answers: Sequence[str],
                 human: Sequence[Sequence[str]]) -> tuple[float, float]:
  """(mean VQA accuracy of the argmax answers, that of a perfect chooser)."""
  norm_vocab = [vqa.normalize_answer(a) for a in answers]
  vocab = set(norm_vocab)
  picks = np.argmax(scores, axis=1) if len(scores) else np.zeros(0, np.int64)
  got, best = [], []
  for pick, raw in zip(picks.tolist(), human):
    norm = [vqa.normalize_answer(a) for a in raw]
    got.append(vqa.accuracy_of_normalized(norm_vocab[pick], norm))
    best.append(max((vqa.accuracy_of_normalized(a, norm) for a in set(norm) & vocab),
                     default=0.0))
  return float(np.mean(got)) if got else 0.0, float(np.mean(best)) if best else 0.0


def score_vqa(cache: common.EmbeddingCache, benchmark: str, data: str, root: str,
              paths: Sequence[str], questions: Sequence[str],
              human: Sequence[Sequence[str]], max_answers: int | None
              ) -> dict[str, float]:
  """Open-ended items against the benchmark's vocabulary: ``<benchmark>/accuracy``,
  ``answer_ceiling``, ``n_answers``, ``n_items`` and ``missing_images``."""
  answers = answer_vocabulary(human, max_answers)
  if not answers:
    raise ValueError(f"{benchmark}: {data} has no non-empty answer")
  scores, kept, missing = answer_scores(cache, paths, questions, answers)
  report_missing(benchmark, data, root, missing, int(kept.sum()))
  accuracy, ceiling = vqa_accuracy(scores, answers,
                                   [h for h, ok in zip(human, kept) if ok])
  return {f"{benchmark}/accuracy": accuracy, f"{benchmark}/answer_ceiling": ceiling,
          f"{benchmark}/n_answers": float(len(answers)),
          f"{benchmark}/n_items": float(kept.sum()),
          f"{benchmark}/missing_images": float(len(missing))}


def evaluate_okvqa(cache: common.EmbeddingCache, data: str, images: str | None = None,
                   *, subtype: str | None = None,
                   max_answers: int | None = DEFAULT_MAX_ANSWERS,
                   image_name=None, train: str | None = None,
                   head: dict | None = None) -> dict[str, float]:
  """OK-VQA (or any VQA-format pair of files) scored with VQA accuracy.

  Args:
    cache: Wraps the encoder.
    data: The questions file, or the folder holding it and its annotations
      (`vlkg.data.benchmarks.okvqa.find_okvqa_files`).
    images: The COCO root holding ``val2014/`` (or that folder itself); default the
      folder of ``data``.
    subtype: Picks the pair in a folder with several ("val2014").
    max_answers: Vocabulary size (module docstring); None or 0 for all answers.
    image_name: ``image_id -> file name`` under the image folder; default COCO 2014's
      ``COCO_{data_subtype}_{image_id:012d}.jpg``.
    train: The train split's questions file (or its folder, with its annotations):
      also fit an answer head on the frozen model (`vlkg.evaluators.vqa_head`),
      over the train answers' vocabulary, and report ``okvqa/accuracy_head``,
      ``okvqa/head_answer_ceiling``, ``okvqa/n_fit`` and ``okvqa/missing_fit_images``.
      Its images are under the same root, in its own ``data_subtype`` folder.
    head: `vlkg.evaluators.answer_head.HeadConfig` keys for ``train``.

  Returns:
    ``okvqa/accuracy``, ``answer_ceiling``, ``n_answers``, ``n_items``,
    ``missing_images``; with ``train`` the head's metrics too.
  """
  image_root = images or default_image_root(data)
  questions_path, items, root, paths = _okvqa_split(data, subtype, image_root,
                                                    image_name)
  logging.info("okvqa: %d questions from %s", len(items), questions_path)
  out = score_vqa(cache, "okvqa", questions_path, root, paths,
                  [it.question for it in items], [it.answers for it in items],
                  max_answers)
  if train:
    out.update(_okvqa_head(cache, train, image_root, image_name, paths, items,
                           max_answers, head or {}))
  return out


def _okvqa_split(data: str, subtype: str | None, root: str, image_name):
  """(questions file, items, image folder, each item's image path) of one split;
  COCO 2014's names in its ``data_subtype`` folder unless ``image_name`` is given."""
  questions_path, annotations_path = okvqa.find_okvqa_files(data, subtype)
  items, data_subtype = okvqa.read_okvqa(questions_path, annotations_path)
  if image_name is None:
    if data_subtype is None:
      raise ValueError(f"{questions_path} has no 'data_subtype' (e.g. 'val2014'), "
                       "which names its COCO images; pass image_name")
    root = subdir_or_root(root, data_subtype)
    image_name = lambda image_id: okvqa.coco_image_name(data_subtype, image_id)
  return (questions_path, items, root,
          [os.path.join(root, image_name(it.image_id)) for it in items])


def _okvqa_head(cache, train: str, images: str, image_name, paths, items,
                max_answers, head: dict) -> dict[str, float]:
  """The head's metrics of `evaluate_okvqa` (its ``train`` argument)."""
  t_questions, t_items, root, t_paths = _okvqa_split(train, None, images, image_name)
  t_kept, t_missing = existing(t_paths)
  report_missing("okvqa train", t_questions, root, t_missing, int(t_kept.sum()))
  fit = np.flatnonzero(t_kept).tolist()
  kept, _ = existing(paths)
  scored = np.flatnonzero(kept)
  return _head_metrics(
      cache, "okvqa/accuracy_head",
      ([t_paths[k] for k in fit], [t_items[k].question for k in fit],
       [t_items[k].answers for k in fit]),
      ([paths[i] for i in scored], [items[i].question for i in scored],
       [items[i].answers for i in scored]), t_missing, max_answers, head)


def _head_metrics(cache, name: str, fit: tuple, scored: tuple, missing: list[str],
                  max_answers, head: dict) -> dict[str, float]:
  """A head fitted on ``fit`` (paths, questions, answer lists of the found train
  images) over their answers' vocabulary, scored on ``scored`` (the same three):
  ``<name>``, ``<benchmark>/head_answer_ceiling``, ``n_fit`` and
  ``missing_fit_images``."""
  from vlkg.evaluators import vqa_head
  benchmark = name.split("/")[0]
  vocabulary = answer_vocabulary(fit[2], max_answers)
  logits = vqa_head.head_on_files(cache.encoder, fit, scored[:2], vocabulary,
                                  encode_batch=cache.batch_size, **head)
  accuracy, ceiling = vqa_accuracy(logits, vocabulary, scored[2])
  return {name: accuracy, f"{benchmark}/head_answer_ceiling": ceiling,
          f"{benchmark}/n_fit": float(len(fit[0])),
          f"{benchmark}/missing_fit_images": float(len(missing))}


def _aokvqa_file(data: str, split: str) -> str:
  return os.path.join(data, f"aokvqa_v1p0_{split}.json") if files.isdir(data) else data


def evaluate_aokvqa(cache: common.EmbeddingCache, data: str,
                    images: str | None = None, *, split: str = "val",
                    max_answers: int | None = DEFAULT_MAX_ANSWERS,
                    train: str | None = None, head: dict | None = None
                    ) -> dict[str, float]:
  """A-OKVQA multiple choice and direct answer; see the module docstring.

  Args:
    cache: Wraps the encoder.
    data: ``aokvqa_v1p0_{split}.json``, or the folder holding it.
    images: The COCO 2017 root holding ``{split}2017/`` (or that folder); default
      the folder of ``data``.
    split: The file picked in a folder, and the image folder ``{split}2017``.
    max_answers: The direct-answer vocabulary's size; None or 0 for all.
    train: ``aokvqa_v1p0_train.json`` or its folder: also fit an answer head on the
      frozen model on its direct answers (difficult ones left out; images in
      ``train2017/`` under the same root) and report ``aokvqa/direct_answer_head``,
      ``head_answer_ceiling``, ``n_fit`` and ``missing_fit_images``.
    head: `vlkg.evaluators.answer_head.HeadConfig` keys for ``train``.

  Returns:
    ``aokvqa/multiple_choice``, ``direct_answer``, ``direct_answer_official``,
    ``answer_ceiling``, ``n_answers``, ``n_items`` (questions scored in multiple
    choice), ``n_direct_answer_items`` and ``missing_images``; with ``train`` the
    head's metrics too.
  """
  path = _aokvqa_file(data, split)
  items = aokvqa.read_aokvqa(path)
  root = subdir_or_root(images or default_image_root(data), f"{split}2017")
  paths = [os.path.join(root, aokvqa.coco2017_image_name(it.image_id)) for it in items]
  questions = [it.question for it in items]
  mc, kept, missing = choice_scores(cache, paths, questions, [it.choices for it in items])
  report_missing("aokvqa", path, root, missing, int(kept.sum()))
  kept_items = [it for it, ok in zip(items, kept) if ok]
  right = [int(np.argmax(s)) == it.correct_choice_idx for s, it in zip(mc, kept_items)]
  da = [k for k, it in enumerate(items) if not it.difficult_direct_answer and kept[k]]
  human = [items[k].direct_answers for k in da]
  answers = answer_vocabulary([it.direct_answers for it in items], max_answers)
  out = {"aokvqa/multiple_choice": float(np.mean(right)) if right else 0.0}
  if da:
    scores, _, _ = answer_scores(cache, [paths[k] for k in da],
                                 [questions[k] for k in da], answers)
    out["aokvqa/direct_answer"], out["aokvqa/answer_ceiling"] = vqa_accuracy(
        scores, answers, human)
    picks = np.argmax(scores, axis=1).tolist()
    out["aokvqa/direct_answer_official"] = float(np.mean([
        aokvqa.official_direct_answer_accuracy(answers[p], h)
        for p, h in zip(picks, human)]))
  out.update({"aokvqa/n_answers": float(len(answers)),
              "aokvqa/n_items": float(len(right)),
              "aokvqa/n_direct_answer_items": float(len(da)),
              "aokvqa/missing_images": float(len(missing))})
  if train and da:
    t_path = _aokvqa_file(train, "train")
    t_items = aokvqa.read_aokvqa(t_path)
    t_root = subdir_or_root(images or default_image_root(data), "train2017")
    t_paths = [os.path.join(t_root, aokvqa.coco2017_image_name(it.image_id))
               for it in t_items]
    t_kept, t_missing = existing(t_paths)
    report_missing("aokvqa train", t_path, t_root, t_missing, int(t_kept.sum()))
    fit = [k for k in np.flatnonzero(t_kept).tolist()
           if not t_items[k].difficult_direct_answer]
    out.update(_head_metrics(
        cache, "aokvqa/direct_answer_head",
        ([t_paths[k] for k in fit], [t_items[k].question for k in fit],
         [t_items[k].direct_answers for k in fit]),
        ([paths[k] for k in da], [questions[k] for k in da], human), t_missing,
        max_answers, head or {}))
  return out
