"""Knowledge-CLIP's evaluation encoder: a tail query (h, r, ?) is exactly the E2E
prediction that the training step makes with the tail masked."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlkg import api, config as config_lib
from vlkg.methods import knowledge_clip as kc
from vlkg.methods import knowledge_clip_eval as kc_eval
from vlkg.methods import knowledge_clip_step as step_lib
from vlkg.models.two_towers import l2_normalize
from tests.methods.test_knowledge_clip_loss import _Tok, _batch, _setup, _table

ENTITY_LEN = 8


def _training_predictions(model, params, table, n):
  """The step's E2E predictions of the first ``n[g]`` training triplets of each group,
  every tail masked: {group: ([n, D] unit predictions, [n, 3] triplets)}."""
  c = step_lib.constants(table, _Tok(), entity_len=ENTITY_LEN, max_relations=64,
                         neighbours=4)
  b = 8
  draws = np.zeros((b, 3), np.int32)
  draws[:] = np.arange(b)[:, None]  # row k of each group's training triplets
  choices = {g: jnp.ones((k,), jnp.int32) for g, k in n.items()}  # 1: mask the tail
  batch = _batch(b)
  out = jax.jit(lambda p, d, c_: model.apply(
      {"params": p}, batch["image"], batch["text"], d, c_, choices, n, pad_id=0,
      g2e_stop_gradient=True, method=step_lib.forward))(params, jnp.asarray(draws), c)
  result = {}
  for g, k in n.items():
    triplets = np.stack([np.asarray(x) for x in step_lib._resolve(c, draws, g, k)], 1)
    result[g] = (np.asarray(l2_normalize(out["groups"][g]["e2e"])), triplets)
  return result


def test_tail_queries_are_the_steps_masked_tail_predictions():
  config, model, params = _setup()
  table = _table()
  n = {"text_text": 4, "mixed": 6, "image_image": 2}
  trained = _training_predictions(model, params, table, n)
  encoder = kc_eval.TripletQueryModel(model, params, _Tok(), 32, 4,
                                      entity_len=ENTITY_LEN, image_pool=1)
  want = np.concatenate([w for w, _ in trained.values()])
  triplets = np.concatenate([t for _, t in trained.values()])
  image = table.is_image[triplets[:, 0]]
  assert image.sum() >= 3 and (~image).sum() >= 3  # both kinds of head
  relations = [str(table.relations[r]) for r in triplets[:, 1]]
  got = np.zeros_like(want)
  # Batches of 4, the last one padded.
  got[image] = encoder.encode_kg_queries(
      [r for r, i in zip(relations, image) if i],
      images=table.images[table.entity_image[triplets[image, 0]]])
  got[~image] = encoder.encode_kg_queries(
      [r for r, i in zip(relations, image) if not i],
      texts=[str(t) for t in table.entity_text[triplets[~image, 0]]])
  # In the mixed group an image head sits in the step's second slot, its masked
  # text tail in the first; the query puts the head first: the same prediction.
  np.testing.assert_allclose(got, want, atol=2e-5)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_eval_encoder_hook():
  config, model, params = _setup()
  encoder = api.make_encoder(model, params, _Tok(), config)
  assert isinstance(encoder, kc_eval.TripletQueryModel)
  with pytest.raises(ValueError, match="not both"):
    encoder.encode_kg_queries(["r"], texts=["a"], images=np.zeros((1, 32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="2 heads but 1 relations"):
    encoder.encode_kg_queries(["r"], texts=["a", "b"])
  captions = config_lib.get_config("knowledge_clip", "smoke,knowledge_clip.mode='captions'")
  assert kc.eval_encoder(None, None, _Tok(), captions, image_size=32) is None
  assert kc.eval_encoder(model, params, None, config, image_size=32) is None
