"""The field interface (features, checked builders, fingerprints) and the shared
builders on world captions; the data layer's loops over fields (per image, and the
evaluation table)."""

import collections

import numpy as np
import pytest

from vlkg import config as config_lib
from vlkg.data import world as world_lib
from vlkg.data import records
from vlkg.data import tokenizer as tok_lib
from vlkg.data.world import build
from vlkg.graphs import fields as F
from vlkg.graphs import negatives, tensorize, world_parser

TEXTS = ["a red circle to the left of a blue square", "there is a small green star",
         "a big yellow striped triangle above a purple disc"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  path = tok_lib.train_sentencepiece(
      TEXTS * 10 + ["to the left of right above below disc oval rhombus big small"],
      str(tmp_path_factory.mktemp("tok") / "tok"), 96, model_type="bpe")
  return tok_lib.SentencePieceTokenizer(path, 24)


def captions(tokenizer, texts=TEXTS, stats=None):
  spec = build.world_spec(world_lib.settings(config_lib.base_config("smoke")))
  text_of = build.world_graph_text(spec, "train")
  return [F.Caption(t, lambda t=t: world_parser.parse(t), tokenizer, text_of, stats)
          for t in texts]


def test_feature_checks_and_json():
  f = F.Feature("n", "int32", [2, 3])
  assert f.shape == (2, 3) and f.size == 6 and f.numpy_dtype == np.int32
  assert F.Feature.from_json(f.to_json()) == f
  with pytest.raises(ValueError, match="dtype"):
    F.Feature("n", "int64")
  with pytest.raises(ValueError, match="reserved"):
    F.Feature("text", "int32")


def test_field_make_checks_and_casts():
  field = F.Field((F.Feature("a", "bool", (2,)), F.Feature("b", "float32")),
                  lambda c, rng: {"a": [1, 0], "b": 3})
  out = field.make(None, None)
  assert out["a"].dtype == bool and out["a"].tolist() == [True, False]
  assert out["b"].dtype == np.float32 and out["b"] == 3.0
  with pytest.raises(ValueError, match="shape"):
    F.Field((F.Feature("a", "int32", (2,)),), lambda c, r: {"a": [1]}).make(None, None)
  with pytest.raises(ValueError, match="returned no 'a'"):
    F.Field((F.Feature("a", "int32"),), lambda c, r: {}).make(None, None)
  with pytest.raises(ValueError, match="undeclared"):
    F.Field((F.Feature("a", "int32"),), lambda c, r: {"a": 1, "z": 2}).make(None, None)
  with pytest.raises(ValueError, match="declared twice"):
    F.check([field, field])


def test_streams_and_fingerprints():
  toy = F.Field((F.Feature("count", "int32"),), lambda c, r: {"count": 0})
  assert toy.stream >= 1000 and toy.stream == F.Field(toy.features, toy.build).stream
  assert F.negatives(("swap_attributes",), (), 8).stream == 2  # as before fields existed
  assert F.mosaic_slots(3, 6, 0.15, 8).stream == 3
  a, b = F.triples(6, 5).fingerprint(), F.triples(4, 5).fingerprint()
  assert a != b and a["reads"] == {"max_triples": 6, "triple_tokens": 5}
  assert a["builder"] == "vlkg.graphs.fields._triples"
  assert F.negatives(("swap_attributes", "swap_relation"), (), 8).fingerprint()["reads"] == {
      "negatives": ["swap_attributes", "swap_relation"], "fallback_negatives": []}


def test_shared_builders_on_world_captions(tokenizer):
  stats = collections.Counter()
  caps = captions(tokenizer, stats=stats)
  rng = np.random.default_rng(0)
  ids, valid = tensorize.triple_arrays([world_parser.parse(t) for t in TEXTS], tokenizer,
                                       tensorize.GraphShape(6, 5))
  for i, c in enumerate(caps):
    got = F.triples(6, 5).make(c, rng)
    np.testing.assert_array_equal(got["triples"], ids[i])
    np.testing.assert_array_equal(got["triples_valid"], valid[i])
  neg = F.negatives(("swap_attributes", "swap_relation"), ("replace_attribute",), 24)
  vocab = negatives.world_vocabulary()
  for c in caps:
    out = neg.make(c, rng)
    said = tokenizer.decode(out["neg_text"][None])[0]
    assert out["neg_valid"] and negatives.is_negative_of(
        world_parser.parse(said), c.graph, synonyms=vocab.synonyms)
  spans = F.phrase_spans(3).make(caps[0], rng)["phrase_spans"]
  ids0 = tokenizer.encode([TEXTS[0]])[0]
  assert [tokenizer.decode([ids0[a:b]])[0] for a, b in spans if b] == [
      "a red circle", "a blue square"]
  slots = F.mosaic_slots(2, 3, 0.15, 24).make(caps[2], rng)
  assert slots["mosaic_texts"].shape == (6, 24) and slots["mosaic_valid"].dtype == bool
  texts = tokenizer.decode(slots["mosaic_texts"])
  assert [bool(t) for t in texts] == slots["mosaic_valid"].tolist()
  assert stats["empty_graphs"] == 0 and stats["mosaic_positives"] >= 1
  assert sum(v for k, v in stats.items() if k.startswith("negatives_")) == 3


def test_caption_features_pad_and_keep_each_fields_stream(tokenizer):
  neg = F.negatives(("swap_attributes", "swap_relation"), ("replace_attribute",), 24)
  toy = F.Field((F.Feature("draw", "float32"),), lambda c, rng: {"draw": rng.random()})
  alone = records.caption_features([neg], captions(tokenizer), (0, 0, 7), 4)
  both = records.caption_features([toy, neg], captions(tokenizer), (0, 0, 7), 4)
  # A field's values do not depend on the other fields declared with it.
  np.testing.assert_array_equal(alone["neg_text"], both["neg_text"])
  assert both["neg_text"].shape == (4, 24) and both["neg_valid"].tolist() == [
      True, True, True, False]  # three captions, the fourth row is padding
  want = np.random.default_rng([0, 0, 7, toy.stream]).random(3)
  np.testing.assert_allclose(both["draw"][:3], want, rtol=1e-6)
  assert both["draw"][3] == 0


def test_eval_table_round_trip(tokenizer, tmp_path):
  fields = [F.triples(6, 5, eval_texts=True),
            F.negatives(("swap_attributes",), (), 24)]
  rows = records.eval_features(fields, TEXTS + TEXTS[:1],
                               lambda t: captions(tokenizer, [t])[0], seed=0)
  assert sorted(rows) == sorted(TEXTS) and set(rows[TEXTS[0]]) == {"triples",
                                                                    "triples_valid"}
  records.write_eval_table(str(tmp_path), rows, tokenizer)
  table = records.read_eval_table(str(tmp_path))
  order = sorted(TEXTS)
  assert table["texts"].tolist() == order
  np.testing.assert_array_equal(table["text_ids"], tokenizer.encode(order))
  np.testing.assert_array_equal(table["triples"][0], rows[order[0]]["triples"])
  assert table["triples_valid"].dtype == bool
  assert records.read_eval_table(str(tmp_path / "none")) is None
