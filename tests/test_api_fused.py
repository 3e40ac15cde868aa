"""Structure-CLIP's evaluation encoder on free text: parsed triples through the KEE,
fused (``vlkg.methods.structure_clip_eval``; with a dataset, see
tests/methods/test_structure_clip_eval.py)."""

import jax
import numpy as np

from configs import structure_clip
from vlkg import api, methods
from vlkg.data import tokenizer as tok_lib
from vlkg.graphs import tensorize, world_parser
from vlkg.methods import structure_clip_eval


def test_fused_text_encoder_parses_and_fuses(tmp_path):
  texts = ["a red circle left of a blue square", "a blue circle left of a red square",
           "there is a big green star"]
  model_path = tok_lib.train_sentencepiece(texts * 20, str(tmp_path / "tok"), 64,
                                           model_type="bpe")
  tokenizer = tok_lib.SentencePieceTokenizer(model_path, 32)
  config = structure_clip.get_config(f"smoke,model.text.vocab_size={tokenizer.vocab_size},"
                                     "structure_clip.kee_depth=1")
  module = methods.build_model(config)
  params = methods.init_params(module, config, jax.random.key(0))
  encoder = api.make_encoder(module, params, tokenizer, config, batch_size=2)
  # No dataset: token ids carry no graph, so only text is taken.
  assert isinstance(encoder, structure_clip_eval.FusedTextModel)
  assert encoder.encode_token_ids is None
  got = encoder.encode_texts(texts)

  sc = config.structure_clip
  shape = tensorize.GraphShape(sc.max_triples, sc.triple_tokens)
  triples, mask = tensorize.triple_arrays([world_parser.parse(t) for t in texts],
                                          tokenizer, shape)
  want = jax.jit(lambda p, *x: module.apply({"params": p}, *x, method=type(module).fused_text))(
      params, tokenizer.encode(texts), triples, mask)
  np.testing.assert_allclose(got, np.asarray(want), atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
  # The swapped-attribute caption has the same words but other triples.
  assert not np.allclose(got[0], got[1], atol=1e-4)
  plain = structure_clip.get_config(f"smoke,model.text.vocab_size={tokenizer.vocab_size},"
                                    "structure_clip.eval_text='plain'")
  assert type(api.make_encoder(module, params, tokenizer, plain)) is api.Model
