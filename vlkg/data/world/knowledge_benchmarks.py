"""The world's knowledge-VQA and entity-linking suites, in OK-VQA's and WikiDiverse's
formats, derived from a prepared split's records.

For ``val`` and ``test``, under ``<dataset>/benchmarks/<split>/``:

* ``okvqa/OpenEnded_world_<split>_questions.json`` and
  ``okvqa/world_<split>_annotations.json``: OK-VQA's two files (Marino et al., CVPR
  2019), ten identical human answers per question (`vlkg.data.world.kvqa_suite`);
* ``wikidiverse/<split>.json`` (passage level), ``wikidiverse/<split>_w_10cands.json``
  (mentions with ten candidates) and ``wikidiverse/entity2desc.txt`` (the entity
  descriptions): WikiDiverse's files (Wang et al., ACL 2022)
  (`vlkg.data.world.linking_suite`).

Images are the split's suite images, ``benchmarks/images/<split>/NNNNNN.png``: an
OK-VQA ``image_id`` is the scene index, and a WikiDiverse ``img_url`` is that path
relative to ``benchmarks/``.

Both suites are a pure function of what a prepared dataset already stores: the
split's records (each scene's objects: shape, color, size and texture ids and boxes,
`scenes_from_records`), ``world.json`` (the seed) and ``knowledge_triples.tsv`` (the
graph). Questions and mentions draw from their own seeded streams
``[seed, split, index, 200 | 201]`` (the captions use 1, the other suites 100-109)
and the yes/no balance from ``[seed, split, 202]``. So the world's build writes them
(`ensure`), and the world evaluator writes them into a dataset prepared before they
existed, with the same bytes; neither the records, the other suites nor the
dataset's fingerprint change. Each folder is written under a temporary name and
renamed into place.

The train split's knowledge-VQA questions (`train_vqa_items`), on which a VQA head
is fitted, are drawn the same way from the train records, and are not written.
"""

from __future__ import annotations

import json
import logging
import os
import uuid

import numpy as np

from vlkg import files
from vlkg.data.benchmarks import okvqa, wikidiverse
from vlkg.data.world import kvqa_suite, linking_suite, ontology, suites as suites_lib
from vlkg.data.world.scene import SPLITS as SCENE_SPLITS, Scene, WorldObject

SPLITS = ("val", "test")
KVQA_STREAM, LINK_STREAM, BALANCE_STREAM = 200, 201, 202
OKVQA, WIKIDIVERSE = "okvqa", "wikidiverse"
KB_FILE = "entity2desc.txt"


def folder(dataset_dir: str, split: str, suite: str) -> str:
  return os.path.join(dataset_dir, "benchmarks", split, suite)


def okvqa_files(dataset_dir: str, split: str) -> tuple[str, str]:
  root = folder(dataset_dir, split, OKVQA)
  return (os.path.join(root, f"OpenEnded_world_{split}_questions.json"),
          os.path.join(root, f"world_{split}_annotations.json"))


def wikidiverse_files(dataset_dir: str, split: str) -> tuple[str, str, str]:
  """(passages, mentions with candidates, KB) of ``split``."""
  root = folder(dataset_dir, split, WIKIDIVERSE)
  return (os.path.join(root, f"{split}.json"),
          os.path.join(root, f"{split}{wikidiverse.CANDIDATES_SUFFIX}"),
          os.path.join(root, KB_FILE))


def image_root(dataset_dir: str, split: str) -> str:
  """Where the OK-VQA images of ``split`` are, each named
  ``vlkg.data.world.suites.image_name(image_id)`` (an image id is a scene index)."""
  return os.path.join(dataset_dir, "benchmarks", "images", split)


def image_file(dataset_dir: str, split: str, image_id: int) -> str:
  """The file of one suite image of ``split`` (an image id is a scene index)."""
  return os.path.join(image_root(dataset_dir, split), suites_lib.image_name(image_id))


def scene_from_record(split: str, index: int, image_size: int,
                      attributes: np.ndarray, boxes: np.ndarray,
                      num_objects: int) -> Scene:
  """The scene as a record stores it: ids of shape, color, size and texture, and
  ``(x, y, w, h)`` boxes (float32), which give centres and radii; enough for every
  relation (`vlkg.data.world.scene.relation_value`). Rotation, rendered color and
  noise are not stored and are not needed."""
  objects = []
  for k in range(int(num_objects)):
    s, c, z, t = (int(v) for v in attributes[k])
    x, y, w, h = (float(v) for v in boxes[k])
    color = ontology.COLORS[c]
    objects.append(WorldObject(
        shape=ontology.SHAPES[s].name, color=color.name, size=ontology.SIZES[z],
        texture=ontology.TEXTURES[t], cx=x + w / 2, cy=y + h / 2, radius=w / 2,
        rotation=0.0, rgb=color.rgb))
  return Scene(split=split, index=int(index), image_size=image_size,
               objects=tuple(objects), noise_seed=0)


