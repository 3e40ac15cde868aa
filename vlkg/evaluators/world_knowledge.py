"""The world's knowledge-VQA and entity-linking suites, scored for the world evaluator.

The suites (`vlkg.data.world.knowledge_benchmarks`) are read with the real
benchmarks' readers (OK-VQA's and WikiDiverse's) and scored with the real benchmarks'
rules (`vlkg.evaluators.knowledge_vqa`, `vlkg.evaluators.entity_linking`): VQA
accuracy over the split's closed answer vocabulary, and linking accuracy over each
mention's ten candidates. A dataset prepared before the suites existed gets them
written on first use, from its own records.

Metric names: ``<prefix>/kvqa`` and ``<prefix>/entity_linking`` (accuracies in
[0, 1]), ``<prefix>/kvqa_n_items`` and ``<prefix>/entity_linking_n_items`` (questions
and mentions scored); a missing image file is added to the world evaluator's
``<prefix>/missing_images``.
"""

from __future__ import annotations

import os

from vlkg.data.benchmarks import okvqa, wikidiverse
from vlkg.data.world import knowledge_benchmarks as kb_lib
from vlkg.evaluators import common, entity_linking, knowledge_vqa

SPLITS = kb_lib.SPLITS


def read(dataset_dir: str, split: str) -> dict:
  """The suites of ``split`` (written first if the dataset lacks them): ``{
  "questions": [VqaItem], "mentions": [Mention], "kb": {node: description}}``."""
  suites = kb_lib.ensure(dataset_dir, split)
  if suites is not None:  # a read-only dataset: scored from memory
    return suites
  questions, _ = okvqa.read_okvqa(*kb_lib.okvqa_files(dataset_dir, split))
  _, mentions, kb = kb_lib.wikidiverse_files(dataset_dir, split)
  return {"questions": questions, "mentions": wikidiverse.read_mentions(mentions),
          "kb": wikidiverse.read_kb(kb)}


def _first_images(mentions, max_items: int | None):
  """The mentions of the first ``max_items`` captions (all when None)."""
  if not max_items:
    return list(mentions)
  keep = list(dict.fromkeys(m.img_url for m in mentions))[:max_items]
  keep = set(keep)
  return [m for m in mentions if m.img_url in keep]


def score(cache: common.EmbeddingCache, dataset_dir: str, split: str, prefix: str,
          *, max_items: int | None = None) -> tuple[dict[str, float], set[str]]:
  """Scores both suites of ``split``.

  Args:
    cache: Wraps the encoder; the split's images are usually in it already.
    dataset_dir: A prepared world dataset.
    split: One of `SPLITS`.
    prefix: The metric prefix of the split ("world" for test).
    max_items: Score only the first this many questions, and the mentions of the
      first this many captions (None or 0: all). The answer vocabulary is always the
      whole split's.

  Returns:
    ``(metrics, missing)``: the metrics of the module docstring, and the missing
    image files relative to ``<dataset>/benchmarks`` (as the other suites name them).
  """
  suites = read(dataset_dir, split)
  bench = os.path.join(dataset_dir, "benchmarks")
  questions = suites["questions"]
  answers = knowledge_vqa.answer_vocabulary([q.answers for q in questions])
  questions = questions[:max_items or None]
  paths = [kb_lib.image_file(dataset_dir, split, q.image_id) for q in questions]
  metrics: dict[str, float] = {}
  missing: set[str] = set()
  if questions:
    scores, kept, gone = knowledge_vqa.answer_scores(
        cache, paths, [q.question for q in questions], answers)
    missing.update(gone)
    if kept.any():
      metrics[f"{prefix}/kvqa"], _ = knowledge_vqa.vqa_accuracy(
          scores, answers, [q.answers for q, ok in zip(questions, kept) if ok])
    metrics[f"{prefix}/kvqa_n_items"] = float(kept.sum())
  mentions = _first_images(suites["mentions"], max_items)
  if mentions:
    linked, gone = entity_linking.score_mentions(
        cache, mentions, wikidiverse.KnowledgeBase(suites["kb"]), bench)
    missing.update(gone)
    if linked["n_items"]:
      metrics[f"{prefix}/entity_linking"] = linked["accuracy"]
    metrics[f"{prefix}/entity_linking_n_items"] = linked["n_items"]
  return metrics, {os.path.relpath(p, bench) for p in missing}
