"""Builds the prepared dataset of a real corpus: the world's record layout, from files.

Items from a reader (``vlkg.data.corpora.<name>``) become the records the world
writes (``vlkg.data.records``), so the input pipeline and every method read them
unchanged:

* the image, resized with CLIP's transform (bicubic shorter side, center crop; the
  same as ``encode_images`` applies at evaluation) to the model's size and stored as
  JPEG (``vlkg.data.corpora.images``: why JPEG, and the shortcuts that make it fast);
* ``captions_per_image`` (K) captions: the first K; on the training split an image
  with fewer repeats them in turn (training draws one of K uniformly), on the
  held-out split the missing slots are padding (all-pad ids), which retrieval skips;
* the features of the fields the method declares (``records.caption_features``),
  from each caption's graph: the ground truth where the corpus has one (Visual
  Genome), else ``vlkg.graphs.parse(text, backend="general")`` (with the corpus's
  vocabulary added to the lexicon when it has one); negatives and sub-captions are
  said by the template realiser;
* for the held-out split's captions, the features of the ``eval_texts`` fields in
  ``records.EVAL_TABLE``, for the method's evaluation encoder.

What is left out is counted and reported in ``manifest.json`` (``corpus``) and the
log, never dropped silently: images whose file is missing (with the first keys),
captions that are empty after whitespace normalisation, images left without a
caption, captions beyond K. A corrupt image is an error that names the file and the
item. Work is split by shard over worker processes, each item's randomness seeded by
(seed, split, index), so the result does not depend on the number of workers.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import functools
import importlib
import json
import logging
import math
import os
import time

import numpy as np

from vlkg import files
from vlkg.data import corpora, records
from vlkg.data.corpora import images

# Bump when a code change alters the written bytes (part of the fingerprint).
# 2: images as JPEG (``images.record_image``), were PNG.
CORPUS_VERSION = 2
SPLITS = ("train", "val")
TOKENIZER_SAMPLE = 200_000  # training captions a corpus tokenizer is trained on
IMAGES_PER_SHARD = 2_000
MIN_TRAIN_SHARDS = 16  # so that up to 16 hosts each read their own shards
MISSING_LISTED = 100  # keys of missing images kept in the manifest
_EMPTY_GRAPH = json.dumps({"objects": [], "attributes": [], "relations": []}).encode()


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a shard worker needs besides its items; picklable."""
  name: str
  image_size: int
  captions_per_image: int
  text_len: int
  seed: int
  # The method's fields (``vlkg.methods.fields``), built once here: a worker that
  # built them itself would import the method, and JAX with it (a second of start-up).
  fields: tuple
  vocabulary: str  # the corpus's vocabulary as JSON; "" if it has none


def num_shards(split: str, n: int) -> int:
  """About IMAGES_PER_SHARD images a shard; at least MIN_TRAIN_SHARDS for training
  (the input pipeline gives each host whole shards), never more than the images."""
  if n == 0:
    return 1
  least = MIN_TRAIN_SHARDS if split == "train" else 1
  return max(1, min(n, max(least, math.ceil(n / IMAGES_PER_SHARD))))


# ------------------------------------------------------------------ per worker


@functools.lru_cache(maxsize=2)
def _parser(vocabulary_json: str):
  from vlkg.graphs import general_parser
  if not vocabulary_json:
    return general_parser.default_parser()
  v = json.loads(vocabulary_json)
  return general_parser.GeneralParser(objects=v.get("objects", ()),
                                      attributes=v.get("attributes", ()),
                                      relations=v.get("relations", ()))


@functools.lru_cache(maxsize=2)
def _graph_text(vocabulary_json: str):
  """How real captions say a graph (``vlkg.graphs.fields.GraphText``): the template
  realiser over the parser's lexicon."""
  from vlkg.graphs import decompose
  from vlkg.graphs import fields as fields_lib
  from vlkg.graphs import negatives as neg_lib
  parser = _parser(vocabulary_json)
  vocab = neg_lib.Vocabulary.from_lists(parser.objects, parser.attributes, parser.relations)
  return fields_lib.GraphText(vocab, decompose.template_realiser(vocab))


def _graph(text: str, truth, vocabulary_json: str, stats):
  """A caption's graph: the corpus's ground truth, else parsed (counted)."""
  if truth is not None:
    stats["graphs_ground_truth"] += 1
    return truth
  stats["graphs_parsed"] += 1
  return _parser(vocabulary_json).parse(text)