def scenes_from_records(dataset_dir: str, split: str, image_size: int) -> list[Scene]:
  """Every scene of ``split``, from its records' object fields, in index order."""
  from vlkg.data import input_pipeline
  scenes = []
  for batch in input_pipeline.eval_iterator(dataset_dir, split, batch_size=256,
                                            fields=("objects",), process_index=0,
                                            process_count=1):
    for row in np.flatnonzero(batch["_mask"]):
      scenes.append(scene_from_record(
          split, batch["index"][row], image_size, batch["object_attributes"][row],
          batch["boxes"][row], batch["num_objects"][row]))
  return sorted(scenes, key=lambda s: s.index)


def split_scenes(dataset_dir: str, split: str) -> list[Scene]:
  """Every scene of ``split`` of a prepared world, from its records."""
  spec = prepared_spec(dataset_dir)
  return scenes_from_records(dataset_dir, split, int(spec["image_size"]))


def knowledge_graph(dataset_dir: str):
  """The world's knowledge graph as the dataset wrote it (or as the code builds it)."""
  from vlkg.data.world import knowledge
  path = os.path.join(dataset_dir, "knowledge_triples.tsv")
  if files.exists(path):
    return knowledge.read_triples_tsv(path)
  return knowledge.build_knowledge_graph()


def prepared_spec(dataset_dir: str) -> dict:
  """The ``spec`` (seed, image size, objects per scene) of a prepared world."""
  with files.open(os.path.join(dataset_dir, "world.json")) as f:
    return json.load(f)["spec"]


def _split_id(scenes: list[Scene]) -> int:
  return SCENE_SPLITS.index(scenes[0].split) if scenes else 0


def _streams(scenes: list[Scene], seed: int):
  """``stream(scene, k)``: the seeded generator of suite ``k`` for one scene."""
  split_id = _split_id(scenes)
  return lambda scene, k: np.random.default_rng([seed, split_id, scene.index, k])


def vqa_questions(scenes: list[Scene], seed: int, graph
                  ) -> list[tuple[Scene, kvqa_suite.Question]]:
  """The knowledge-VQA questions of one split's scenes (one per scene that supports
  one, yes/no answers balanced over the split), each with its scene."""
  stream = _streams(scenes, seed)
  questions = [kvqa_suite.make_question(s, graph, stream(s, KVQA_STREAM))
               for s in scenes]
  questions = kvqa_suite.balance(
      questions, np.random.default_rng([seed, _split_id(scenes), BALANCE_STREAM]))
  return [(s, q) for s, q in zip(scenes, questions) if q is not None]


def vqa_items(scenes: list[Scene], seed: int, graph) -> list[okvqa.VqaItem]:
  """`vqa_questions` as OK-VQA items."""
  return [okvqa.VqaItem(s.index * 10, s.index, q.question, (q.answer,) * 10, q.type)
          for s, q in vqa_questions(scenes, seed, graph)]


def train_vqa_items(dataset_dir: str, max_scenes: int
                    ) -> tuple[np.ndarray, list[okvqa.VqaItem]]:
  """Knowledge-VQA questions on the first ``max_scenes`` train scenes, with their
  images, read from the train records (``vlkg.evaluators.vqa_head`` fits on them).

  They are drawn as the val and test suites are (`vqa_items`), and are not written
  to disk: the train split's images live in its records only.

  Returns:
    (uint8 images [N, H, W, 3], the N questions), question k about image k.
  """
  from vlkg.data import input_pipeline
  spec = prepared_spec(dataset_dir)
  images, scenes = {}, []
  for batch in input_pipeline.eval_iterator(dataset_dir, "train", batch_size=256,
                                            fields=("image", "objects"),
                                            process_index=0, process_count=1):
    for row in np.flatnonzero(batch["_mask"]):
      index = int(batch["index"][row])
      images[index] = batch["image"][row]
      scenes.append(scene_from_record(
          "train", index, int(spec["image_size"]), batch["object_attributes"][row],
          batch["boxes"][row], batch["num_objects"][row]))
    if len(scenes) >= max_scenes:
      break
  scenes = sorted(scenes, key=lambda s: s.index)[:max_scenes]
  items = vqa_items(scenes, int(spec["seed"]), knowledge_graph(dataset_dir))
  pixels = (np.stack([images[it.image_id] for it in items]) if items
            else np.zeros((0, 1, 1, 3), np.uint8))
  return pixels, items


