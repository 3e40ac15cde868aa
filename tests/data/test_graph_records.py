"""Scene-graph fields in the prepared records: triples, hard negatives, truncation
counts, and no held-out color-shape pair in any training negative."""

import collections
import json
import os

import pytest

from configs import structure_clip
from vlkg import methods
from vlkg.data import input_pipeline, prepare, records, world as world_lib
from vlkg.data import tokenizer as tok_lib
from vlkg.data.world import build
from vlkg.graphs import general_parser, tensorize
from vlkg.graphs.scene_graph import SceneGraph

TINY = ("smoke,world.num_train=120,world.num_val=8,world.num_test=8,"
        "world.num_test_comp=8,world.num_shards=2,world.workers=1")
FIELDS = ("image", "text", "triples", "triples_valid", "neg_text", "neg_valid")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  config = structure_clip.get_config(TINY + f",data_dir='{tmp_path_factory.mktemp('d')}'")
  return config, prepare.ensure_prepared(config)


def test_triple_arrays_by_hand_and_truncation_counts(dataset):
  _, d = dataset
  tok = tok_lib.from_description(records.read_manifest(d)["tokenizer"], base_dir=d)
  g = SceneGraph(("circle", "square"), ((0, "red"),), ((0, "left of", 1),))
  counts = collections.Counter()
  ids, mask = tensorize.triple_arrays([g, SceneGraph()], tok, tensorize.GraphShape(1, 1),
                                      counts)
  assert ids.shape == (2, 1, 3, 1) and mask.tolist() == [[True], [False]]
  assert tok.decode([ids[0, 0, 0]])[0] == "circle" and tok.decode([ids[0, 0, 2]])[0] == "red"
  # Two triples for one slot; "left of" is two tokens for one.
  assert counts == {"graphs_truncated": 1, "elements_truncated": 0, "empty_graphs": 1}
  counts.clear()
  tensorize.triple_arrays([SceneGraph(("circle",), (), ((0, "left of", 0),))], tok,
                          tensorize.GraphShape(2, 1), counts)
  assert counts["elements_truncated"] == 1


def test_clip_data_has_no_graph_fields_and_structure_data_has_them(dataset):
  config, d = dataset
  layout = records.layout_of(records.read_manifest(d))
  assert [(f.name, f.dtype, f.shape) for f in layout.features] == [
      ("triples", "int32", (6, 3, 5)), ("triples_valid", "bool", (6,)),
      ("neg_text", "int32", (32,)), ("neg_valid", "bool", ())]
  assert methods.batch_keys(config) == FIELDS
  from configs import clip
  assert methods.fields(clip.get_config()) == ()
  assert records.layout_for(64, 3, 32, 4, methods.fields(clip.get_config())).features == ()
  assert prepare.dataset_dir(clip.get_config(TINY)) != prepare.dataset_dir(config)


def test_batches_carry_the_negative_and_triples_of_the_picked_caption(dataset):
  _, d = dataset
  tok = tok_lib.from_description(records.read_manifest(d)["tokenizer"], base_dir=d)
  b = next(input_pipeline.train_iterator(d, batch_size=16, seed=0, fields=FIELDS,
                                         shuffle_buffer=32))
  assert b["neg_text"].shape == (16, 32) and b["triples"].shape == (16, 6, 3, 5)
  assert b["neg_valid"].dtype == bool and b["triples_valid"].dtype == bool
  assert b["neg_valid"].all()  # the fallback kinds give every world caption a negative
  for text, neg, triples, tmask in zip(tok.decode(b["text"]), tok.decode(b["neg_text"]),
                                       b["triples"], b["triples_valid"]):
    assert neg != text
    graph = general_parser.parse(text)
    # The stored triples are the picked caption's own (up to T=6).
    stored = [tuple(tok.decode(t)) for t, m in zip(triples, tmask) if m]
    assert len(stored) == min(6, len(graph.triples()))


def test_no_training_negative_shows_a_heldout_pair(dataset):
  config, d = dataset
  heldout = set(build.world_spec(world_lib.settings(config)).heldout_pairs)
  tok = tok_lib.from_description(records.read_manifest(d)["tokenizer"], base_dir=d)
  from vlkg.graphs import world_parser
  it = input_pipeline.train_iterator(d, batch_size=40, seed=1, fields=FIELDS, shuffle_buffer=8)
  for _ in range(3):
    b = next(it)
    for neg in tok.decode(b["neg_text"]):
      g = world_parser.parse(neg)
      pairs = {(a, o) for i, o in enumerate(g.objects) for a in g.attributes_of(i)}
      assert not pairs & heldout, neg


def test_prepare_reports_graph_statistics(dataset):
  _, d = dataset
  stats = json.load(open(os.path.join(d, "world.json")))["statistics"]["train"]
  kinds = {k for k in stats if k.startswith("negatives_")}
  assert {"negatives_swap_attributes", "negatives_swap_relation"} <= kinds
  assert "graphs_truncated" in stats and "empty_graphs" in stats
