"""THE trainer: one loop for every method; the method supplies the model and the loss.

    state = {"step", "params", "opt_state", "nonfinite_step"}

``update_step`` is a single jitted function with the state donated and explicit
shardings in and out. A loss function may carry ``constants``: arrays it reads but
does not train (Knowledge-CLIP's frozen teacher and its knowledge-graph table).
They are put on the devices once, replicated, and passed to the step as an
argument, so that they are neither traced into the program as literals nor sent
again each step (`BoundStep`). A loss function may also carry a memory: arrays
derived from the params that it reads without training them (REAVL's index of
entity embeddings), made by ``loss_fn.init_memory()`` and kept in the state as
``state["memory"]`` (checkpointed, and sharded by ``config.sharding_rules`` like
the rest); ``loss_fn.refresh_memory(params, memory, step[, constants])`` runs
inside the step before the loss, which gets its result as ``memory=`` (the method
decides when it recomputes, e.g. every N steps under ``lax.cond``, so a refresh
needs no host round trip). It reads nothing from the host: randomness is
``fold_in(rng, step)``, and a non-finite loss or gradient norm leaves the state
untouched and records the step in ``nonfinite_step``, which the host checks at each
log step and turns into an error that names the step and the metric. The last good
checkpoint is therefore never overwritten by a diverged state.

Resume precedence (DESIGN.md): the workdir's latest checkpoint, then
``config.resume``, then ``config.model_init``, then scratch. The data stream
continues at the restored step (``input_pipeline.train_iterator(start_step=...)``).

The config a run trains with is ``resolve_config``'s: the given config with what
the prepared dataset decides filled in (vocabulary size, durations in steps, the
evaluators that apply to the data). That is what ``config.json`` records, and what
the method, the optimizer and the loop read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import traverse_util

from vlkg import api, checkpoint, config as config_lib, data_dependency, errors
from vlkg import evaluators, methods
from vlkg import metrics as metrics_lib, optim, preemption, preprocess, sharding
from vlkg import files, workdir_lock
from vlkg.data import input_pipeline, prepare, records, training_splits
from vlkg.data import tokenizer as tok_lib
from vlkg.files import atomic_write

CONFIG_FILE = "config.json"
# Config keys whose change alters parameter shapes or the data a run was trained on;
# a workdir with different values is refused rather than silently reused.
SHAPE_KEYS = ("method", "model", "world", "input.data", "input.text_len")


class NonFiniteError(FloatingPointError):
  pass


def resolve_config(config, dataset_dir: str) -> ml_collections.ConfigDict:
  """A copy of ``config`` with what the prepared dataset decides filled in.

  * ``model.text.vocab_size`` (0: the tokenizer's), checked against the tokenizer;
  * every duration in steps (``vlkg.config.durations``; epochs from the size of
    the ``train`` split), so that ``config.total_steps`` etc. are set;
  * ``evals`` and ``select_metric`` for the data (``vlkg.evaluators.for_data``).
  """
  manifest = records.read_manifest(dataset_dir)
  resolved = ml_collections.ConfigDict(config.to_dict())
  tokenizer = tok_lib.from_description(manifest["tokenizer"], base_dir=dataset_dir)
  text = resolved.model.text
  if not text.vocab_size:
    text.vocab_size = tokenizer.vocab_size
  elif text.vocab_size != tokenizer.vocab_size:
    raise ValueError(
        f"config.model.text.vocab_size={text.vocab_size}, but the dataset {dataset_dir} "
        f"was tokenized with {tokenizer.vocab_size} ids ({manifest['tokenizer']['type']}); "
        "set config.input.tokenizer (or model_init) to the model's tokenizer")
  if text.pool == "eot" and text.eot_id is not None and text.eot_id != tokenizer.eos_id:
    raise ValueError(
        f"config.model.text.eot_id={text.eot_id}, but the dataset's tokenizer ends "
        f"texts with id {tokenizer.eos_id}: the text tower would pool at a token that "
        "never appears; set config.input.tokenizer (or model_init) to the model's "
        "tokenizer, or model.text.eot_id to match")
  if resolved.model.text.context_length != records.layout_of(manifest).text_len:
    raise ValueError(f"config.model.text.context_length="
                     f"{resolved.model.text.context_length} != input.text_len "
                     f"{records.layout_of(manifest).text_len}")
  num_train = manifest["splits"].get("train", {}).get("num_examples")
  config_lib.durations.resolve(resolved, num_train)
  evals, resolved.select_metric = evaluators.for_data(resolved)
  resolved.evals = ml_collections.ConfigDict(evals)
  return resolved


def _flat(d: dict) -> dict:
  """``{"model.text.width": 64}``: the dotted keys of ``--config.`` overrides."""
  return traverse_util.flatten_dict(d, sep=".")


def check_workdir_config(workdir: str, config) -> None:
  """Refuses a workdir trained with different shapes (`vlkg.errors.ConfigError`);
  warns about other changes."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not files.exists(path):
    return
  with files.open(path) as f:
    old = _flat({k: v for k, v in config_lib.upgrade(json.load(f)).items()
                 if k != "tokenizer"})
  new = _flat(json.loads(config.to_json()))
  changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  # A method's own section (e.g. the depth of its extra encoder) may change shapes too.
  sections = SHAPE_KEYS + (config.method,)
  fatal = [k for k in changed if any(k == s or k.startswith(s + ".") for s in sections)]
  if fatal:
    raise errors.ConfigError(
        f"{path} was written by a run with a different model or data: "
        + ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in fatal)
        + ". Use a new --workdir, or restore the old values.")
  if changed:
    logging.warning("resuming %s with changed config keys: %s", workdir, changed)