def make(scenes: list[Scene], seed: int, graph) -> dict:
  """Both suites of one split's scenes: ``{"questions": [VqaItem], "passages":
  [Passage], "mentions": [Mention], "kb": {node: description}}``."""
  stream = _streams(scenes, seed)
  items = vqa_items(scenes, seed, graph)
  passages, mentions = [], []
  for s in scenes:
    made = linking_suite.make_item(s, graph, stream(s, LINK_STREAM))
    if made is None:
      continue
    caption, linked = made
    url = suites_lib.image_path(s.split, s.index)
    passages.append(wikidiverse.Passage(caption, url, "world", tuple(
        (m.mention, m.type, m.start, m.end, m.entity) for m in linked)))
    mentions += [wikidiverse.Mention(
        caption, url, m.mention, m.type, m.entity, m.candidates, "world", m.start,
        m.end, tuple(caption[:m.start].split()), tuple(caption[m.end:].split()))
                 for m in linked]
  return {"questions": items, "passages": passages, "mentions": mentions,
          "kb": linking_suite.kb_descriptions(graph)}


def is_complete(dataset_dir: str, split: str) -> bool:
  return all(files.isfile(p) for p in (*okvqa_files(dataset_dir, split),
                                       *wikidiverse_files(dataset_dir, split)))


def _write_folder(final: str, names: tuple[str, ...], write) -> None:
  """``write(directory)`` into a temporary folder renamed to ``final`` (on a local
  disk; straight into ``final`` elsewhere, where each file appears whole). A
  ``final`` that already holds every file of ``names`` is kept; one that lacks some
  (a file deleted by hand) is written again."""
  complete = lambda: all(files.isfile(os.path.join(final, n)) for n in names)
  if complete():
    return
  if not files.is_local(final):
    files.makedirs(final)
    write(final)
    return
  tmp = f"{final}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  os.makedirs(tmp)
  try:
    write(tmp)
    if complete():  # another process finished first: keep its copy, readers use it
      files.rmtree(tmp)
      return
    if os.path.isdir(final):  # a copy with a file deleted by hand
      files.rmtree(final)
    os.rename(tmp, final)
  except OSError:
    files.rmtree(tmp, ignore_errors=True)
    if not complete():
      raise  # not another process's finished copy: a real error


def write(dataset_dir: str, split: str, suites: dict) -> None:
  """Writes `make`'s suites of ``split`` in OK-VQA's and WikiDiverse's formats."""
  def write_okvqa(root):
    q, a = (os.path.basename(x) for x in okvqa_files(dataset_dir, split))
    okvqa.write_okvqa(os.path.join(root, q), os.path.join(root, a),
                      suites["questions"], data_subtype=split,
                      description="vlkg world knowledge VQA")

  def write_wikidiverse(root):
    p, m, kb = (os.path.basename(x) for x in wikidiverse_files(dataset_dir, split))
    wikidiverse.write_passages(os.path.join(root, p), suites["passages"])
    wikidiverse.write_mentions(os.path.join(root, m), suites["mentions"])
    wikidiverse.write_kb(os.path.join(root, kb), suites["kb"])

  base = lambda paths: tuple(os.path.basename(p) for p in paths)
  _write_folder(folder(dataset_dir, split, OKVQA), base(okvqa_files(dataset_dir, split)),
                write_okvqa)
  _write_folder(folder(dataset_dir, split, WIKIDIVERSE),
                base(wikidiverse_files(dataset_dir, split)), write_wikidiverse)


def ensure(dataset_dir: str, split: str) -> dict | None:
  """Writes both suites of ``split`` unless they are there.

  Returns:
    None when the files exist (now or already); the suites themselves when they
    could not be written (a read-only dataset), so that a caller can score them
    from memory.
  """
  if is_complete(dataset_dir, split):
    return None
  seed = int(prepared_spec(dataset_dir)["seed"])
  suites = make(split_scenes(dataset_dir, split), seed, knowledge_graph(dataset_dir))
  try:
    write(dataset_dir, split, suites)
  except OSError as e:
    logging.warning("%s: cannot write the %s knowledge suites (%s); scoring them "
                    "from memory", dataset_dir, split, e)
    return suites
  logging.info("%s: wrote the %s knowledge-VQA (%d questions) and entity-linking "
               "(%d mentions) suites", dataset_dir, split, len(suites["questions"]),
               len(suites["mentions"]))
  return None
