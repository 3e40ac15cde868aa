"""Builds the world dataset once: shards, tokenizer, benchmark suites, knowledge graph.

Work is split by shard over worker processes; every scene, caption and suite item is a
pure function of (seed, split, index), so the result does not depend on the number of
workers. Output goes to a temporary directory that is renamed into place only after
the manifest is written: an interrupted build is never mistaken for a dataset.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import logging
import multiprocessing
import os
import shutil
import time

import numpy as np

from vlkg.data import records
from vlkg.data.world import captions as cap
from vlkg.data.world import ontology, scene as scene_lib, suites

EVAL_SPLITS = ("val", "test", "test_comp")
_CAPTION_STREAM, _SUITE_STREAM = 1, 100
TOKENIZER_SAMPLE = 8_000  # training scenes whose captions train the tokenizer


def world_spec(world_cfg) -> scene_lib.WorldSpec:
  heldout = scene_lib.choose_heldout_pairs(world_cfg.seed, world_cfg.test_comp_fraction)
  spec = scene_lib.WorldSpec(seed=world_cfg.seed, image_size=world_cfg.image_size,
                             min_objects=world_cfg.min_objects,
                             max_objects=world_cfg.max_objects, heldout_pairs=heldout)
  spec.validate()
  return spec


def split_sizes(world_cfg) -> dict[str, int]:
  return {"train": world_cfg.num_train, "val": world_cfg.num_val,
          "test": world_cfg.num_test, "test_comp": world_cfg.num_test_comp}


def scene_captions(spec, world_cfg, scene) -> list[str]:
  rng = np.random.default_rng([spec.seed, scene_lib.SPLITS.index(scene.split),
                               scene.index, _CAPTION_STREAM])
  return cap.sample_captions(scene, rng, world_cfg.captions_per_image,
                             world_cfg.max_clauses)


def _png(image: np.ndarray) -> bytes:
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


def _object_fields(scene, max_objects):
  attrs = np.zeros((max_objects, 4), np.int64)
  boxes = np.zeros((max_objects, 4), np.float32)
  for k, o in enumerate(scene.objects):
    attrs[k] = [[s.name for s in ontology.SHAPES].index(o.shape),
                [c.name for c in ontology.COLORS].index(o.color),
                ontology.SIZES.index(o.size), ontology.TEXTURES.index(o.texture)]
    boxes[k] = o.box
  return attrs, boxes


def _write_shard(task) -> dict:
  """Worker: renders, captions and tokenises one shard; makes suite items on eval splits."""
  (out_dir, split, shard, num_shards, indices, spec, world_cfg, layout,
   tokenizer_path) = task
  import tensorflow as tf  # imported in the worker: TF must not be forked mid-use
  from vlkg.data import tokenizer as tok_lib
  from vlkg.data.world import render

  tokenizer = tok_lib.SentencePieceTokenizer(tokenizer_path, layout.text_len)
  name = records.shard_name(split, shard, num_shards)
  stats = collections.Counter()
  items = collections.defaultdict(list)
  image_dir = os.path.join(out_dir, "benchmarks", "images", split)
  with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
    for index in indices:
      scene = scene_lib.sample_scene(spec, split, index)
      png = _png(render.render(scene))
      texts = scene_captions(spec, world_cfg, scene)
      ids = tokenizer.encode(texts)
      lengths = tokenizer.unpadded_lengths(texts)
      stats["truncated_captions"] += sum(n > layout.text_len for n in lengths)
      stats["caption_tokens"] += sum(lengths)
      stats[f"objects_{len(scene.objects)}"] += 1
      stats["caption_words"] += sum(len(t.split()) for t in texts)
      attrs, boxes = _object_fields(scene, layout.max_objects)
      writer.write(records.encode_example({
          "image": png, "text_ids": ids, "captions": [t.encode() for t in texts],
          "index": index, "num_objects": len(scene.objects),
          "object_attributes": attrs, "boxes": boxes,
          "scene_graph": json.dumps(scene.graph_json()).encode()}))
      if split in EVAL_SPLITS:
        with open(os.path.join(image_dir, f"{index:06d}.png"), "wb") as f:
          f.write(png)
        focus = 0 if split == "test_comp" else None
        for k, suite in enumerate(suites.SUITES):
          rng = np.random.default_rng([spec.seed, scene_lib.SPLITS.index(split), index,
                                       _SUITE_STREAM + k])
          item = suites.make_item(suite, scene, rng, focus)
          if item is not None:
            items[suite].append(item)
  size = os.path.getsize(os.path.join(out_dir, name))
  return {"split": split, "file": {"name": name, "num_records": len(indices), "bytes": size},
          "stats": dict(stats), "items": dict(items)}


def _train_tokenizer(out_dir, spec, world_cfg, kg_text: list[str]) -> str:
  from vlkg.data import tokenizer as tok_lib
  texts = []
  for index in range(min(TOKENIZER_SAMPLE, world_cfg.num_train)):
    texts += scene_captions(spec, world_cfg, scene_lib.sample_scene(spec, "train", index))
  # The knowledge graph's words join the corpus so that aliases get pieces of their
  # own; they still never occur in a training caption.
  return tok_lib.train_sentencepiece(texts + kg_text, os.path.join(out_dir, "tokenizer"),
                                     world_cfg.vocab_size, seed=world_cfg.seed,
                                     model_type=world_cfg.tokenizer_type)


def _write_suites(out_dir, split, items_by_suite, image_size) -> dict[str, int]:
  """Writes one split's suites in the real formats (ARO JSON, SugarCrepe dicts).

  ARO crops each image to its bbox; world statements are about the whole scene, so
  the bbox is the full image and the crop is the identity.
  """
  from vlkg.data.benchmarks import aro, sugarcrepe
  root = os.path.join(out_dir, "benchmarks", split)
  os.makedirs(os.path.join(root, "sugarcrepe"), exist_ok=True)
  image = lambda it: f"images/{split}/{it.scene_index:06d}.png"
  full = (0.0, 0.0, float(image_size), float(image_size))
  counts = {}
  for suite, items in sorted(items_by_suite.items()):
    items = sorted(items, key=lambda it: it.scene_index)
    counts[suite] = len(items)
    if suite in suites.ARO_SUITES:
      kind = "attribution" if suite == "attribute_swap" else "relation"
      aro.write_aro(os.path.join(root, f"{suite}.json"), [
          aro.AroItem(image_path=image(it), bbox=full, true_caption=it.true_caption,
                      false_caption=it.false_captions[0],
                      relation_name=it.relation_name, attributes=it.attributes)
          for it in items], kind)
    elif suite == "order":
      with open(os.path.join(root, "order.json"), "w") as f:
        json.dump([{"image_path": image(it),
                    "caption_options": [it.true_caption, *it.false_captions]}
                   for it in items], f, indent=0)
    else:
      sugarcrepe.write_sugarcrepe_file(
          os.path.join(root, "sugarcrepe", f"{suite}.json"),
          [sugarcrepe.SugarCrepeItem(image(it), it.true_caption, it.false_captions[0])
           for it in items])
  return counts


def build(out_dir: str, world_cfg, text_len: int) -> dict:
  """Writes the complete world dataset into ``out_dir`` (which must not exist)."""
  from vlkg.data.world import knowledge
  start = time.time()
  spec = world_spec(world_cfg)
  sizes = split_sizes(world_cfg)
  layout = records.Layout(world_cfg.image_size, world_cfg.captions_per_image, text_len,
                          world_cfg.max_objects)
  os.makedirs(out_dir)
  for split in EVAL_SPLITS:
    os.makedirs(os.path.join(out_dir, "benchmarks", "images", split))

  graph = knowledge.build_knowledge_graph()
  knowledge.write_triples_tsv(graph, os.path.join(out_dir, "knowledge_triples.tsv"))
  kg_text = [" ".join(t) for t in knowledge.triples(graph)]
  tokenizer_path = _train_tokenizer(out_dir, spec, world_cfg, kg_text)
  logging.info("prepare: tokenizer trained (%.1fs)", time.time() - start)

  tasks = []
  for split, n in sizes.items():
    num_shards = max(1, min(world_cfg.num_shards if split == "train" else 2, n))
    bounds = np.linspace(0, n, num_shards + 1).astype(int)
    for shard in range(num_shards):
      tasks.append((out_dir, split, shard, num_shards,
                    range(bounds[shard], bounds[shard + 1]), spec, world_cfg, layout,
                    tokenizer_path))
  workers = max(1, min(world_cfg.workers, len(tasks)))
  if workers == 1:
    results = [_write_shard(t) for t in tasks]
  else:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      results = pool.map(_write_shard, tasks, chunksize=1)

  splits = {s: {"files": [], "num_examples": 0} for s in sizes}
  stats = {s: collections.Counter() for s in sizes}
  items = {s: collections.defaultdict(list) for s in EVAL_SPLITS}
  for r in results:
    splits[r["split"]]["files"].append(r["file"])
    splits[r["split"]]["num_examples"] += r["file"]["num_records"]
    stats[r["split"]].update(r["stats"])
    for suite, its in r["items"].items():
      items[r["split"]][suite] += its
  suite_counts = {s: _write_suites(out_dir, s, items[s], world_cfg.image_size)
                  for s in EVAL_SPLITS}

  from vlkg.data import tokenizer as tok_lib
  tokenizer = tok_lib.SentencePieceTokenizer(tokenizer_path, text_len)
  desc = tokenizer.describe()
  desc["model_path"] = os.path.basename(desc["model_path"])
  info = {
      "spec": {"seed": spec.seed, "image_size": spec.image_size,
               "min_objects": spec.min_objects, "max_objects": spec.max_objects},
      "heldout_pairs": [list(p) for p in spec.heldout_pairs],
      "num_color_shape_pairs": len(ontology.all_color_shape_pairs()),
      "statistics": {s: dict(c) for s, c in stats.items()},
      "suites": suite_counts,
      "knowledge_graph": {"nodes": graph.number_of_nodes(), "edges": graph.number_of_edges()},
      "vocab_size": tokenizer.vocab_size,
      "build_seconds": round(time.time() - start, 1),
  }
  with open(os.path.join(out_dir, "world.json"), "w") as f:
    json.dump(info, f, indent=1, sort_keys=True)
  records.write_manifest(out_dir, {
      "name": "world", "splits": splits, "layout": dataclasses.asdict(layout),
      "tokenizer": desc})
  return info


def build_atomically(final_dir: str, world_cfg, text_len: int) -> dict:
  """Builds into ``final_dir + '.partial-<pid>'`` and renames it into place."""
  tmp = f"{final_dir}.partial-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    info = build(tmp, world_cfg, text_len)
    try:
      os.rename(tmp, final_dir)
    except OSError:
      if not os.path.exists(os.path.join(final_dir, records.MANIFEST)):
        raise
      shutil.rmtree(tmp)  # another process finished the same dataset first
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return info