def write_run_files(workdir: str, config, dataset_dir: str) -> None:
  """config.json (with the tokenizer's description) and the tokenizer's files, so
  that params.npz + config.json + tokenizer files are a self-contained run."""
  manifest = records.read_manifest(dataset_dir)
  desc = dict(manifest["tokenizer"])
  # Every file the description names (a sentencepiece model, a BPE vocabulary)
  # travels with the run, under its own name.
  for key in [k for k in desc if k.endswith("_path")]:
    name = "tokenizer.model" if key == "model_path" else os.path.basename(desc[key])
    files.copyfile(os.path.join(dataset_dir, desc[key]), os.path.join(workdir, name))
    desc[key] = name
  data = json.loads(config.to_json())
  data["tokenizer"] = desc
  atomic_write(os.path.join(workdir, CONFIG_FILE),
               json.dumps(data, indent=1, sort_keys=True))


def make_update_step(loss_fn, tx, train_rng):
  """(state, batch[, constants]) -> (state, metrics): one optimizer step, fully on
  device; ``constants`` go to ``loss_fn`` as its fifth argument when given."""

  refresh = getattr(loss_fn, "refresh_memory", None)

  def update_step(state, batch, constants=None):
    step = state["step"]
    rng = jax.random.fold_in(train_rng, step)
    batch = dict(batch, image=preprocess.normalize_images(batch["image"]))
    extra = () if constants is None else (constants,)
    memory, params = {}, state["params"]
    if refresh is not None:
      memory = {"memory": refresh(params, state["memory"], step, *extra)}
      if jax.default_backend() == "cpu":
        params, batch = data_dependency.after((params, batch), memory)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch, rng, step, *extra, **memory)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    first_bad = jnp.where((state["nonfinite_step"] < 0) & ~finite, step,
                          state["nonfinite_step"])
    new_state = {"step": step + 1, "params": keep(params, state["params"]),
                 "opt_state": keep(opt_state, state["opt_state"]),
                 "nonfinite_step": first_bad, **memory}
    return new_state, {"loss": loss, "grad_norm": grad_norm, **aux}

  return update_step


class BoundStep:
  """A jitted ``(state, batch, constants)`` step with its device-resident constants
  bound: called, lowered and compiled as ``(state, batch)``, like a step without."""

  def __init__(self, jitted, constants):
    self.jitted, self.constants = jitted, constants

  def __call__(self, state, batch):
    return self.jitted(state, batch, self.constants)

  def lower(self, state, batch):
    return _BoundLowered(self.jitted.lower(state, batch, self.constants), self.constants)


class _BoundLowered:

  def __init__(self, lowered, constants):
    self.lowered, self.constants = lowered, constants

  def compile(self):
    compiled, constants = self.lowered.compile(), self.constants

    class Compiled:
      cost_analysis = staticmethod(compiled.cost_analysis)

      def __call__(self, state, batch):
        return compiled(state, batch, constants)

    return Compiled()


