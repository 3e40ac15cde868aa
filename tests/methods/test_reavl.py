"""REAVL end to end on a tiny prepared world: the gold entities in the records, the
index held on device and its memory in the train state, training through the one
trainer, the evaluation encoder's answers, links and recall, and retrieval off."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import reavl as reavl_config
from vlkg import api, methods, train
from vlkg import config as config_lib
from vlkg.data import input_pipeline, kg_table
from vlkg.data.world import knowledge, knowledge_queries
from vlkg.evaluators import encoder as encoder_lib
from vlkg.methods import reavl, reavl_eval
from vlkg.methods import reavl_index as index_lib
import tiny_world

SMALL = (",total_steps=8,log_every_steps=1,checkpoint_every_steps=8,input.batch_size=8,"
         "optim.warmup_steps=0,reavl.fusion_depth=1,reavl.item_tokens=3,reavl.k=4,"
         "reavl.refresh_every=4")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  config, directory = tiny_world.prepared(reavl_config, root, SMALL + ",evals={}")
  return root, config, directory


def test_the_records_carry_gold_entities_of_the_index(setup):
  _, config, directory = setup
  assert methods.batch_keys(config) == ("image", "text", "reavl_gold")
  index, tokenizer = reavl.dataset_index(config)
  batch = next(input_pipeline.train_iterator(directory, batch_size=8, seed=0,
                                             fields=methods.batch_keys(config),
                                             shuffle_buffer=16))
  rows = np.asarray(index_lib.gold_rows(batch["reavl_gold"], jax.tree.map(np.asarray, index)))
  table = kg_table.read(directory)
  names = table.entity_text[~table.is_image]
  graph = knowledge.build_knowledge_graph()
  for text, row in zip(batch["text"], rows):
    words = tokenizer.decode(text[None])[0]
    found = [names[r] for r in row if r >= 0]
    # Every caption names a concept of the world's knowledge graph; its gold
    # entities are the canonical concepts of its scene graph, which the caption may
    # say with a synonym ("big" for "large").
    assert found and any(f in words for f in found), (words, found)
    assert all(knowledge_queries.resolve(graph, f) == f for f in found), found


@pytest.mark.devices(8)
def test_training_through_the_trainer(setup):
  root, config, directory = setup
  trainer = train.Trainer(config)
  assert isinstance(trainer.update_step, train.BoundStep)
  assert set(trainer.abstract_state["memory"]) == {"keys", "triples", "relations", "at"}
  assert trainer.abstract_state["memory"]["keys"].shape[0] % jax.device_count() == 0
  workdir = os.path.join(root, "run")
  tuned = reavl_config.get_config(
      tiny_world.TINY + f",data_dir='{root}'" + SMALL +
      ",select_metric='',reavl.gate_weight=0.5,eval_every_steps=0,"
      "evals={'recall': {'type': 'knowledge_recall', 'split': 'test', 'ns': (1, 4)}}")
  last = train.train_and_evaluate(tuned, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f if '"loss"' in line]
  losses = [m["loss"] for m in logged]
  assert len(losses) == 8 and all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  for key in ("clip", "retriever", "mlm", "mem", "itm", "lp", "gate", "gate_relevant",
              "gate_other", "recall@1", "recall@4"):
    assert np.isfinite(last[key]), key
  assert 0 < last["gate_mean"] < 1
  assert last["reavl/n_items"] > 0 and 0 <= last["reavl/recall@4"] <= 1
  assert last["reavl/recall@1"] <= last["reavl/recall@4"]

  # The evaluation encoder of the exported params.
  model = api.load(workdir, dataset_dir=directory)
  images = np.zeros((2, 64, 64, 3), np.uint8)
  images[1, 16:48, 16:48] = (200, 30, 30)
  scores = model.answer_scores(images, ["what color is it?", "how many corners?"],
                               ["red", "four", "blue"])
  assert scores.shape == (2, 3) and np.isfinite(scores).all()
  # The VQA head's features: the fusion's output, then the two towers' embeddings.
  questions = ["what color is it?", "how many corners?"]
  feats = model.question_features(images, questions)
  d = model.encode_images(images).shape[1]
  assert feats.shape == (2, 3 * d) and np.isfinite(feats).all()
  np.testing.assert_allclose(feats[:, d:2 * d], model.encode_images(images), atol=1e-5)
  np.testing.assert_allclose(feats[:, 2 * d:], model.encode_texts(questions), atol=1e-5)
  # Entity linking: by default as every dual encoder links (no scorer of its own);
  # reavl.eval_link_scorer="retriever" scores them against the retriever's query.
  assert not encoder_lib.has_link_scores(model)
  linking = config_lib.load_run_config(workdir)
  linking.reavl.eval_link_scorer = "retriever"
  linker = api.load(workdir, dataset_dir=directory, config=linking)
  candidates = [["red: a color", "blue: a color"], ["circle: a shape"]]
  links = linker.link_scores(images, ["a red shape", "a shape"], ["red", "shape"],
                             candidates)
  assert [s.shape for s in links] == [(2,), (1,)]
  query = linker._queries(images, ["red a red shape", "shape a shape"])
  np.testing.assert_allclose(links[0], linker.encode_texts(candidates[0]) @ query[0],
                             rtol=1e-5, atol=1e-6)
  found = model.retrieve(images, model.tokenizer.encode(["red", "square"]), 4)
  assert found.shape == (2, 4) and len(set(found[0])) == 4
  # Distractors: the same call with all items random scores otherwise.
  model.distractors = 1.0
  moved = model.question_features(images, questions)
  assert not np.allclose(moved[:, :d], feats[:, :d])
  np.testing.assert_allclose(moved[:, d:], feats[:, d:], atol=1e-6)
  # ... but not the features that fit the VQA head.
  np.testing.assert_allclose(model.question_features(images, questions, fit=True),
                             feats, atol=1e-6)
  assert not np.allclose(model.answer_scores(images, ["what color is it?"] * 2,
                                             ["red", "four", "blue"]), scores)
  # The lowest-ranked half of the slots, and emptied slots: every slot emptied
  # gives the features of retrieval off (k = 0) on the same params.
  model.distractor_slots, model.distractor_fill = "lowest", "random"
  model.distractors = 0.5
  slots = model._distractors(3)
  k = model.k
  assert (slots[:, :k - k // 2] == reavl_eval.KEEP).all() and (slots[:, k - k // 2:] >= 0).all()
  model.distractor_fill, model.distractors = "empty", 1.0
  assert (model._distractors(2) == reavl_eval.EMPTY).all()
  retrieval_off = config_lib.load_run_config(workdir)
  retrieval_off.reavl.k = 0
  np.testing.assert_allclose(
      model.question_features(images, questions),
      api.load(workdir, dataset_dir=directory, config=retrieval_off).question_features(
          images, questions), atol=1e-5)
  # An evaluation config (an evaluation-only run's) builds the encoder instead.
  tested = config_lib.load_run_config(workdir)
  tested.reavl.eval_distractors = 0.5
  assert api.load(workdir, dataset_dir=directory, config=tested).distractors == 0.5
  assert api.load(workdir, dataset_dir=directory).distractors == 0.0


def test_retrieval_off_still_runs(setup, step_inputs):
  """k = 0: the same parameters as with retrieval on, and the retrieval terms off."""
  _, params, _, _, batch = step_inputs
  off = reavl_config.get_config(
      tiny_world.TINY + f",data_dir='{setup[0]}'" + SMALL + ",reavl.k=0,evals={}")
  off = train.resolve_config(off, setup[2])
  model = reavl.build_model(off)
  assert jax.tree.map(np.shape, methods.abstract_params(model, off)) == jax.tree.map(
      np.shape, params)
  loss, metrics = jax.jit(reavl.make_loss_fn(model, off))(params, batch,
                                                         jax.random.key(1), 0)
  assert np.isfinite(float(loss))
  assert float(metrics["mem"]) == float(metrics["lp"]) == float(metrics["retriever"]) == 0
  assert float(metrics["gate_mean"]) == 0.0 and float(metrics["itm"]) > 0


def test_key_gradients_and_one_hop_gold_change_only_the_retriever_term(setup, step_inputs):
  _, config, directory = setup
  base = train.resolve_config(config, directory)
  model, params, _, _, batch = step_inputs

  def metrics(**options):
    loss_fn = reavl.make_loss_fn(model, _with(base, **options))
    return lambda p, x: loss_fn(p, x, jax.random.key(1), 0)[1]

  def retriever_term(**options):
    """The retriever term and, with its gradient, the token embedding's."""
    found = metrics(**options)

    def term(p, x):
      value, grad = jax.value_and_grad(lambda p: found(p, x)["retriever"])(p)
      return value, grad["txt"]["token_embedding"]["embedding"]
    return term

  programs = (metrics(retriever_key_grad=False, gold_hops=0),
              retriever_term(retriever_key_grad=False, gold_hops=0),
              retriever_term(retriever_key_grad=True, gold_hops=0),
              metrics(retriever_key_grad=False, gold_hops=1),
              metrics(retriever_key_grad=False, gold_hops=1, hop_ranking="joint"))
  # Every variant in one program: they share all but the retriever term.
  variants = jax.jit(lambda p, x: tuple(f(p, x) for f in programs))

  plain, (plain_term, g_plain), (fresh_term, g_fresh), hops, joint = variants(params, batch)
  assert float(plain_term) == pytest.approx(float(plain["retriever"]), rel=1e-5)
  # At step 0 the memory is computed from the same params: the same keys, so the
  # same retriever loss; with key gradients the text tower's token embedding also
  # learns from it (the entity names pass through it).
  assert float(fresh_term) == pytest.approx(float(plain["retriever"]), rel=1e-5)
  assert np.abs(np.asarray(g_fresh) - np.asarray(g_plain)).max() > 1e-6
  # More positives: a different retriever loss, the same other terms and recall.
  assert float(hops["retriever"]) != pytest.approx(float(plain["retriever"]), rel=1e-4)
  # Concepts ranked below the caption's own entities (the default) or with them.
  assert float(joint["retriever"]) != pytest.approx(float(hops["retriever"]), rel=1e-4)
  for name in ("clip", "itm", "mlm", "recall@1", "recall@5"):
    assert float(hops[name]) == pytest.approx(float(plain[name]), rel=1e-5)
    assert float(joint[name]) == pytest.approx(float(plain[name]), rel=1e-5)


