"""Builds the prepared dataset of a real corpus: the world's record layout, from files.

Items from a reader (``vlkg.data.corpora.<name>``) become the records the world
writes (``vlkg.data.records``), so the input pipeline and every method read them
unchanged:

* the image, decoded, resized with CLIP's transform (bicubic shorter side, center
  crop; ``vlkg.api._resize``, the same as ``encode_images`` applies at evaluation) to
  the model's size and stored as PNG;
* ``captions_per_image`` (K) captions: the first K; on the training split an image
  with fewer repeats them in turn (training draws one of K uniformly), on the
  held-out split the missing slots are padding (all-pad ids), which retrieval skips;
* the scene-graph fields the method reads (``records.graph_fields``,
  ``records.mosaic_fields``, phrase spans) from each caption's graph: the ground
  truth where the corpus has one (Visual Genome), else
  ``vlkg.graphs.parse(text, backend="general")`` (with the corpus's vocabulary added
  to the lexicon when it has one); negatives and sub-captions are said by the
  template realiser.

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
import io
import json
import logging
import math
import os
import shutil
import time

import numpy as np

from vlkg.data import corpora, records

# Bump when a code change alters the written bytes (part of the fingerprint).
CORPUS_VERSION = 1
SPLITS = ("train", "val")
TOKENIZER_SAMPLE = 200_000  # training captions a corpus tokenizer is trained on
IMAGES_PER_SHARD = 2_000
MIN_TRAIN_SHARDS = 16  # so that up to 16 hosts each read their own shards
MISSING_LISTED = 100  # keys of missing images kept in the manifest
_NEGATIVE_STREAM, _MOSAIC_STREAM = 2, 3
_EMPTY_GRAPH = json.dumps({"objects": [], "attributes": [], "relations": []}).encode()


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a shard worker needs besides its items; picklable."""
  name: str
  image_size: int
  captions_per_image: int
  text_len: int
  seed: int
  graph: dict
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
def _graph_text(vocabulary_json: str) -> records.GraphText:
  from vlkg.graphs import decompose
  from vlkg.graphs import negatives as neg_lib
  parser = _parser(vocabulary_json)
  vocab = neg_lib.Vocabulary.from_lists(parser.objects, parser.attributes, parser.relations)
  return records.GraphText(vocab, decompose.template_realiser(vocab))


def load_image(item: corpora.Item, size: int) -> np.ndarray | None:
  """The item's image resized to ``size``; None if its file does not exist."""
  from PIL import Image

  from vlkg import api
  where = f"image of item {item.key!r} ({item.source})"
  image = item.image
  if isinstance(image, str):
    if not os.path.isfile(image):
      return None
    try:
      with Image.open(image) as im:
        pixels = np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many types for a bad file
      raise corpora.CorpusError(image, f"corrupt or unreadable image ({e})", where) from None
  elif isinstance(image, bytes):
    try:
      with Image.open(io.BytesIO(image)) as im:
        pixels = np.asarray(im.convert("RGB"))
    except Exception as e:  # pylint: disable=broad-except
      raise corpora.CorpusError(item.source, f"corrupt or unreadable image ({e})",
                                where) from None
  else:
    try:
      pixels = corpora.pixels(image)
    except ValueError as e:
      raise corpora.CorpusError(item.source, str(e), where) from None
  if min(pixels.shape[:2]) < 1:
    raise corpora.CorpusError(item.source, f"image has shape {pixels.shape}", where)
  return api._resize(pixels[None], size)[0]  # pylint: disable=protected-access


def _png(image: np.ndarray) -> bytes:
  # zlib level 1: 5 ms instead of 26 ms for a 224 x 224 photo, 15% larger. At level 6
  # PNG encoding, not decoding or resizing, would bound the prepare rate.
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def _pad_rows(array: np.ndarray, k: int) -> np.ndarray:
  array = np.asarray(array)
  pad = np.zeros((k - array.shape[0],) + array.shape[1:], array.dtype)
  return np.concatenate([array, pad])


def item_fields(item: corpora.Item, index: int, split: str, image: np.ndarray,
                settings: Settings, layout: records.Layout, tokenizer, stats) -> dict | None:
  """The record of one item, or None if it has no caption left (counted)."""
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
  ids = _pad_rows(tokenizer.encode(texts), k)
  fields = {
      "image": _png(image), "text_ids": ids,
      "captions": [t.encode() for t in texts] + [b""] * (k - real),
      "index": index, "num_objects": 0,
      "object_attributes": np.zeros((0,), np.int64),
      "boxes": np.zeros((0,), np.float32),
      "scene_graph": (json.dumps(item.image_graph.to_json()).encode()
                      if item.image_graph is not None else _EMPTY_GRAPH)}
  if not (layout.negatives or layout.max_triples or layout.mosaic_slots
          or layout.max_phrases):
    return fields
  vocabulary_json = settings.vocabulary
  parser = _parser(vocabulary_json)
  graphs = []
  for text, truth in zip(texts, truths):
    if truth is not None:
      stats["graphs_ground_truth"] += 1
      graphs.append(truth)
    else:
      stats["graphs_parsed"] += 1
      graphs.append(parser.parse(text))
  text_of = _graph_text(vocabulary_json)
  split_id = SPLITS.index(split)
  extra = {}
  if layout.negatives or layout.max_triples:
    rng = np.random.default_rng([settings.seed, split_id, index, _NEGATIVE_STREAM])
    extra.update(records.graph_fields(graphs, layout, tokenizer, stats,
                                      kinds=records.negative_kinds(settings.graph),
                                      text=text_of, rng=rng))
  if layout.max_phrases:
    from vlkg.data.corpora import phrases
    extra["phrase_spans"] = np.stack([phrases.token_spans(
        tokenizer, t, parser, layout.max_phrases, stats) for t in texts])
  if layout.mosaic_slots:
    rng = np.random.default_rng([settings.seed, split_id, index, _MOSAIC_STREAM])
    extra.update(records.mosaic_fields(graphs, layout, records.mosaic_config(settings.graph),
                                       tokenizer, stats, text=text_of, rng=rng))
  fields.update({key: _pad_rows(value, k) for key, value in extra.items()})
  return fields