def device_constants(constants, mesh):
  """Host arrays replicated on every device of ``mesh`` (on every host alike)."""
  replicated = sharding.replicated(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, replicated, lambda index: x[index])

  return jax.tree.map(put, constants)


class Trainer:
  """The pieces of a run that do not depend on the workdir: model, loss, optimizer,
  mesh, state shardings and the jitted update step. Also used by the benchmarks."""

  def __init__(self, config, devices=None):
    self.config = config
    # Methods read config.total_steps (e.g. a curriculum's length): durations in
    # examples or epochs must be resolved (resolve_config) before a Trainer exists.
    self.total_steps = config_lib.steps(config, "total")
    self.method = methods.load(config.method)
    self.model = self.method.build_model(config)
    self.loss_fn = self.method.make_loss_fn(self.model, config)
    self.mesh = sharding.make_mesh(config.mesh, devices)
    rules = [tuple(r) for r in config.sharding_rules]
    self.init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    self.abstract_params = methods.abstract_params(self.model, config)
    self.tx = optim.make_optimizer(config, self.abstract_params)
    abstract = jax.eval_shape(self._init_state, self.init_rng)
    self.state_sharding = sharding.tree_shardings(abstract, rules, self.mesh)
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract, self.state_sharding)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    constants = getattr(self.loss_fn, "constants", None)
    step = make_update_step(self.loss_fn, self.tx, train_rng)
    out_shardings = (self.state_sharding, sharding.replicated(self.mesh))
    if constants is None:
      self.update_step = jax.jit(
          step, in_shardings=(self.state_sharding, self.batch_sharding),
          out_shardings=out_shardings, donate_argnums=(0,))
    else:
      self.update_step = BoundStep(jax.jit(
          step, in_shardings=(self.state_sharding, self.batch_sharding,
                              sharding.replicated(self.mesh)),
          out_shardings=out_shardings, donate_argnums=(0,)),
          device_constants(constants, self.mesh))

  def _init_state(self, rng):
    params = methods.init_params(self.model, self.config, rng)
    state = {"step": jnp.zeros((), jnp.int32), "params": params,
             "opt_state": self.tx.init(params),
             "nonfinite_step": jnp.full((), -1, jnp.int32)}
    init_memory = getattr(self.loss_fn, "init_memory", None)
    if init_memory is not None:
      state["memory"] = init_memory()
    return state

  def init_state(self):
    """A fresh state, created directly in its shardings."""
    return jax.jit(self._init_state, out_shardings=self.state_sharding)(self.init_rng)


# Model keys that change what the same weights compute without changing any shape:
# model_init must agree on them, or it silently runs other functions.
FUNCTION_KEYS = ("image.act", "image.pool_type", "image.stem", "text.act",
                 "text.causal", "text.pool", "text.pad_id", "text.eot_id",
                 "text.mask_pad")


def check_model_init_config(path: str, config) -> None:
  """Compares ``FUNCTION_KEYS`` of ``config.model`` with the config.json beside the
  model_init params (a vlkg run or ``tools.import_clip`` output), if there is one."""
  source = os.path.join(os.path.dirname(files.abspath(path)), CONFIG_FILE)
  if not files.exists(source):
    return
  with files.open(source) as f:
    theirs = _flat(json.load(f).get("model", {}))
  ours = _flat(json.loads(config.model.to_json()))
  defaults = {"text.mask_pad": True}  # written before the key existed
  differ = [k for k in FUNCTION_KEYS if k in ours
            and theirs.get(k, defaults.get(k)) != ours[k]]
  if differ:
    raise ValueError(
        f"config.model_init={path}: its {source} says "
        + ", ".join(f"model.{k}={theirs.get(k, defaults.get(k))!r}" for k in differ)
        + " but this config has "
        + ", ".join(f"model.{k}={ours[k]!r}" for k in differ)
        + "; the weights would compute another function. Set these keys to match "
        "(e.g. --config.model.image.act=gelu --config.model.text.act=gelu for exact-GELU "
        "open_clip weights).")


