"""Structure-CLIP's evaluation encoder reads the triples prepare built for the
dataset's evaluation texts, and evaluates exactly as parsing them again would."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import structure_clip
from vlkg import api, methods
from vlkg.data import input_pipeline, records
from vlkg.data import tokenizer as tok_lib
from vlkg.evaluators import world
from vlkg.graphs import tensorize, world_parser
from vlkg.methods import structure_clip_eval
import tiny_world


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  config, directory = tiny_world.prepared(structure_clip, tmp_path_factory.mktemp("d"),
                                         ",structure_clip.kee_depth=1")
  tokenizer = tok_lib.from_description(records.read_manifest(directory)["tokenizer"],
                                       base_dir=directory)
  module = methods.build_model(config)
  params = jax.jit(lambda r: methods.init_params(module, config, r))(jax.random.key(0))
  return config, directory, tokenizer, module, params


def test_the_table_holds_every_evaluation_text_with_its_triples(setup):
  config, directory, tokenizer, *_ = setup
  table = records.read_eval_table(directory)
  texts = [str(t) for t in table["texts"]]
  suite = world.read_suite(directory, "test", "attribute_swap")
  assert suite and {t for it in suite for t in it.options} <= set(texts)
  captions = next(input_pipeline.eval_iterator(directory, "val", batch_size=4))["texts"]
  assert set(tokenizer.decode(captions.reshape(-1, captions.shape[-1]))) <= set(texts)
  sc = config.structure_clip
  shape = tensorize.GraphShape(sc.max_triples, sc.triple_tokens)
  for i in (0, len(texts) // 2, len(texts) - 1):
    triples, valid = tensorize.triple_arrays([world_parser.parse(texts[i])], tokenizer,
                                             shape)
    np.testing.assert_array_equal(table["triples"][i], triples[0])
    np.testing.assert_array_equal(table["triples_valid"][i], valid[0])
  np.testing.assert_array_equal(table["text_ids"], tokenizer.encode(texts))


def test_dataset_texts_are_not_parsed_and_score_as_parsed(setup):
  config, directory, tokenizer, module, params = setup
  encoder = api.make_encoder(module, params, tokenizer, config, batch_size=8,
                             dataset_dir=directory)
  parsing = api.make_encoder(module, params, tokenizer, config, batch_size=8)
  assert isinstance(encoder, structure_clip_eval.FusedTextModel)
  assert callable(encoder.encode_token_ids) and parsing.encode_token_ids is None
  table = records.read_eval_table(directory)
  texts = [str(t) for t in table["texts"][:10]]

  def no_parse(text):
    raise AssertionError(f"parsed {text!r}")

  encoder.parse = no_parse
  np.testing.assert_allclose(encoder.encode_texts(texts), parsing.encode_texts(texts),
                             atol=1e-6)
  np.testing.assert_allclose(encoder.encode_token_ids(tokenizer.encode(texts)),
                             parsing.encode_texts(texts), atol=1e-6)
  # A text the dataset does not have is parsed.
  encoder.parse = parsing.parse
  free = ["a red circle above a blue star"]
  np.testing.assert_allclose(encoder.encode_texts(free), parsing.encode_texts(free),
                             atol=1e-6)
  np.testing.assert_allclose(encoder.encode_token_ids(tokenizer.encode(free)),
                             parsing.encode_texts(free), atol=1e-6)
  # The world's evaluation, suites and retrieval, is the same either way.
  got = world.evaluate(encoder, directory, splits=("test",), grounding=False)
  want = world.evaluate(parsing, directory, splits=("test",), grounding=False)
  assert got == pytest.approx(want) and "world/attribute_swap" in got