def _captions(texts, truths, settings: Settings, tokenizer, stats) -> list:
  from vlkg.graphs import fields as fields_lib
  text_of = _graph_text(settings.vocabulary)
  stats = collections.Counter() if stats is None else stats
  return [fields_lib.Caption(t, functools.partial(_graph, t, truth, settings.vocabulary,
                                                  stats), tokenizer, text_of, stats)
          for t, truth in zip(texts, truths)]


def load_image(item: corpora.Item, size: int) -> np.ndarray | None:
  """The pixels the item's record holds (``images.record_image``, decoded); None
  if its file does not exist."""
  data = images.record_image(item, size)
  return None if data is None else images.decode(data)


def _pad_rows(array: np.ndarray, k: int) -> np.ndarray:
  array = np.asarray(array)
  pad = np.zeros((k - array.shape[0],) + array.shape[1:], array.dtype)
  return np.concatenate([array, pad])


def item_fields(item: corpora.Item, index: int, split: str, image: bytes,
                settings: Settings, layout: records.Layout, tokenizer, stats,
                fields=(), eval_rows: dict | None = None) -> dict | None:
  """The record of one item (``image``: its encoded bytes, ``images.record_image``),
  or None if it has no caption left (counted). On the held-out split, the
  captions' ``eval_texts`` features go into ``eval_rows``."""
  texts, truths = [], []
  for k, caption in enumerate(item.captions):
    text = corpora.norm_text(caption)
    if not text:
      stats["empty_captions"] += 1
      continue
    texts.append(text)
    truths.append(item.graphs[k] if item.graphs is not None else None)
  if not texts:
    stats["images_without_captions"] += 1
    return None
  k = layout.captions_per_image
  stats["captions_dropped"] += max(0, len(texts) - k)
  texts, truths = texts[:k], truths[:k]
  real = len(texts)
  if split == "train" and real < k:  # repeat: training draws a slot uniformly
    texts = [texts[j % real] for j in range(k)]
    truths = [truths[j % real] for j in range(k)]
    real = k
  stats["captions"] += real
  lengths = tokenizer.unpadded_lengths(texts) if hasattr(tokenizer, "unpadded_lengths") \
      else [0] * real
  stats["truncated_captions"] += sum(n > layout.text_len for n in lengths)
  stats["caption_tokens"] += sum(lengths)
  stats["caption_words"] += sum(len(t.split()) for t in texts)
  example = {
      "image": image, "text_ids": _pad_rows(tokenizer.encode(texts), k),
      "captions": [t.encode() for t in texts] + [b""] * (k - real),
      "index": index, "num_objects": 0,
      "object_attributes": np.zeros((0,), np.int64),
      "boxes": np.zeros((0,), np.float32),
      "scene_graph": (json.dumps(item.image_graph.to_json()).encode()
                      if item.image_graph is not None else _EMPTY_GRAPH)}
  if fields:
    captions = _captions(texts, truths, settings, tokenizer, stats)
    example.update(records.caption_features(
        fields, captions, (settings.seed, SPLITS.index(split), index), k))
    if split != "train" and eval_rows is not None:
      truth_of = dict(zip(texts, truths))
      records.eval_features(fields, texts, lambda t: _captions(
          [t], [truth_of[t]], settings, tokenizer, None)[0], settings.seed, into=eval_rows)
  return example


def _write_shard(task) -> dict:
  """Worker: decodes, resizes, captions and tokenises one shard's items."""
  out_dir, split, shard, count, items, start, settings, layout, tokenizer_desc = task
  from vlkg.data import tokenizer as tok_lib
  tokenizer = tok_lib.from_description(tokenizer_desc, base_dir=out_dir)
  fields = settings.fields
  importlib.import_module("tensorflow")  # records.write_shard's, before the clock starts
  start_time, start_wall, start_cpu = time.perf_counter(), time.time(), time.process_time()
  stats = collections.Counter()
  missing, eval_rows = [], {}

  def examples():
    for j, item in enumerate(items):
      image = images.record_image(item, settings.image_size)
      if image is None:
        stats["missing_images"] += 1
        missing.append(item.key)
        continue
      example = item_fields(item, start + j, split, image, settings, layout, tokenizer,
                            stats, fields, eval_rows)
      if example is not None:
        yield example

  file = records.write_shard(out_dir, split, shard, count, examples())
  stats["images"] += file["num_records"]
  return {"split": split, "file": file, "stats": dict(stats), "missing": missing,
          "eval_rows": eval_rows, "seconds": time.perf_counter() - start_time,
          "span": (start_wall, time.time()), "cpu_seconds": time.process_time() - start_cpu}