def _with(config, **reavl_options):
  config = config.copy_and_resolve_references()
  config.reavl.update(reavl_options)
  return config


@pytest.fixture(scope="module")
def step_inputs(setup):
  """(model, params, memory, index constants, normalised batch) of the tiny world."""
  from vlkg import preprocess
  _, config, directory = setup
  config = train.resolve_config(config, directory)
  model = reavl.build_model(config)
  params = methods.init_params(model, config, jax.random.key(0))
  index, _ = reavl.dataset_index(config)
  c = jax.tree.map(jnp.asarray, index)
  memory = jax.jit(lambda p, c: model.apply({"params": p}, c, 0,
                                            method=index_lib.compute_memory))(params, c)
  batch = next(input_pipeline.train_iterator(directory, batch_size=8, seed=0,
                                             fields=methods.batch_keys(config),
                                             shuffle_buffer=16))
  return model, params, memory, c, dict(batch, image=preprocess.normalize_images(
      batch["image"]))


@pytest.fixture(scope="module")
def forward(step_inputs):
  """REAVL's training forward pass on a batch of the tiny world, by its options:
  ``forward(**options) -> (out, b)``, each set of options compiled once."""
  from vlkg.methods import reavl_step
  model, params, memory, c, batch = step_inputs
  b, length = batch["text"].shape
  search = reavl_step.make_search(None, False, False, 0)
  outs = {}

  def run(**kw):
    key = tuple(sorted(kw.items()))
    if key not in outs:
      apply = jax.jit(lambda *args: model.apply(
          *args, search=search, pad_id=0, bos_id=None, image_pool=2, mlm_prob=0.15,
          mlm_max=8, method=reavl_step.forward, **{"k": 4, **kw}))
      k = kw.get("k", 4) if kw.get("distractors") else 0
      outs[key] = apply({"params": params}, batch["image"], batch["text"],
                        batch[index_lib.GOLD], memory, c,
                        reavl._draws(jax.random.key(1), b, length, k))
    return outs[key], b

  return run