def _init_from_npz(path: str, fresh_params, new_pattern: str):
  """Params from ``path``; those whose path matches ``new_pattern`` (a method's own
  modules, e.g. "^kee/" when Structure-CLIP starts from CLIP weights) keep their
  fresh init. Every other key and shape must match exactly."""
  flat_fresh = checkpoint.flatten_params(jax.device_get(fresh_params))
  is_new = lambda k: bool(new_pattern) and re.search(new_pattern, k) is not None
  expected = {k: v for k, v in flat_fresh.items() if not is_new(k)}
  loaded = checkpoint.load_params_npz(path, expected=checkpoint.unflatten_params(expected))
  logging.info("model_init %s: %d arrays loaded, %d new (%s)", path, len(loaded),
               len(flat_fresh) - len(expected), new_pattern or "none")
  return checkpoint.unflatten_params({**flat_fresh, **loaded})


def _due(step: int, every: int, total_steps: int) -> bool:
  """Whether a periodic action runs after ``step``: every ``every`` steps (0: only
  at the end) and always after the last step."""
  return step == total_steps or (every > 0 and step % every == 0)


def _prepare_once(config) -> str:
  """``prepare.ensure_prepared`` on process 0 only; the others wait, then find it."""
  if jax.process_count() == 1:
    return prepare.ensure_prepared(config)
  from jax.experimental import multihost_utils
  if jax.process_index() == 0:
    prepare.ensure_prepared(config)
  multihost_utils.sync_global_devices("vlkg: dataset prepared")
  return prepare.ensure_prepared(config)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config`` in ``workdir`` (resuming if possible); returns the last metrics.

  Holds the workdir's lock throughout (``vlkg.workdir_lock``). SIGTERM or SIGINT
  saves the step and raises ``preemption.Preempted`` (``vlkg.preemption``).
  """
  config_lib.durations.check(config)  # before a long prepare
  files.makedirs(workdir)
  with workdir_lock.hold(workdir, enabled=jax.process_index() == 0), \
      contextlib.ExitStack() as cleanup:
    return _train_and_evaluate(config, workdir, cleanup)


def _train_and_evaluate(config, workdir: str, cleanup: contextlib.ExitStack) -> dict:
  dataset_dir = _prepare_once(config)
  config = resolve_config(config, dataset_dir)
  check_workdir_config(workdir, config)
  is_main = jax.process_index() == 0
  if is_main:
    write_run_files(workdir, config, dataset_dir)
  manifest = records.read_manifest(dataset_dir)
  tokenizer = tok_lib.from_description(manifest["tokenizer"], base_dir=dataset_dir)
  total_steps = config.total_steps  # resolved: every duration is in steps

  trainer = Trainer(config)
  method, model, tx, mesh = trainer.method, trainer.model, trainer.tx, trainer.mesh
  abstract_state, state_sharding = trainer.abstract_state, trainer.state_sharding

  # Before the Checkpointer exists: a bad resume / model_init path then fails
  # with nothing of orbax's still running.
  kind, path = checkpoint.resolve_init(workdir, config.resume, config.model_init)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep,
                                 keep_every=config.keep_every)
  if kind == "workdir":
    _, state = ckpt.restore_latest(abstract_state)
  elif kind == "resume":
    other = checkpoint.Checkpointer(path, read_only=True)
    state = other.restore(other.latest_step(), abstract_state)
    other.close()
  else:
    state = trainer.init_state()
    if kind == "model_init":
      check_model_init_config(path, config)
      params = _init_from_npz(path, state["params"], config.model_init_new)
      params = jax.device_put(params, state_sharding["params"])
      state = dict(state, params=params,
                   opt_state=jax.jit(tx.init, out_shardings=state_sharding["opt_state"])(params))
  start_step = int(state["step"])
  logging.info("starting at step %d (%s%s)", start_step, kind, f": {path}" if path else "")
  if (start_step >= total_steps
      and files.exists(os.path.join(workdir, "params.npz"))):
    # A finished run, run again: what it ended with. (Without params.npz it was
    # killed before its final eval, which the loop below then runs.)
    logging.info("%s is already finished (step %d of %d): nothing to train; its final "
                 "metrics are those in its %s", workdir, start_step, total_steps,
                 metrics_lib.METRICS_FILE)
    ckpt.close()
    return metrics_lib.read_final(workdir)

  update_step = trainer.update_step
  batch_keys = methods.batch_keys(config)
  batches = input_pipeline.staged_train_iterator(
      dataset_dir, stages=training_splits.stages(config), review=training_splits.review(config),
      batch_size=config.input.batch_size,
      seed=config.seed, fields=batch_keys, start_step=start_step,
      shuffle_buffer=config.input.shuffle_buffer, prefetch=config.input.prefetch,
      threads=config.input.threads, data=config.input.data,
      fraction=config.input.get("train_fraction", 1.0))
  writer = metrics_lib.MetricWriter(workdir, resume_step=start_step, enabled=is_main,
                                    wandb_project=config.wandb.project,
                                    run_config=config.to_dict())
  # A method may name more headline metrics (train or eval) than metrics_lib's.
  headline = tuple(getattr(method, "HEADLINE", ()))
  progress = metrics_lib.Progress(
      total_steps, config.input.batch_size, start_step,
      eval_every=config.eval_every_steps if config.evals else None,
      show=metrics_lib.TRAIN_KEYS + headline, writer=writer.writer)

  best_path = os.path.join(workdir, "params_best.json")
  best = {"value": -np.inf, "step": None}
  if files.exists(best_path):  # a resumed run keeps the best it had found
    with files.open(best_path) as f:
      best.update(json.load(f))

  # One encoder per run: its jitted towers compile at the first evaluation, and
  # later evaluations only swap in the current params.
  encoder = api.make_encoder(model, None, tokenizer, config, dataset_dir=dataset_dir)

  def evaluate(step):
    with progress.timed("eval"):  # left out of the next throughput figure
      encoder.params = state["params"]
      results = evaluators.run(config, encoder, dataset_dir)
      encoder.params = None  # the next update step donates these buffers
      if config.select_metric:
        value = results.get(config.select_metric)
        if value is None:
          raise KeyError(f"config.select_metric={config.select_metric!r} is not among "
                         f"the eval metrics: {sorted(results)}")
        if value > best["value"]:
          best.update(value=value, step=step)
          if is_main:
            checkpoint.save_params_npz(os.path.join(workdir, "params_best.npz"),
                                       state["params"])
            atomic_write(best_path, json.dumps({"metric": config.select_metric, **best}))
        results["selected_step"] = best["step"]
    writer.write(step, {**results, "eval_seconds": progress.eval_seconds})
    metrics_lib.log_eval(step, results, progress.eval_seconds, headline,
                         config.select_metric)
    return results

  last = {}
  # eval_every_steps=0 evaluates only at the end, so not at step 0 either.
  if start_step == 0 and config.evals and config.eval_every_steps > 0:
    last.update(evaluate(0))
  elif (start_step == total_steps and config.evals
        and not files.exists(os.path.join(workdir, "params.npz"))):
    # Killed after its last checkpoint but before params.npz: the loop below has
    # nothing left to do, and the final eval may never have been written.
    last.update(evaluate(start_step))
  step = start_step
  pending = None
  watcher = cleanup.enter_context(preemption.Watcher(ckpt))
  while step < total_steps:
    if watcher.reached(step):
      watcher.stop(step, state, start_step)
    batch = sharding.global_batch(
        {k: v for k, v in next(batches).items() if k in batch_keys}, mesh)
    state, step_metrics = update_step(state, batch)
    step += 1
    if _due(step, config.log_every_steps, total_steps):
      pending = jax.device_get(step_metrics)
      bad = int(state["nonfinite_step"])
      if bad >= 0:
        name = "loss" if not np.isfinite(pending["loss"]) else "grad_norm"
        raise NonFiniteError(
            f"non-finite {name} at step {bad + 1}; the update was skipped and the last "
            f"good checkpoint kept (step {ckpt.latest_step()})")
      lr = float(optim.schedule(config)(step - 1))
      last = {**{k: float(v) for k, v in pending.items()}, "lr": lr}
      last.update(progress.tick(step, last))
      writer.write(step, last)
    if _due(step, config.checkpoint_every_steps, total_steps):
      ckpt.save(step, state)
    if config.evals and _due(step, config.eval_every_steps, total_steps):
      last.update(evaluate(step))
  watcher.close()  # from here on a signal ends the run as usual
  ckpt.wait()
  if is_main:
    checkpoint.save_params_npz(os.path.join(workdir, "params.npz"), state["params"])
  ckpt.close()
  writer.close()
  return last
