"""Scores a model on the real benchmarks, read in their official on-disk formats.

`evaluate(encoder, benchmark=..., data=..., images=...)` is what ``python -m
vlkg.tools.evaluate`` runs for every benchmark but ``world``; a training run can also
list it among its evals (see `evaluate`). Each benchmark is scored with the rule of its
official code, through the readers and metrics of `vlkg.data.benchmarks`:

* ``aro_relation`` / ``aro_attribution``: ARO VG-Relation / VG-Attribution
  (Yuksekgonul et al., ICLR 2023, github.com/mertyg/vision-language-models-are-bows).
  Crop the image to the item's bbox, score ``[false, true]`` (a tie is wrong), and
  take the macro accuracy over relations (the packaged dropped-relations list left
  out) or over attribute pairs with >= 25 items.
* ``coco_order`` / ``flickr_order``: ARO COCO-Order / Flickr30k-Order on a Karpathy
  test file. Every caption of every image is one item with five options, the
  cleaned original first; precision@1, a tie with the original is correct. The
  noun/adjective tagger is `lexicon_tagger`, not the official spaCy tagger.
* ``sugarcrepe``: SugarCrepe (Hsieh et al., NeurIPS 2023 D&B,
  github.com/RAIVNLab/sugar-crepe), accuracy per category file found, strict ``>``.
* ``winoground``: Winoground (Thrush et al., CVPR 2022) text / image / group scores,
  strict ``>``.
* ``retrieval``: image <-> text retrieval on a Karpathy test file with open_clip's
  metrics, every caption of every image (`vlkg.evaluators.retrieval.evaluate_file`,
  the one retrieval evaluator).
* ``okvqa`` / ``aokvqa``: knowledge VQA, OK-VQA (Marino et al., CVPR 2019) and
  A-OKVQA (Schwenk et al., ECCV 2022), answered by classification over the answer
  vocabulary and scored with the official VQA accuracy (Antol et al., ICCV 2015);
  A-OKVQA's multiple choice through ``correct_choice_idx``
  (`vlkg.evaluators.knowledge_vqa`).
* ``wikidiverse``: multimodal entity linking, WikiDiverse (Wang et al., ACL 2022),
  accuracy over its candidate lists, NIL mentions left out
  (`vlkg.evaluators.entity_linking`).

Scores are cosine similarities of the encoder's L2-normalised embeddings, as in the
CLIP evaluations of all these benchmarks; the knowledge benchmarks use the encoder's
own ``answer_scores`` / ``link_scores`` where it has them.

Images. ``images`` is the image root, by default the folder of ``data`` (``data``
itself when it is a folder); paths are joined as the official loaders join them
(ARO: ``<root>/images/<image_path>``, Winoground: ``<root>/images/<name>.png``, with
``<root>`` itself used when it has no ``images`` folder; Order and retrieval:
``<root>/<image>``; SugarCrepe: ``<root>/<filename>``, the COCO val2017 folder;
OK-VQA: ``<root>/<data_subtype>/COCO_<data_subtype>_<image_id:012d>.jpg``; A-OKVQA:
``<root>/<split>2017/<image_id:012d>.jpg``; WikiDiverse: ``<root>/<md5 name>``, the
release's rule for its Wikinews images).
Files of any size and mode are read with Pillow and converted to RGB uint8; the
encoder applies its own resize and normalisation. Images are streamed from disk in
chunks of ``batch_size`` and only their embeddings are kept, so memory does not grow
with the number of images. A missing file is counted: its items are left out and
``<benchmark>/missing_images`` says how many distinct files were missing (the
shortfall is visible in ``<benchmark>/n_items``); if no image at all is found the
evaluation stops, since the image root is then wrong. A file that exists but cannot
be decoded is an error that names it.

Metric names (DESIGN contract): ``aro_relation/macro_accuracy``,
``aro_attribution/macro_accuracy``, ``coco_order/precision@1``,
``flickr_order/precision@1``, ``sugarcrepe/<category>``, ``winoground/text``,
``winoground/image``, ``winoground/group``, ``retrieval/<name>/image_to_text_R@1``
etc. (``<name>`` the file's stem), ``okvqa/accuracy``, ``aokvqa/multiple_choice``,
``aokvqa/direct_answer`` and ``wikidiverse/accuracy``; each benchmark also reports ``<benchmark>/n_items``
(items scored; images for retrieval) and ``<benchmark>/missing_images``. ARO adds
``n_groups`` and ``n_items_in_macro`` (the relations or attribute pairs averaged and
their items), retrieval adds ``n_texts``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from vlkg import files
from vlkg.data.benchmarks import aro, karpathy, order, sugarcrepe, winoground
from vlkg.evaluators import (binary_choice, common, entity_linking, knowledge_vqa,
                             retrieval)
from vlkg.evaluators.benchmark_images import (View, default_image_root, embed_views,
                                              report_missing, subdir_or_root)
from vlkg.evaluators.encoder import Encoder

BENCHMARKS: tuple[str, ...] = ("aro_relation", "aro_attribution", "coco_order",
                               "flickr_order", "sugarcrepe", "winoground", "retrieval",
                               "okvqa", "aokvqa", "wikidiverse")
ARO_IMAGE_DIR = "images"
# Penn tags cardinal numbers CD, not JJ, so the lexicon's count words are not
# shuffled as adjectives.
_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty "
    "hundred thousand dozen".split())


def _option_scores(cache: common.EmbeddingCache, image_rows: np.ndarray,
                   image_matrix: np.ndarray,
                   options: Sequence[Sequence[str]]) -> np.ndarray:
  """``[n, K]`` scores of each item's image with its K caption options."""
  n = len(options)
  k = len(options[0]) if n else 0
  text_rows, text_matrix = cache.text_rows([t for o in options for t in o])
  return binary_choice.scores_from_rows(image_matrix, image_rows, text_matrix,
                                        text_rows.reshape(n, k))