# ------------------------------------------------------------------ tokenizer


def train_tokenizer(out_dir: str, train_items, vocab_size: int, seed: int,
                    text_len: int, vocabulary_json: str) -> dict:
  """A sentencepiece BPE model (as the world's) on the training captions and the
  lexicon's words: replacement negatives draw words that may not occur in any
  caption, and they should get pieces of their own rather than ``unk``."""
  from vlkg.data import tokenizer as tok_lib
  texts = []
  for item in train_items:
    texts += [t for t in map(corpora.norm_text, item.captions) if t]
    if len(texts) >= TOKENIZER_SAMPLE:
      break
  if not texts:
    raise ValueError("the training split has no captions to train a tokenizer on")
  parser = _parser(vocabulary_json)
  lexicon = [*parser.objects, *parser.attributes, *parser.relations]
  return tok_lib.train_dataset_tokenizer(out_dir, texts[:TOKENIZER_SAMPLE] + lexicon,
                                         vocab_size, seed=seed, text_len=text_len,
                                         model_type="bpe")


def _copy_tokenizer(out_dir: str, desc: dict, base_dir: str, text_len: int) -> dict:
  """The given tokenizer with its files copied into the dataset, so that the dataset
  (and the runs that copy it) do not depend on where it came from."""
  desc = dict(desc)
  for key, value in list(desc.items()):
    if key.endswith("_path") and isinstance(value, str) and value:
      src = value if os.path.isabs(value) else os.path.join(base_dir, value)
      if not files.isfile(src):
        raise FileNotFoundError(f"tokenizer file {src} (description key {key!r}) not found")
      files.copyfile(src, os.path.join(out_dir, os.path.basename(src)))
      desc[key] = os.path.basename(src)
  if "max_len" in desc:
    desc["max_len"] = text_len
  return desc


def progress_line(name: str, done: int, total: int, seconds: float) -> str:
  """``prepare coco: 4000/118287 images (3%), 52.1 images/s, ETA 0:36:35``."""
  rate = done / max(seconds, 1e-9)
  eta = (total - done) / rate if rate > 0 else float("inf")
  eta_text = str(datetime.timedelta(seconds=round(eta))) if math.isfinite(eta) else "?"
  return (f"prepare {name}: {done}/{total} images ({100 * done // max(total, 1)}%), "
          f"{rate:.1f} images/s, ETA {eta_text}")


def _write_shards(tasks: list, workers: int, name: str) -> list:
  """``records.map_shards(_write_shard, tasks, workers)`` that logs a progress line
  with an ETA as each shard finishes: a large corpus takes hours to prepare."""
  total = sum(len(task[4]) for task in tasks)
  workers = records.worker_count(workers, len(tasks))
  start, done, results = time.time(), 0, []
  with contextlib.ExitStack() as stack:
    if workers == 1:
      finished = map(_write_shard, tasks)
    else:
      import multiprocessing
      pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
      finished = pool.imap(_write_shard, tasks, chunksize=1)  # in order, as they end
    for task, result in zip(tasks, finished):
      results.append(result)
      done += len(task[4])
      logging.info(progress_line(name, done, total, time.time() - start))
  return results


# ---------------------------------------------------------------------- build