def _write_shard(task) -> dict:
  """Worker: decodes, resizes, captions and tokenises one shard's items."""
  out_dir, split, shard, count, items, start, settings, layout, tokenizer_desc = task
  import tensorflow as tf  # imported in the worker: TF must not be forked mid-use
  from vlkg.data import tokenizer as tok_lib
  tokenizer = tok_lib.from_description(tokenizer_desc, base_dir=out_dir)
  name = records.shard_name(split, shard, count)
  stats = collections.Counter()
  missing, written = [], 0
  with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
    for j, item in enumerate(items):
      image = load_image(item, settings.image_size)
      if image is None:
        stats["missing_images"] += 1
        missing.append(item.key)
        continue
      fields = item_fields(item, start + j, split, image, settings, layout, tokenizer,
                           stats)
      if fields is None:
        continue
      writer.write(records.encode_example(fields))
      written += 1
  stats["images"] += written
  size = os.path.getsize(os.path.join(out_dir, name))
  return {"split": split, "file": {"name": name, "num_records": written, "bytes": size},
          "stats": dict(stats), "missing": missing}


# ------------------------------------------------------------------ tokenizer


def _train_tokenizer(out_dir: str, train_items, vocab_size: int, seed: int,
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
  path = tok_lib.train_sentencepiece(texts[:TOKENIZER_SAMPLE] + lexicon,
                                     os.path.join(out_dir, "tokenizer"), vocab_size,
                                     seed=seed, model_type="bpe")
  desc = tok_lib.SentencePieceTokenizer(path, text_len).describe()
  desc["model_path"] = os.path.basename(path)
  return desc


def _copy_tokenizer(out_dir: str, desc: dict, base_dir: str, text_len: int) -> dict:
  """The given tokenizer with its files copied into the dataset, so that the dataset
  (and the runs that copy it) do not depend on where it came from."""
  desc = dict(desc)
  for key, value in list(desc.items()):
    if key.endswith("_path") and isinstance(value, str) and value:
      src = value if os.path.isabs(value) else os.path.join(base_dir, value)
      if not os.path.isfile(src):
        raise FileNotFoundError(f"tokenizer file {src} (description key {key!r}) not found")
      shutil.copyfile(src, os.path.join(out_dir, os.path.basename(src)))
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
  with an ETA as each shard finishes: a real corpus takes hours to prepare."""
  total = sum(len(task[4]) for task in tasks)
  workers = max(1, min(workers, len(tasks)))
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


def build(out_dir: str, config, graph_cfg, tokenizer_source) -> dict:
  """Writes the complete dataset of ``config.input`` into ``out_dir`` (new).

  ``tokenizer_source`` is (description, base_dir) of a given tokenizer, or
  (None, "") to train a sentencepiece model on the training captions.
  """
  from vlkg.data import prepare
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
    desc = _train_tokenizer(out_dir, splits["train"], config.input.vocab_size, config.seed,
                            config.input.text_len, vocabulary_json)
  else:
    desc = _copy_tokenizer(out_dir, given, base_dir, config.input.text_len)
  tokenizer = tok_lib.from_description(desc, base_dir=out_dir)
  # The trainer sizes the token embedding from the manifest's vocab_size.
  desc.setdefault("vocab_size", tokenizer.vocab_size)
  if tokenizer.max_len != config.input.text_len:
    raise ValueError(f"the tokenizer encodes {tokenizer.max_len} tokens, but "
                     f"config.input.text_len={config.input.text_len}")
  settings = Settings(name=name, image_size=prepare.image_size(config),
                      captions_per_image=config.input.captions_per_image,
                      text_len=config.input.text_len, seed=config.seed,
                      graph=dict(graph_cfg or {}), vocabulary=vocabulary_json)
  layout = records.layout_for(settings.image_size, settings.captions_per_image,
                              settings.text_len, 0, graph_cfg)
  tasks = []
  for split, items in splits.items():
    count = num_shards(split, len(items))
    bounds = np.linspace(0, len(items), count + 1).astype(int)
    for shard in range(count):
      tasks.append((out_dir, split, shard, count, items[bounds[shard]:bounds[shard + 1]],
                    int(bounds[shard]), settings, layout, desc))
  results = _write_shards(tasks, config.world.workers, name)

  manifest_splits = {s: {"files": [], "num_examples": 0} for s in splits}
  stats = {s: collections.Counter() for s in splits}
  missing = {s: [] for s in splits}
  for r in results:
    manifest_splits[r["split"]]["files"].append(r["file"])
    manifest_splits[r["split"]]["num_examples"] += r["file"]["num_records"]
    stats[r["split"]].update(r["stats"])
    missing[r["split"]] += r["missing"]
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
          "build_seconds": round(time.time() - start, 1)}
  with open(os.path.join(out_dir, "corpus.json"), "w") as f:
    json.dump(info, f, indent=1, sort_keys=True)
  records.write_manifest(out_dir, {
      "name": name, "splits": manifest_splits, "layout": dataclasses.asdict(layout),
      "tokenizer": desc, "corpus": report})
  return info