def _choice(cache: common.EmbeddingCache, benchmark: str, data: str, root: str,
            views: Sequence[View], options: Sequence[Sequence[str]]
            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Scores of the items whose image exists, their mask, and the missing files."""
  rows, matrix, missing = embed_views(cache, views)
  kept = rows >= 0
  report_missing(benchmark, data, root, missing, int(kept.sum()))
  kept_options = [o for o, ok in zip(options, kept.tolist()) if ok]
  return _option_scores(cache, rows[kept], matrix, kept_options), kept, missing


def _counts(benchmark: str, n_items: int, missing: list[str]) -> dict[str, float]:
  return {f"{benchmark}/n_items": float(n_items),
          f"{benchmark}/missing_images": float(len(missing))}


# ----------------------------------------------------------------------------- ARO


def evaluate_aro(cache: common.EmbeddingCache, data: str, kind: aro.AroKind,
                 images: str | None = None, *,
                 dropped_relations: str | Iterable[str] | None = None,
                 min_count: int = aro.VG_ATTRIBUTION_MIN_COUNT) -> dict[str, float]:
  """ARO VG-Relation (``kind="relation"``) or VG-Attribution macro accuracy.

  Args:
    cache: Wraps the encoder.
    data: ``visual_genome_relation.json`` / ``visual_genome_attribution.json``.
    kind: ``"relation"`` or ``"attribution"``.
    images: The ARO root (holding ``images/``) or the image folder itself; default
      the folder of ``data``.
    dropped_relations: Relations left out of the VG-Relation macro accuracy: None
      for the packaged official list, a path to a file in its layout
      (`aro.load_dropped_relations`), or the names themselves (``()`` keeps all).
    min_count: VG-Attribution keeps attribute pairs with at least this many scored
      items (official: 25).

  Returns:
    ``aro_<kind>/macro_accuracy``, ``n_items``, ``missing_images``, ``n_groups`` and
    ``n_items_in_macro``.
  """
  benchmark = f"aro_{kind}"
  items = aro.read_aro(data, kind)
  root = subdir_or_root(images or default_image_root(data), ARO_IMAGE_DIR)
  views = [View(os.path.join(root, it.image_path), it.bbox) for it in items]
  # Official option order: [false, true], so that argmax's first-maximum rule makes
  # a tie wrong.
  options = [(it.false_caption, it.true_caption) for it in items]
  scores, kept, missing = _choice(cache, benchmark, data, root, views, options)
  correct = binary_choice.aro_correct(scores)
  kept_items = [it for it, ok in zip(items, kept.tolist()) if ok]
  if kind == "relation":
    if isinstance(dropped_relations, (str, os.PathLike)):
      dropped_relations = aro.load_dropped_relations(dropped_relations)
    macro, groups, n_macro = aro.vg_relation_macro_accuracy(
        kept_items, correct, dropped_relations)
  else:
    macro, groups, n_macro = aro.vg_attribution_macro_accuracy(
        kept_items, correct, min_count)
  return {f"{benchmark}/macro_accuracy": macro,
          **_counts(benchmark, len(kept_items), missing),
          f"{benchmark}/n_groups": float(len(groups)),
          f"{benchmark}/n_items_in_macro": float(n_macro)}


# --------------------------------------------------------------------------- Order


@functools.lru_cache(maxsize=1)
def _default_lexicon_tagger() -> Callable[[str], str | bool]:
  return lexicon_tagger()


def lexicon_tagger(parser=None) -> Callable[[str], str | bool]:
  """A noun/adjective tagger for the Order perturbations from the parser's lexicon.

  The official code tags with spaCy's ``en_core_web_sm`` (nouns: NN, NNS, NNP, NNPS;
  adjectives: JJ, JJR, JJS), which vlkg cannot load offline. This tagger looks each
  token up, lowercased, in `vlkg.graphs.general_parser`'s lexicons instead:

  * ``"noun"``: a one-word object noun or one of its plurals, or the last word of a
    multi-word object ("light" of "traffic light");
  * ``"adj"``: a one-word attribute, except count words ("two"), which Penn tags as
    cardinal numbers;
  * False for every other token.

  It differs from spaCy in two ways: it has no context, so a word that is both
  ("orange", "glass", "square") is always a noun, and a word outside the lexicons
  (a rare noun, an adjective the lexicon lacks) is never shuffled as a noun or
  adjective but goes with the other words in the second perturbation.

  Args:
    parser: A `vlkg.graphs.general_parser.GeneralParser` (e.g. with extra
      vocabulary); default the packaged one.

  Returns:
    A tagger for `vlkg.data.benchmarks.order.perturbations`.
  """
  from vlkg.graphs import general_parser
  if parser is None:
    parser = general_parser.default_parser()
  nouns: set[str] = set()
  for phrase in parser.objects:
    head = phrase.split()[-1]
    nouns.add(head)
    nouns.update(general_parser.plural_forms(head))
  adjectives = {a for a in parser.attributes
                if " " not in a and a not in _NUMBER_WORDS} - nouns
  nouns_f, adjectives_f = frozenset(nouns), frozenset(adjectives)

  def tag(token: str) -> str | bool:
    word = token.lower()
    return "noun" if word in nouns_f else "adj" if word in adjectives_f else False

  return tag


def evaluate_order(cache: common.EmbeddingCache, data: str, benchmark: str,
                   images: str | None = None, *,
                   tagger: order.Tagger | None = None, seed: int = 0,
                   split: str = "test") -> dict[str, float]:
  """ARO COCO-Order or Flickr30k-Order precision@1.

  Args:
    cache: Wraps the encoder.
    data: A Karpathy file in either layout (`vlkg.data.benchmarks.karpathy`):
      ``coco_karpathy_test.json`` / ``flickr30k_test.json`` as ARO reads them, or
      ``dataset_coco.json`` / ``dataset_flickr30k.json``.
    benchmark: ``"coco_order"`` or ``"flickr_order"``, the metric prefix.
    images: The image root the file's paths are relative to; default its folder.
    tagger: Noun/adjective tagger; default `lexicon_tagger`.
    seed: Seeds the perturbations. The official code draws from numpy's unseeded
      global generator, so its options differ from run to run; a fixed seed makes
      ours repeatable. Options are drawn for every item before missing images are
      left out, so the options of an item do not depend on which files exist.
    split: The split of an original-layout file.

  Returns:
    ``<benchmark>/precision@1``, ``n_items`` (captions scored) and
    ``missing_images``.
  """
  entries = karpathy.read_karpathy(data, split)
  root = images or default_image_root(data)
  tagger = tagger or _default_lexicon_tagger()
  rng = np.random.default_rng(seed)
  views, options = [], []
  for entry in entries:
    view = View(os.path.join(root, entry.image))
    for caption in entry.captions:
      views.append(view)
      options.append(order.order_options(caption, tagger, rng))
  scores, _, missing = _choice(cache, benchmark, data, root, views, options)
  return {f"{benchmark}/precision@1": order.precision_at_1(scores),
          **_counts(benchmark, len(scores), missing)}


# ----------------------------------------------------------------------- SugarCrepe


def evaluate_sugarcrepe(cache: common.EmbeddingCache, data: str,
                        images: str | None = None) -> dict[str, float]:
  """SugarCrepe accuracy per category.

  Args:
    cache: Wraps the encoder.
    data: The official ``data/`` folder (whichever of the seven category files it
      holds are scored) or one category file (named by its stem).
    images: The COCO val2017 image folder; default the folder of ``data``.

  Returns:
    ``sugarcrepe/<category>`` for each category with a scored item, ``n_items``
    (over all categories) and ``missing_images`` (distinct files).
  """
  benchmark = "sugarcrepe"
  if files.isdir(data):
    per_category = sugarcrepe.read_sugarcrepe_dir(data)
  else:
    stem = os.path.splitext(os.path.basename(data))[0]
    per_category = {stem: sugarcrepe.read_sugarcrepe_file(data)}
  root = images or default_image_root(data)
  views, options, category_of = [], [], []
  for category, items in per_category.items():
    for it in items:
      views.append(View(os.path.join(root, it.filename)))
      options.append((it.caption, it.negative_caption))
      category_of.append(category)
  scores, kept, missing = _choice(cache, benchmark, data, root, views, options)
  correct = binary_choice.sugarcrepe_correct(scores)
  categories = np.array(category_of, dtype=object)[kept]
  metrics = {}
  for category in per_category:
    mask = categories == category
    if not mask.any():
      logging.warning("%s/%s: no item has its image; no accuracy reported",
                      benchmark, category)
      continue
    metrics[f"{benchmark}/{category}"] = float(np.mean(correct[mask]))
  metrics.update(_counts(benchmark, len(scores), missing))
  return metrics


# ----------------------------------------------------------------------- Winoground


def evaluate_winoground(cache: common.EmbeddingCache, data: str,
                        images: str | None = None) -> dict[str, float]:
  """Winoground text, image and group scores.

  Args:
    cache: Wraps the encoder.
    data: ``examples.jsonl`` (or a JSON list of the same objects).
    images: The folder holding ``images/`` (or the image folder itself); default the
      folder of ``data``.

  Returns:
    ``winoground/text``, ``image``, ``group``, ``n_items`` (items with both images)
    and ``missing_images``.
  """
  benchmark = "winoground"
  items = winoground.read_winoground(data)
  root = images or default_image_root(data)
  views = ([View(winoground.image_path(root, it.image_0)) for it in items]
           + [View(winoground.image_path(root, it.image_1)) for it in items])
  rows, matrix, missing = embed_views(cache, views)
  n = len(items)
  kept = (rows[:n] >= 0) & (rows[n:] >= 0)
  report_missing(benchmark, data, subdir_or_root(root, winoground.IMAGE_DIR),
                  missing, int(kept.sum()))
  captions = [(it.caption_0, it.caption_1)
              for it, ok in zip(items, kept.tolist()) if ok]
  # [m, caption, image]: column i holds both captions' scores with image i.
  scores = np.stack([_option_scores(cache, rows[:n][kept], matrix, captions),
                     _option_scores(cache, rows[n:][kept], matrix, captions)], axis=-1)
  return {f"{benchmark}/{name}": value
          for name, value in winoground.winoground_scores(scores).items()
          } | _counts(benchmark, len(captions), missing)


# --------------------------------------------------------------------------- entry


def evaluate(encoder: Encoder, dataset_dir: str | None = None, *, benchmark: str,
             data: str, images: str | None = None, batch_size: int = 256,
             **options) -> dict[str, float]:
  """Scores ``encoder`` on one real benchmark; see the module docstring.

  Args:
    encoder: The model (e.g. from `vlkg.api.load`).
    dataset_dir: Ignored. The trainer calls every evaluator as
      ``evaluate(encoder, dataset_dir, **spec)``, so a run can score a real
      benchmark while it trains with ``config.evals.<name> = {"type":
      "real_benchmarks", "benchmark": ..., "data": ...}``.
    benchmark: One of `BENCHMARKS`.
    data: The benchmark's annotation file (a folder for SugarCrepe; a file or its
      folder for OK-VQA, A-OKVQA and WikiDiverse).
    images: The image root; default the folder of ``data``.
    batch_size: Images read and encoded per chunk, and the encoder's largest batch.
    **options: Passed to the benchmark's function (e.g. ``dropped_relations`` for
      ``aro_relation``, ``seed`` for the Order benchmarks, ``name`` for retrieval).

  Returns:
    Metric name -> value.

  Raises:
    ValueError: For an unknown benchmark.
    FileNotFoundError: If ``data`` does not exist, or none of its images does.
    vlkg.data.benchmarks.errors.BenchmarkFormatError: For a malformed file.
    vlkg.evaluators.binary_choice.ImageLoadError: For an unreadable image.
  """
  del dataset_dir  # the benchmark's own files are named by ``data``
  if benchmark not in BENCHMARKS:
    raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
  data = os.fspath(data)
  if not files.exists(data):
    raise FileNotFoundError(f"{benchmark}: data not found: {data}")
  cache = common.EmbeddingCache(encoder, batch_size)
  if benchmark.startswith("aro_"):
    kind = benchmark.removeprefix("aro_")
    return evaluate_aro(cache, data, kind, images, **options)  # type: ignore[arg-type]
  if benchmark.endswith("_order"):
    return evaluate_order(cache, data, benchmark, images, **options)
  if benchmark == "sugarcrepe":
    return evaluate_sugarcrepe(cache, data, images, **options)
  if benchmark == "winoground":
    return evaluate_winoground(cache, data, images, **options)
  if benchmark == "okvqa":
    return knowledge_vqa.evaluate_okvqa(cache, data, images, **options)
  if benchmark == "aokvqa":
    return knowledge_vqa.evaluate_aokvqa(cache, data, images, **options)
  if benchmark == "wikidiverse":
    return entity_linking.evaluate_wikidiverse(cache, data, images, **options)
  return retrieval.evaluate_file(cache, data, images, **options)