def build(out_dir: str, config, tokenizer_source) -> dict:
  """Writes the complete dataset of ``config.input``, with the fields of
  ``config.method`` (``vlkg.methods.fields``), into ``out_dir`` (new).

  ``tokenizer_source`` is (description, base_dir) of a given tokenizer, or
  (None, "") to train a sentencepiece model on the training captions.
  """
  from vlkg import methods
  from vlkg.data import tokenizer as tok_lib
  start = time.time()
  name = config.input.data
  options = corpora.Options.from_config(config)
  corpus = corpora.load(name).read(options)
  splits = {}
  for split in SPLITS:
    items = list(corpus.splits[split])
    if config.input.max_items:
      items = items[:config.input.max_items]
    if not items:
      raise corpora.CorpusError(options.path or name, f"split {split!r} has no images")
    splits[split] = items
  logging.info("prepare %s: read %s (%.1fs)", name,
               {s: len(v) for s, v in splits.items()}, time.time() - start)
  os.makedirs(out_dir)

  vocabulary = corpus.vocabulary
  vocabulary_json = json.dumps(vocabulary, sort_keys=True) if vocabulary else ""
  if vocabulary:
    with open(os.path.join(out_dir, "vocabulary.json"), "w") as f:
      json.dump(vocabulary, f, indent=0)
  given, base_dir = tokenizer_source
  if given is None:
    desc = train_tokenizer(out_dir, splits["train"], config.input.vocab_size, config.seed,
                           config.input.text_len, vocabulary_json)
  else:
    desc = _copy_tokenizer(out_dir, given, base_dir, config.input.text_len)
  tokenizer = tok_lib.from_description(desc, base_dir=out_dir)
  # The trainer sizes the token embedding from the manifest's vocab_size.
  desc.setdefault("vocab_size", tokenizer.vocab_size)
  if tokenizer.max_len != config.input.text_len:
    raise ValueError(f"the tokenizer encodes {tokenizer.max_len} tokens, but "
                     f"config.input.text_len={config.input.text_len}")
  settings = Settings(name=name, image_size=config.model.image_size,
                      captions_per_image=config.input.captions_per_image,
                      text_len=config.input.text_len, seed=config.seed,
                      fields=tuple(methods.fields(config)), vocabulary=vocabulary_json)
  layout = records.layout_for(settings.image_size, settings.captions_per_image,
                              settings.text_len, 0, settings.fields, images.FORMAT)
  tasks = []
  for split, items in splits.items():
    count = num_shards(split, len(items))
    bounds = np.linspace(0, len(items), count + 1).astype(int)
    for shard in range(count):
      tasks.append((out_dir, split, shard, count, items[bounds[shard]:bounds[shard + 1]],
                    int(bounds[shard]), settings, layout, desc))
  results = _write_shards(tasks, config.world.workers, name)

  manifest_splits, stats = records.merge_shards(results, splits)
  missing, eval_rows = {s: [] for s in splits}, {}
  for r in results:
    missing[r["split"]] += r["missing"]
    for text, row in r["eval_rows"].items():
      eval_rows.setdefault(text, row)
  for split in splits:
    if manifest_splits[split]["num_examples"] == 0:
      raise corpora.CorpusError(options.path or name, f"split {split!r}: no image could "
                                f"be written ({dict(stats[split])})")
  report = {s: {"images": stats[s]["images"], "missing_images": len(missing[s]),
                "missing_first": missing[s][:MISSING_LISTED],
                "empty_captions": stats[s]["empty_captions"],
                "images_without_captions": stats[s]["images_without_captions"],
                "captions_dropped": stats[s]["captions_dropped"]} for s in splits}
  for split, r in report.items():
    level = logging.WARNING if r["missing_images"] or r["images_without_captions"] \
        else logging.INFO
    logging.log(level, "prepare %s/%s: %d images written, %d missing (first: %s), %d "
                "empty captions skipped, %d images without a caption, %d captions over "
                "input.captions_per_image", name, split, r["images"], r["missing_images"],
                r["missing_first"][:5], r["empty_captions"], r["images_without_captions"],
                r["captions_dropped"])
  info = {"corpus": name, "options": dataclasses.asdict(options), "report": report,
          "statistics": {s: dict(c) for s, c in stats.items()},
          "vocab_size": tokenizer.vocab_size,
          "build_seconds": round(time.time() - start, 1),
          # Once the workers have started (their imports left out): the seconds of
          # their shards, summed, and from the first shard's start to the last's end.
          "worker_seconds": round(sum(r["seconds"] for r in results), 3),
          "write_seconds": round(max(r["span"][1] for r in results)
                                 - min(r["span"][0] for r in results), 3),
          "worker_cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 3)}
  with open(os.path.join(out_dir, "corpus.json"), "w") as f:
    json.dump(info, f, indent=1, sort_keys=True)
  if eval_rows:
    records.write_eval_table(out_dir, eval_rows, tokenizer)
  records.write_manifest(out_dir, {
      "name": name, "splits": manifest_splits, "layout": layout.to_json(),
      "tokenizer": desc, "corpus": report})
  return info
