"""REAVL's index: entities, their images and triples from a hand-made table, the
gold lookup, padding, the step's masking helpers, and the memory's refresh."""

import jax
import jax.numpy as jnp
import numpy as np

from vlkg.data import kg_table
from vlkg.graphs.scene_graph import SceneGraph
from vlkg.methods import reavl_index as I
from vlkg.methods import reavl_step as S


class WordTokenizer:
  """Whole words; pad 0, eos 3."""
  pad_id, eos_id, bos_id = 0, 3, None

  def __init__(self, length=12):
    self.length, self.vocab = length, {}

  def encode(self, texts):
    out = np.zeros((len(texts), self.length), np.int32)
    for i, text in enumerate(texts):
      ids = [self.vocab.setdefault(w, 4 + len(self.vocab)) for w in text.split()]
      ids = ids[:self.length - 1] + [3]
      out[i, :len(ids)] = ids
    return out


def _table():
  b = kg_table.Builder(4)
  red, scarlet, circle = b.text("red"), b.text("scarlet"), b.text("circle")
  warm, shape = b.text("warm color"), b.text("shape")
  img = b.image(np.full((4, 4, 3), 7, np.uint8), "object red circle")
  dog_img = b.image(np.full((4, 4, 3), 9, np.uint8), "dog photo")
  dog = b.text("dog")
  b.fact(scarlet, "alias of", red)
  b.fact(red, "is a", warm)
  b.fact(circle, "is a", shape)
  b.fact(img, "has color", red)
  b.fact(img, "is a", circle)
  b.fact(dog_img, kg_table.IMAGE_OF, dog)
  return b.finish(seed=0, heldout_fraction=0.0, max_neighbours=4)


def test_constants_from_a_table():
  table = _table()
  c = I.constants(table, WordTokenizer(), entity_len=6, item_tokens=3, pad_multiple=4)
  names = [str(t) for t in table.entity_text[~table.is_image]]
  assert names == ["red", "scarlet", "circle", "warm color", "shape", "dog"]
  assert c["valid"].tolist() == [True] * 6 + [False] * 2  # padded to 8
  # Entities with an image: red and circle share the object's, dog has its own.
  image = c["entity_image"]
  assert image[0] == image[2] >= 0 and image[5] >= 0 and image[5] != image[0]
  assert (image[[1, 3, 4, 6, 7]] == -1).all() and len(c["images"]) == 2
  assert (c["images"][image[5]] == 9).all()
  # red's triples: "red is a warm color" (out), "scarlet alias of red" (in).
  rel = list(table.relations)
  want = {(True, rel.index("is a"), 3), (False, rel.index("alias of"), 1)}
  got = {(bool(c["triple_outgoing"][0, j]), int(c["triple_relation"][0, j]),
          int(c["triple_other"][0, j])) for j in range(2) if c["triple_valid"][0, j]}
  assert got == want
  tok = WordTokenizer()
  tok.vocab = {}
  ids = c["triple_tokens"][0][c["triple_valid"][0]]
  assert ids.shape == (2, 6) and (ids[:, 0] > 3).all()
  # Gold hashes name rows through the sorted lookup; unknown words drop out.
  hashes = jnp.asarray([[I.entity_hash("Scarlet"), I.entity_hash("dog"),
                         I.entity_hash("unicorn"), -1]], jnp.int32)
  np.testing.assert_array_equal(I.gold_rows(hashes, jax.tree.map(jnp.asarray, c)),
                                [[1, 5, -1, -1]])


def test_concepts_are_the_one_hop_text_neighbours():
  c = I.constants(_table(), WordTokenizer(), entity_len=6, item_tokens=3, pad_multiple=4)
  # Rows: red 0, scarlet 1, circle 2, warm color 3, shape 4, dog 5 (padding 6, 7).
  # The image entities' facts join no two text entities.
  want = {0: {1, 3}, 1: {0}, 2: {4}, 3: {0}, 4: {2}, 5: set(), 6: set(), 7: set()}
  assert c["concepts"].shape == (8, 2)
  for row, rows in want.items():
    assert set(c["concepts"][row][c["concepts"][row] >= 0].tolist()) == rows
  narrow = I.constants(_table(), WordTokenizer(), entity_len=6, item_tokens=3,
                       pad_multiple=4, concept_width=1)
  assert narrow["concepts"][0].tolist() == [1]  # the first by row
  gold = jnp.asarray([[0, 5], [2, -1]], jnp.int32)
  np.testing.assert_array_equal(
      I.concept_rows(gold, jax.tree.map(jnp.asarray, c)),
      [[1, 3, -1, -1], [4, -1, -1, -1]])


def test_gold_field_hashes_the_scene_graph_words():
  graph = SceneGraph(objects=("circle", "square"),
                     attributes=((0, "red"), (1, "scarlet"), (1, "red")),
                     relations=((0, "left of", 1),))
  assert I.gold_names(graph) == ["circle", "square", "red", "scarlet", "left of"]

  class Caption:
    stats = {}
  caption = Caption()
  caption.graph = graph
  import collections
  caption.stats = collections.Counter()
  field = I.gold_field(3)
  out = field.make(caption, None)["reavl_gold"]
  assert out.tolist() == [I.entity_hash(w) for w in ("circle", "square", "red")]
  assert caption.stats["reavl_gold_cut"] == 1
  out = I.gold_field(6).make(caption, None)["reavl_gold"]
  assert out[-1] == -1


def test_mlm_positions_mask_at_least_one_and_at_most_most():
  u = jnp.array([[0.5, 0.05, 0.9, 0.01, 0.3], [0.9, 0.8, 0.7, 0.6, 0.95]])
  maskable = jnp.array([[True, True, True, False, True], [False, True, True, False, False]])
  pos, valid = S.mlm_positions(u, maskable, prob=0.1, most=3)
  # Row 0: maskable draws 0.05 (1), 0.3 (4), 0.5 (0); only 0.05 < 0.1.
  assert pos[0].tolist() == [1, 4, 0] and valid[0].tolist() == [True, False, False]
  # Row 1: nothing under 0.1, so its smallest maskable draw (0.7 at 2) anyway.
  assert pos[1].tolist()[:2] == [2, 1] and valid[1].tolist() == [True, False, False]


def test_pick_valid_draws_among_the_valid():
  valid = jnp.array([[False, True, False, True], [False] * 4, [True, True, True, True]])
  for u, want in ((0.0, [1, 0]), (0.49, [1, 1]), (0.5, [3, 2]), (0.99, [3, 3])):
    pos, has = S._pick_valid(jnp.full((3,), u), valid)
    assert [int(pos[0]), int(pos[2])] == want and has.tolist() == [True, False, True]


def test_refresh_recomputes_only_when_due():
  class Model:
    def apply(self, variables, c, step, method):
      del method
      return {"keys": jnp.full((2, 3), variables["params"]), "triples": jnp.zeros((2, 1, 3)),
              "relations": jnp.zeros((1, 3)), "at": jnp.asarray(step, jnp.int32)}

  memory = I.init_memory(2, 1, 1, 3)
  seen = []
  for step in range(6):
    memory = jax.jit(lambda p, m, s: I.refresh(Model(), p, m, s, {}, 3))(
        jnp.float32(step), memory, step)
    seen.append((int(memory["at"]), float(memory["keys"][0, 0])))
  assert seen == [(0, 0.0), (0, 0.0), (0, 0.0), (3, 3.0), (3, 3.0), (3, 3.0)]
