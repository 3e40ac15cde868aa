"""The trainer end to end at smoke size: 1 vs 8 devices, workdir/config checks,
optimizer masks, sharding rules and non-finite aborts (interruptions and resume:
tests/test_interruptions.py)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import clip
from vlkg import checkpoint, optim, sharding, train
from vlkg.data import prepare
from tests import trainer_world

SMOKE = trainer_world.SMOKE


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return trainer_world.prepared(tmp_path_factory)


config = trainer_world.config


@pytest.mark.devices(8)
def test_same_global_batch_same_loss_on_1_and_8_devices(data_dir):
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8),
           "text": rng.integers(4, 50, (16, 32)).astype(np.int32)}
  losses, params = [], []
  for n in (1, 8):
    cfg_n = train.resolve_config(config(data_dir), prepare.ensure_prepared(config(data_dir)))
    t = train.Trainer(cfg_n, devices=jax.devices()[:n])
    state = t.init_state()
    state, metrics = t.update_step(state, sharding.global_batch(batch, t.mesh))
    losses.append(float(metrics["loss"]))
    params.append(jax.device_get(state["params"]))
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), *params)


def test_workdir_with_other_shapes_is_refused(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config(data_dir, ",total_steps=2,evals={}"), workdir)
  before = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(ValueError, match="model.image.width: 32 -> 48"):
    train.train_and_evaluate(config(data_dir, ",total_steps=2,evals={},model.image.width=48"),
                             workdir)
  assert open(os.path.join(workdir, "config.json")).read() == before
  # A change that keeps shapes (more steps) resumes.
  train.train_and_evaluate(config(data_dir, ",total_steps=4,evals={}"), workdir)
  assert checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 read_only=True).latest_step() == 4


def test_unknown_config_key_is_an_error():
  with pytest.raises(KeyError, match="model.image.no_such_key"):
    clip.get_config("smoke,model.image.no_such_key=1")


def test_schedule_warmup_and_cosine_by_hand(data_dir):
  cfg = config(data_dir, ",total_steps=100,optim.warmup_steps=10,optim.lr=0.5,"
                         "optim.end_lr_factor=0.1")
  s = optim.schedule(cfg)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(0.25)
  assert float(s(10)) == pytest.approx(0.5)
  # Halfway through the decay, cosine is at the mean of peak and end.
  assert float(s(55)) == pytest.approx(0.5 * (0.5 + 0.05), rel=1e-5)
  assert float(s(100)) == pytest.approx(0.05)


def test_weight_decay_mask_and_frozen_params(data_dir):
  cfg = config(data_dir, ",optim.frozen=('^img/',),optim.grad_clip_norm=0.0,"
                         "optim.warmup_steps=0,optim.lr=0.01,optim.weight_decay=0.1")
  params = {"img": {"w": jnp.ones((2, 2))}, "txt": {"kernel": jnp.ones((2, 2)),
                                                     "bias": jnp.ones((2,))}}
  tx = optim.make_optimizer(cfg, params)
  grads = jax.tree.map(jnp.zeros_like, params)  # zero gradients: only decay moves
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(jnp.abs(updates["img"]["w"]).max()) == 0.0  # frozen
  assert float(jnp.abs(updates["txt"]["bias"]).max()) == 0.0  # no decay on biases
  # AdamW with zero gradients moves only by the decoupled decay: -lr * wd * w.
  np.testing.assert_allclose(updates["txt"]["kernel"], -0.01 * 0.1, rtol=1e-6)


@pytest.mark.devices(8)
def test_sharding_rules_and_fsdp():
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 4)])
  tree = {"a": {"kernel": jax.ShapeDtypeStruct((6, 8), jnp.float32)},
          "b": jax.ShapeDtypeStruct((3,), jnp.float32)}
  sh = sharding.tree_shardings(tree, [(r"a/kernel", "fsdp")], mesh)
  assert sh["a"]["kernel"].spec == jax.sharding.PartitionSpec(None, "fsdp")
  assert sh["b"].spec == jax.sharding.PartitionSpec()
  sh = sharding.tree_shardings(tree, [(r"kernel$", (None, "data"))], mesh)
  assert sh["a"]["kernel"].spec == jax.sharding.PartitionSpec(None, "data")
  with pytest.raises(ValueError, match="does not divide"):
    sharding.make_mesh([("data", 3), ("fsdp", -1)])


def test_non_finite_loss_skips_the_update_and_aborts(data_dir, tmp_path, monkeypatch):
  from vlkg.methods import clip as clip_method
  real = clip_method.make_loss_fn

  def poisoned(model, cfg):
    loss_fn = real(model, cfg)

    def f(params, batch, rng, step):
      loss, m = loss_fn(params, batch, rng, step)
      return jnp.where(step >= 3, jnp.nan, loss), m
    return f

  monkeypatch.setattr(clip_method, "make_loss_fn", poisoned)
  with pytest.raises(train.NonFiniteError, match="non-finite loss at step 4"):
    train.train_and_evaluate(config(data_dir, ",total_steps=8,evals={}"),
                             str(tmp_path / "nan"))


def test_model_init_and_resume_precedence(data_dir, tmp_path):
  """model_init starts a new run from params.npz at step 0; resume continues another
  run's full state; a workdir's own checkpoint beats both."""
  base = str(tmp_path / "base")
  train.train_and_evaluate(config(data_dir, ",total_steps=4,evals={}"), base)
  base_params = dict(np.load(os.path.join(base, "params.npz")))

  init = str(tmp_path / "init")
  cfg = config(data_dir, f",total_steps=0,evals={{}},"
                         f"model_init='{os.path.join(base, 'params.npz')}'")
  train.train_and_evaluate(cfg, init)
  got = np.load(os.path.join(init, "params.npz"))
  for k in base_params:  # a run of 0 steps writes the params it starts from
    np.testing.assert_allclose(got[k], base_params[k], atol=1e-7, err_msg=k)

  resumed = str(tmp_path / "resumed")
  cfg = config(data_dir, f",total_steps=6,evals={{}},resume='{os.path.join(base, 'checkpoints')}'")
  train.train_and_evaluate(cfg, resumed)
  steps = [json.loads(l)["step"] for l in open(os.path.join(resumed, "metrics.jsonl"))]
  assert steps[0] == 6  # continued from the other run's step 4, logged at 6
  # Its own checkpoint now wins over `resume`.
  assert checkpoint.resolve_init(resumed, os.path.join(base, "checkpoints"), "")[0] == "workdir"


def test_structure_clip_starts_from_clip_params(data_dir, tmp_path):
  """model_init from a CLIP run: the shared towers are loaded, the KEE is new.

  Both runs stop at step 0 (their params are written, no step is compiled); the
  CLIP run's other seed makes its towers differ from Structure-CLIP's own init."""
  from configs import structure_clip
  clip_run = str(tmp_path / "clip")
  train.train_and_evaluate(config(data_dir, ",total_steps=0,evals={},seed=1"), clip_run)
  clip_params = dict(np.load(os.path.join(clip_run, "params.npz")))
  sc = structure_clip.get_config(
      SMOKE + f",data_dir='{data_dir}',total_steps=0,evals={{}},"
      f"model_init='{os.path.join(clip_run, 'params.npz')}'")
  sc_run = str(tmp_path / "sc")
  train.train_and_evaluate(sc, sc_run)
  got = np.load(os.path.join(sc_run, "params.npz"))
  assert any(k.startswith("kee/") for k in got.files)
  for k, v in clip_params.items():
    np.testing.assert_allclose(got[k], v, atol=1e-7, err_msg=k)
  with pytest.raises(checkpoint.ParamsMismatchError, match="kee/"):
    train.train_and_evaluate(
        structure_clip.get_config(
            SMOKE + f",data_dir='{data_dir}',total_steps=0,evals={{}},model_init_new='',"
            f"model_init='{os.path.join(clip_run, 'params.npz')}'"), str(tmp_path / "sc2"))


def test_model_init_with_another_activation_is_refused(data_dir, tmp_path):
  """Same shapes, other function: exact-GELU weights into a QuickGELU model."""
  run = tmp_path / "base"
  run.mkdir()
  theirs = json.loads(config(data_dir).to_json())
  del theirs["model"]["text"]["mask_pad"]  # a run from before the key existed: True
  (run / "config.json").write_text(json.dumps(theirs))
  params = str(run / "params.npz")
  train.check_model_init_config(params, config(data_dir))  # the same model: fine
  train.check_model_init_config(str(tmp_path / "elsewhere" / "params.npz"),
                                config(data_dir))  # no config.json beside: no check
  with pytest.raises(ValueError, match=r"model\.image\.act='gelu'.*model\.image\.act='quick_gelu'"):
    train.check_model_init_config(params, config(data_dir, ",model.image.act='quick_gelu'"))
  with pytest.raises(ValueError, match=r"model\.text\.mask_pad=True"):
    train.check_model_init_config(params, config(data_dir, ",model.text.mask_pad=False"))


def test_text_tower_and_tokenizer_must_agree(data_dir):
  """A model whose EOT id or vocabulary is not the dataset tokenizer's would pool
  at a token that never appears, or index outside its embedding."""
  directory = prepare.dataset_dir(config(data_dir))
  with pytest.raises(ValueError, match="eot_id=49407"):
    train.resolve_config(config(data_dir, ",model.text.eot_id=49407"), directory)
  with pytest.raises(ValueError, match="vocab_size=49408"):
    train.resolve_config(config(data_dir, ",model.text.vocab_size=49408"), directory)
  resolved = train.resolve_config(config(data_dir), directory)
  assert resolved.model.text.vocab_size > 0


def test_durations_in_epochs_and_examples(data_dir, tmp_path):
  """256 training scenes at batch 16: an epoch is 16 steps."""
  workdir = str(tmp_path / "run")
  cfg = config(data_dir, ",evals={},total_steps=None,total_epochs=0.25,"
                         "log_every_steps=None,log_every_examples=32,"
                         "checkpoint_every_steps=None,checkpoint_every_epochs=0.125")
  train.train_and_evaluate(cfg, workdir)
  steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert steps == [2, 4]
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert (saved["total_steps"], saved["total_epochs"]) == (4, None)
  assert (saved["log_every_steps"], saved["log_every_examples"]) == (2, None)
  assert saved["checkpoint_every_steps"] == 2
  assert checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 read_only=True).latest_step() == 4
  # Resuming with the same durations finds the same config: nothing is refused.
  train.train_and_evaluate(cfg, workdir)
  with pytest.raises(ValueError, match="total_steps=12 and total_epochs=0.25"):
    train.train_and_evaluate(config(data_dir, ",total_epochs=0.25"), workdir)


def test_eval_encoder_is_built_once_and_follows_the_params(data_dir, tmp_path, monkeypatch):
  """One encoder per run, compiled once; each evaluation sees the current params."""
  from vlkg import evaluators
  built, seen = [], []
  real_make, real_run = train.api.make_encoder, evaluators.run

  def make_encoder(*args, **kwargs):
    built.append(real_make(*args, **kwargs))
    return built[-1]

  def run(cfg, encoder, dataset_dir):
    seen.append(np.asarray(jax.device_get(encoder.params["logit_scale"])).copy())
    return real_run(cfg, encoder, dataset_dir)

  monkeypatch.setattr(train.api, "make_encoder", make_encoder)
  monkeypatch.setattr(train.evaluators, "run", run)
  cfg = config(data_dir, ",total_steps=2,eval_every_steps=1,"
                         "evals={'r': {'type': 'retrieval', 'split': 'val'}}")
  train.train_and_evaluate(cfg, str(tmp_path / "run"))
  assert len(built) == 1 and len(seen) == 3  # evaluations at steps 0, 1 and 2
  assert not np.array_equal(seen[0], seen[2])
  assert built[0]._embed_images._cache_size() == 1  # pylint: disable=protected-access
  assert built[0].params is None  # not held between evaluations


def test_training_stages_read_plain_scenes_first_only_on_the_world():
  from configs import clip
  from vlkg import errors
  from vlkg.data import training_splits
  assert training_splits.stages(clip.get_config("smoke")) == [("train", None)]
  c = clip.get_config("smoke,world.num_plain=64,world.plain_steps=5")
  assert training_splits.stages(c) == [("plain", 5), ("train", None)]
  base = clip.get_config("base")
  assert training_splits.stages(base) == [("plain", 600), ("train", None)]
  with pytest.raises(errors.ConfigError, match="world.num_plain is 0"):
    training_splits.stages(clip.get_config("smoke,world.plain_steps=5"))
  assert training_splits.review(c) is None
  assert training_splits.review(clip.get_config(
      "smoke,world.num_plain=64,world.plain_steps=5,world.plain_every=4")) == ("plain", 4)
  with pytest.raises(errors.ConfigError, match="world.num_plain is 0"):
    training_splits.review(clip.get_config("smoke,world.plain_every=4"))


def test_a_loss_memory_is_refreshed_inside_the_step_and_kept_in_the_state():
  """``loss_fn.init_memory`` / ``refresh_memory``: the step refreshes the memory
  from the params before the loss, which reads it; the state carries it on."""
  import optax

  def loss_fn(params, batch, rng, step, memory):
    del rng, step
    return jnp.sum((params["w"] - batch["image"].mean()) ** 2) + 0 * memory["w"], {
        "seen": memory["w"], "refreshed": memory["at"]}

  def refresh(params, memory, step):
    due = step % 2 == 0
    return {"w": jnp.where(due, params["w"], memory["w"]),
            "at": jnp.where(due, step, memory["at"])}

  loss_fn.init_memory = lambda: {"w": jnp.zeros(()), "at": jnp.full((), -1)}
  loss_fn.refresh_memory = refresh
  tx = optax.sgd(0.1)
  step_fn = jax.jit(train.make_update_step(loss_fn, tx, jax.random.key(0)))
  params = {"w": jnp.ones(())}
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
           "nonfinite_step": jnp.full((), -1, jnp.int32), "memory": loss_fn.init_memory()}
  batch = {"image": np.full((1, 2, 2, 3), 255, np.uint8), "text": np.zeros((1, 4), np.int32)}
  seen, ws = [], []
  for _ in range(4):
    ws.append(float(state["params"]["w"]))
    state, metrics = step_fn(state, batch)
    seen.append((float(metrics["seen"]), int(metrics["refreshed"])))
  # Steps 0 and 2 refresh from the params they start with; 1 and 3 read the last.
  assert seen == [(ws[0], 0), (ws[0], 0), (ws[2], 2), (ws[2], 2)]
  assert int(state["memory"]["at"]) == 2 and ws[2] != ws[0]