def test_one_negative_per_pair_fuses_one_of_the_two_kinds(forward):
  """With one negative per pair, even pairs fuse the image with its negative
  caption and odd pairs the caption with its negative image: the same fused
  inputs as those rows of ALBEF's two kinds (compared with retrieval off, where
  the item masks' draws do not enter), B negatives instead of 2B."""
  both, b = forward(k=0)
  one, _ = forward(k=0, negatives_per_pair=1)
  assert both["itm_logits"].shape == (3 * b, 2) and one["itm_logits"].shape == (2 * b, 2)
  np.testing.assert_array_equal(one["itm_labels"], [1] * b + [0] * b)
  caption_swapped = np.arange(b) % 2 == 0
  want = np.where(caption_swapped[:, None], both["itm_logits"][b:2 * b],
                  both["itm_logits"][2 * b:])
  np.testing.assert_allclose(one["itm_logits"][:b], both["itm_logits"][:b], atol=1e-5)
  np.testing.assert_allclose(one["itm_logits"][b:], want, atol=1e-5)
  np.testing.assert_array_equal(
      one["itm_valid"][b:], np.where(caption_swapped, both["itm_valid"][b:2 * b],
                                     both["itm_valid"][2 * b:]))


def test_negative_pairs_carry_the_same_item_masks_as_positives(forward):
  """MEM and LP hide items on every pair: no mask tells the matching head which
  of the 3B fused pairs (B positives, 2B hard negatives) match."""
  from vlkg.methods import reavl_step
  out, b = forward()
  types = np.asarray(out["item_types"])
  assert types.shape[:2] == (3 * b, 4)
  masked_entity = (types[:, :, 0] == reavl_step.MASKED_ENTITY).sum(1)
  masked_link = np.isin(types[:, :, 1:], [reavl_step.MASKED_OUT,
                                          reavl_step.MASKED_IN]).sum((1, 2))
  np.testing.assert_array_equal(masked_entity, np.ones(3 * b))
  assert set(masked_link) <= {0, 1} and masked_link[b:].sum() > 0
  # The losses read the positives' masks.
  assert out["mem_slot"].shape == out["lp_slot"].shape == (b,)
  np.testing.assert_array_equal(types[np.arange(b), out["mem_slot"], 0],
                                reavl_step.MASKED_ENTITY)


