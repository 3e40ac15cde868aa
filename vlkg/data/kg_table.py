"""A dataset's knowledge-graph triplets with image and text entities, as arrays.

Knowledge-CLIP (Pan et al., "Contrastive Language-Image Pre-Training with Knowledge
Graphs", NeurIPS 2022, §3.1) trains on triplets (h, r, t) whose entities are images
or texts and whose relations are words. A prepared dataset holds them once, in
``TABLE`` (``knowledge_table.npz``), beside its shards:

* ``entity_text`` [E] str: the text of a text entity; a description of an image
  entity ("object 3", "region 12/0");
* ``entity_image`` [E] int32: the image entity's row of ``images``, -1 for text;
* ``images`` [I, S, S, 3] uint8, at the dataset's image size;
* ``relations`` [R] str, the relation vocabulary (sorted);
* ``triplets`` [T, 3] int32 (head entity, relation, tail entity);
* ``heldout`` [T] bool: the triplets kept out of training, for the KG evaluation
  (``vlkg.evaluators.kg``);
* ``neighbours`` [E, N] int32 (-1 padding) and ``neighbour_types`` [E, N] int32:
  each entity's text neighbours along *training* triplets, the graph that
  Knowledge-CLIP's G2E objective propagates over; the type is the relation id for
  an outgoing edge and R + relation id for an incoming one.

Records do not repeat entity pixels per caption (an image entity at 64 x 64 would
be ~20 KB in every caption of every record); a method's per-caption fields name
triplets of this table, and the method holds the table on device.

The held-out split is seeded, and takes only triplets whose two entities keep at
least one training triplet each: a held-out fact then asks for a known entity, not
for one the model has never seen.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Sequence

import numpy as np

from vlkg import files
from vlkg.files import atomic_write

TABLE = "knowledge_table.npz"
_ARRAYS = ("entity_text", "entity_image", "images", "relations", "triplets", "heldout",
           "neighbours", "neighbour_types")
# Typed groups of triplets by the modality of their two entities: each is encoded
# with fixed shapes (text slots by the text tower, image slots by the image tower).
GROUPS = ("text_text", "mixed", "image_image")


@dataclasses.dataclass(frozen=True)
class Table:
  """The arrays of ``TABLE`` (see the module docstring)."""
  entity_text: np.ndarray
  entity_image: np.ndarray
  images: np.ndarray
  relations: np.ndarray
  triplets: np.ndarray
  heldout: np.ndarray
  neighbours: np.ndarray
  neighbour_types: np.ndarray

  @property
  def is_image(self) -> np.ndarray:
    return self.entity_image >= 0

  @property
  def num_entities(self) -> int:
    return len(self.entity_text)

  def group_of(self) -> np.ndarray:
    """[T] index into ``GROUPS`` of each triplet."""
    n_images = self.is_image[self.triplets[:, 0]].astype(int) + self.is_image[
        self.triplets[:, 2]].astype(int)
    return n_images

  def training(self, group: str) -> np.ndarray:
    """Indices of the training triplets of ``group`` (sorted)."""
    return np.flatnonzero((self.group_of() == GROUPS.index(group)) & ~self.heldout)

  def describe(self) -> dict:
    groups = self.group_of()
    return {"entities": self.num_entities, "image_entities": int(self.is_image.sum()),
            "relations": len(self.relations), "triplets": len(self.triplets),
            "heldout": int(self.heldout.sum()),
            **{f"train_{g}": int(((groups == k) & ~self.heldout).sum())
               for k, g in enumerate(GROUPS)}}


class Builder:
  """Collects entities and facts, then ``finish`` makes the ``Table``.

  Text entities are keyed by their text (one node per string); every ``image``
  call is a new entity.
  """

  def __init__(self, image_size: int):
    self.image_size = image_size
    self._texts: dict[str, int] = {}
    self._entity_text: list[str] = []
    self._entity_image: list[int] = []
    self._images: list[np.ndarray] = []
    self._facts: dict[tuple[int, str, int], None] = {}

  def text(self, text: str) -> int:
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"a text entity needs a non-empty string, got {text!r}")
    if text not in self._texts:
      self._texts[text] = len(self._entity_text)
      self._entity_text.append(text)
      self._entity_image.append(-1)
    return self._texts[text]

  def image(self, pixels: np.ndarray, name: str) -> int:
    s = self.image_size
    if pixels.shape != (s, s, 3) or pixels.dtype != np.uint8:
      raise ValueError(f"image entity {name!r}: expected uint8 {(s, s, 3)}, got "
                       f"{pixels.dtype} {pixels.shape}")
    self._entity_text.append(name)
    self._entity_image.append(len(self._images))
    self._images.append(pixels)
    return len(self._entity_text) - 1

  def fact(self, head: int, relation: str, tail: int) -> None:
    if head == tail:
      return
    self._facts[(head, relation, tail)] = None

  def finish(self, *, seed: int, heldout_fraction: float,
             max_neighbours: int) -> Table:
    relations = sorted({r for _, r, _ in self._facts})
    rel_id = {r: i for i, r in enumerate(relations)}
    triplets = np.array([(h, rel_id[r], t) for h, r, t in self._facts],
                        np.int32).reshape(-1, 3)
    entity_image = np.array(self._entity_image, np.int32)
    heldout = split(triplets, len(self._entity_text), heldout_fraction, seed)
    neighbours, types = neighbourhoods(triplets[~heldout], entity_image < 0,
                                       len(relations), max_neighbours, seed)
    s = self.image_size
    images = (np.stack(self._images) if self._images
              else np.zeros((0, s, s, 3), np.uint8))
    return Table(np.array(self._entity_text, dtype=str), entity_image, images,
                 np.array(relations, dtype=str), triplets, heldout, neighbours, types)


IMAGE_OF = "is an image of"


def from_graph(graph, image_size: int, *, images_per_node: int = 2, seed: int = 0,
               heldout_fraction: float = 0.1, max_neighbours: int = 8) -> Table:
  """The table of a knowledge graph read by ``vlkg.graphs.kg.read``.

  A node is a text entity: its ``name`` attribute (VisualSem's main sense) or the
  node itself (ConceptNet's term). A node's ``images`` (VisualSem) give up to
  ``images_per_node`` image entities, each ``IMAGE_OF`` the node, as the paper adds
  image-text pairs with a fixed relation; missing files are skipped. Images are
  center-cropped and resized to ``image_size``.
  """
  from vlkg import preprocess
  from PIL import Image
  b = Builder(image_size)
  name = lambda node: str(graph.nodes[node].get("name") or node)
  for head, tail, data in graph.edges(data=True):
    b.fact(b.text(name(head)), data["relation"], b.text(name(tail)))
  for node, data in graph.nodes(data=True):
    kept = 0
    for path in data.get("images", ()):
      if kept == images_per_node:
        break
      if not files.exists(path):
        continue
      with files.open(path, "rb") as f, Image.open(f) as im:
        pixels = np.asarray(im.convert("RGB"))
      pixels = preprocess.resize(pixels[None], image_size)[0]
      b.fact(b.image(pixels.astype(np.uint8), path), IMAGE_OF, b.text(name(node)))
      kept += 1
  return b.finish(seed=seed, heldout_fraction=heldout_fraction,
                  max_neighbours=max_neighbours)


def split(triplets: np.ndarray, num_entities: int, fraction: float,
          seed: int) -> np.ndarray:
  """[T] bool: about ``fraction`` of the triplets, held out, seeded; each held-out
  triplet's head and tail keep at least one training triplet."""
  t = len(triplets)
  heldout = np.zeros(t, bool)
  want = int(round(fraction * t))
  if want <= 0:
    return heldout
  degree = np.bincount(triplets[:, [0, 2]].reshape(-1), minlength=num_entities)
  order = np.random.default_rng([seed, 7411]).permutation(t)
  for k in order:
    h, _, tail = triplets[k]
    if degree[h] >= 2 and degree[tail] >= 2:
      heldout[k] = True
      degree[h] -= 1
      degree[tail] -= 1
      if heldout.sum() == want:
        break
  return heldout


def neighbourhoods(triplets: np.ndarray, is_text: np.ndarray, num_relations: int,
                   max_neighbours: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Each entity's text neighbours along ``triplets``: ([E, N] ids, [E, N] types),
  -1 / 0 padding; an entity with more than N keeps N drawn seeded."""
  e = len(is_text)
  found = collections.defaultdict(dict)
  for h, r, tail in triplets:
    if is_text[tail]:
      found[h].setdefault(int(tail), int(r))
    if is_text[h]:
      found[tail].setdefault(int(h), num_relations + int(r))
  ids = np.full((e, max_neighbours), -1, np.int32)
  types = np.zeros((e, max_neighbours), np.int32)
  rng = np.random.default_rng([seed, 7412])
  for entity in range(e):
    items = sorted(found.get(entity, {}).items())
    if len(items) > max_neighbours:
      keep = np.sort(rng.choice(len(items), max_neighbours, replace=False))
      items = [items[k] for k in keep]
    for k, (other, kind) in enumerate(items):
      ids[entity, k], types[entity, k] = other, kind
  return ids, types


def write(directory: str, table: Table) -> str:
  """Writes ``table`` as ``directory/TABLE``; returns the path."""
  arrays = {k: getattr(table, k) for k in _ARRAYS}
  return atomic_write(os.path.join(directory, TABLE),
                      lambda f: np.savez_compressed(f, **arrays))


def read(directory: str) -> Table:
  """The table of a prepared dataset.

  Raises:
    FileNotFoundError: if the dataset has none (prepared before it existed, or a
      corpus without a knowledge graph); the message says what to do.
  """
  path = os.path.join(directory, TABLE)
  if not files.exists(path):
    raise FileNotFoundError(f"{path}: the dataset has no knowledge-graph triplets; "
                            "prepare it again (python -m vlkg.tools.prepare)")
  data = files.load_npz(path)
  return Table(**{k: data[k] for k in _ARRAYS})


def text_ids(texts: Sequence[str], tokenizer, length: int) -> np.ndarray:
  """``tokenizer``'s ids of ``texts`` cut to ``length`` tokens [N, length]; a cut text
  ends with the end-of-text id, so that the text tower still pools at it."""
  ids = np.asarray(tokenizer.encode(list(texts)), np.int32)
  if ids.shape[1] <= length:
    return np.pad(ids, ((0, 0), (0, length - ids.shape[1])),
                  constant_values=tokenizer.pad_id)
  cut = ids[:, length:] != tokenizer.pad_id
  out = ids[:, :length].copy()
  out[cut.any(axis=1), length - 1] = tokenizer.eos_id
  return out