def test_a_masked_query_hides_the_masked_words_from_the_retriever(step_inputs, forward):
  """``reavl.query_text="masked"``: the retriever's query (its loss's, and the
  search's) reads the caption with the words masked language modelling hides, so
  their entities must be found through the image; "caption" reads it whole. Both
  against the query recomputed from the towers; nothing else of the pass moves."""
  model, params, _, _, batch = step_inputs
  whole, b = forward()
  masked, _ = forward(query_text="masked")
  texts = batch["text"]
  hidden = np.zeros(texts.shape, bool)
  rows = np.repeat(np.arange(b)[:, None], masked["mlm_positions"].shape[1], 1)
  hidden[rows[masked["mlm_valid"]], np.asarray(masked["mlm_positions"])[
      np.asarray(masked["mlm_valid"])]] = True
  assert hidden.any(1).all()  # every caption hides at least one word
  apply = lambda method, *a, **kw: model.apply({"params": params}, *a, method=method, **kw)
  zimg = apply(type(model).embed_images, batch["image"])
  want_whole = apply(type(model).query, zimg, apply(type(model).embed_texts, texts))
  want_masked = apply(type(model).query, zimg, apply(
      type(model).embed_texts, texts, token_mask=jnp.asarray(~hidden)))
  np.testing.assert_allclose(whole["query"], want_whole, atol=2e-5)
  np.testing.assert_allclose(masked["query"], want_masked, atol=2e-5)
  assert np.abs(np.asarray(want_masked) - np.asarray(want_whole)).max() > 1e-3
  np.testing.assert_array_equal(masked["mlm_positions"], whole["mlm_positions"])
  for key in ("zimg", "ztxt", "mlm_targets"):
    np.testing.assert_allclose(masked[key], whole[key], atol=1e-6, err_msg=key)


def test_the_item_table_fuses_what_each_pairs_copies_fuse(step_inputs, forward):
  """The fusion's items read from a table of the distinct tokens (the world's
  default) give the outputs of each pair's own copies of its items, masks and
  training distractors included; and every item type has an embedding of its
  own."""
  from vlkg.models import knowledge_augmented
  table, b = forward(item_table=True, distractors=0.5)
  copies, _ = forward(item_table=False, distractors=0.5)
  for key in ("itm_logits", "mlm_logits", "mem_pred", "lp_pred", "gates"):
    np.testing.assert_allclose(table[key], copies[key], rtol=1e-4, atol=1e-5,
                               err_msg=key)
  types = np.asarray(table["item_types"])
  assert types.max() < knowledge_augmented.ITEM_TYPES
  embedding = np.asarray(step_inputs[1]["reavl"]["item_type"])
  assert embedding.shape[0] == knowledge_augmented.ITEM_TYPES
  assert len({tuple(row) for row in embedding.round(6)}) == knowledge_augmented.ITEM_TYPES


def test_training_distractors_replace_the_drawn_slots_with_drawn_entities(step_inputs,
                                                                         forward):
  """``reavl.train_distractors``: where a slot's draw is under the share, the item
  is the valid entity of rank floor(u * V) (numpy below), except at the masked
  entity's and the masked link's slots; every other slot keeps the top-k item,
  and the other draws do not change. (Through the item table: the pass that the
  item-table test compiles.)"""
  c = step_inputs[3]
  clean, b = forward()
  noisy, _ = forward(item_table=True, distractors=0.5)
  length = step_inputs[4]["text"].shape[1]
  draws = jax.tree.map(np.asarray, reavl._draws(jax.random.key(1), b, length, 4))
  mem_slot, lp_slot = np.asarray(noisy["mem_slot"]), np.asarray(noisy["lp_slot"])
  np.testing.assert_array_equal(mem_slot, clean["mem_slot"])
  np.testing.assert_array_equal(lp_slot, clean["lp_slot"])
  entities = np.flatnonzero(np.asarray(c["valid"]))
  u = draws["distract_entity"][:b]
  drawn = entities[np.floor(u * np.float32(len(entities))).astype(int)]
  slot = np.arange(4)[None]
  replace = ((draws["distract"][:b] < 0.5) & (slot != mem_slot[:, None])
             & (slot != lp_slot[:, None]))
  assert 0 < replace.sum() < replace.size
  np.testing.assert_array_equal(noisy["item_rows"],
                                np.where(replace, drawn, clean["item_rows"]))
  # The towers and the retrieval before the replacement are the clean pass's.
  np.testing.assert_array_equal(noisy["retrieved"], clean["retrieved"])


@pytest.mark.parametrize("bad, key", [("reavl.itm_negatives_per_pair=3", "itm_negatives_per_pair"),
                                      ("reavl.itm_negatives='all'", "itm_negatives"),
                                      ("reavl.eval_distractors=1.5", "eval_distractors"),
                                      ("reavl.train_distractors=-0.1", "train_distractors"),
                                      ("reavl.hop_ranking='first'", "hop_ranking"),
                                      ("reavl.query_text='question'", "query_text"),
                                      ("reavl.eval_distractor_slots='top'",
                                       "eval_distractor_slots"),
                                      ("reavl.eval_distractor_fill='zeros'",
                                       "eval_distractor_fill")])
def test_bad_choices_name_their_key(bad, key):
  config = reavl_config.get_config(tiny_world.TINY + "," + bad)
  with pytest.raises(ValueError, match=f"config.reavl.{key}"):
    reavl._cfg(config)


def test_the_gate_term_reads_each_items_relevance(step_inputs, forward):
  """The gate's relevance term (``reavl.gate_weight``): its targets, counted by
  hand from the retrieved rows and each caption's gold entities and concepts, and
  its loss and metrics from the gates the fusion used."""
  c = step_inputs[3]
  out, b = forward()
  gold = np.asarray(out["gold"])
  concepts = np.asarray(c["concepts"])
  rows, open_ = np.asarray(out["item_rows"]), np.asarray(out["item_open"])
  assert rows.shape == open_.shape == (b, 4)
  # The masked entity's slot is never scored.
  assert not open_[np.arange(b), np.asarray(out["mem_slot"])].any()
  term, metrics = reavl._gate_terms(out, *reavl._positives(
      out["gold"], c, {"gold_hops": 1}, int(c["valid"].shape[0])))
  relevant = np.zeros((b, 4), bool)
  for i in range(b):
    own = {g for g in gold[i] if g >= 0}
    own |= {h for g in own for h in concepts[g] if h >= 0}
    relevant[i] = [r in own for r in rows[i]]
  assert relevant[open_].any() and (~relevant[open_]).any()
  x = np.asarray(out["gate_logits"], np.float64)
  bce = np.logaddexp(0, x) - relevant * x
  np.testing.assert_allclose(float(term), bce[open_].mean(), rtol=1e-5)
  gates = np.asarray(out["gates"])[:b]
  np.testing.assert_allclose(gates, 1 / (1 + np.exp(-x)), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["gate_relevant"]),
                             gates[open_ & relevant].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["gate_other"]),
                             gates[open_ & ~relevant].mean(), rtol=1e-5)
  assert float(metrics["gate_acc"]) == pytest.approx(
      ((x > 0) == relevant)[open_].mean())
