"""Checkpoints, the resume precedence, and the ``params.npz`` exchange format.

Three things live here (DESIGN.md, "Checkpoints" and the ``params.npz`` contract):

* ``Checkpointer``: an orbax ``CheckpointManager`` over ``<workdir>/checkpoints``
  that saves the full train state asynchronously and restores it straight onto the
  shardings of a target, so a sharded state is never gathered on one device.
* ``params.npz``: a flat ``{"a/b/kernel": array}`` file of the parameters, written
  atomically; loading checks every key and shape against a freshly built model.
* ``resolve_init``: which of workdir checkpoint, ``config.resume``,
  ``config.model_init`` or scratch a run starts from.

Only jax, numpy, orbax and ``flax.traverse_util`` are imported so that tools (export,
evaluation elsewhere) can read checkpoints without the model code.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from absl import logging
from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
# The store of array metadata (a random key's implementation) that orbax's default
# jax.Array handler keeps; orbax 0.12 does not re-export it.
from orbax.checkpoint._src.metadata import array_metadata_store

from vlkg import checkpoint_mirror, checkpoint_set_aside as set_aside, files
from vlkg.files import atomic_write

PyTree = Any

CHECKPOINTS = "checkpoints"
PARAMS_NPZ = "params.npz"


class ParamsMismatchError(ValueError):
  """A ``params.npz`` does not fit the model it is loaded into."""


def _save_replicas_whole_on_cpu() -> None:
  """On the CPU backend, has orbax save a replicated array from one replica.

  Orbax's default (replica-parallel saving) has each replica of a replicated array
  copy one slice of it off its device, to spread the copies over accelerators.
  On CPU every device is host memory, so that only adds a slicing program per
  array and replica: on 8 fake devices the first save of a small train state
  took 2.4-3.1 s instead of 0.6-0.7 s (docs/results.md, "The test suite"). The
  files written are the same.
  """
  if jax.default_backend() == "cpu":
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            use_replica_parallel=False,
            array_metadata_store=array_metadata_store.Store()),
        override=True)


def _read_only_manager(directory: str, handler) -> ocp.CheckpointManager:
  # save_interval_steps=0 and create=False are what read_only forces anyway;
  # passing them avoids orbax warning that it overrode them.
  return ocp.CheckpointManager(
      files.abspath(directory),
      options=ocp.CheckpointManagerOptions(
          read_only=True, save_interval_steps=0, create=False),
      item_handlers=handler)


class Checkpointer:
  """Saves and restores the train state of one run.

  Saves are asynchronous: ``save`` returns once the arrays are copied off the
  devices (so the caller may donate or overwrite them), and the write to disk goes
  on in a background thread. ``wait`` blocks until it is on disk.

  The directory may be local or ``gs://``, which orbax writes directly; on another
  file system of ``vlkg.files`` (``ram://``...) orbax works on a local mirror
  (``vlkg.checkpoint_mirror``), and saves are synchronous.
  """

  def __init__(self, directory: str, *, keep: int | None = 2,
               keep_every: int | None = None, async_save: bool = True,
               read_only: bool = False):
    """Opens (and, unless read_only, creates) a checkpoint directory.

    Args:
      directory: the checkpoints directory, normally ``<workdir>/checkpoints``.
      keep: how many of the latest checkpoints to keep; None or <= 0 keeps all,
        because deleting every checkpoint is never what anyone means.
      keep_every: also keep every checkpoint whose step is a multiple of this;
        0 or None turns it off.
      async_save: write in a background thread.
      read_only: never write or delete, e.g. for another run's checkpoints read
        through ``config.resume``.
    """
    self.directory = files.abspath(directory)
    self._mirror = (None if checkpoint_mirror.native(self.directory)
                    else checkpoint_mirror.Mirror(self.directory))
    self._read_only = read_only
    local = self._mirror.local if self._mirror else self.directory
    handler = ocp.StandardCheckpointHandler()
    if read_only:
      self._manager = _read_only_manager(local, handler)
      return
    policies = [ocp.checkpoint_managers.LatestN(n=keep if keep and keep > 0 else None)]
    if keep_every:
      policies.append(ocp.checkpoint_managers.EveryNSteps(interval_steps=int(keep_every)))
    # max_to_keep / keep_period are deprecated in orbax 0.12 in favour of
    # preservation policies; this is the same "latest N, or multiple of k" rule.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save and self._mirror is None,
        # A crash mid-save leaves a tmp directory, which orbax would delete here;
        # set_aside.unfinished moves it out of the way instead, with a warning.
        cleanup_tmp_directories=False,
        create=True)
    set_aside.unfinished(local)
    _save_replicas_whole_on_cpu()
    self._manager = ocp.CheckpointManager(local, options=options, item_handlers=handler)

  def save(self, step: int, state: PyTree, *, force: bool = False) -> bool:
    """Starts saving ``state`` as ``step``; returns whether a save was started.

    A step that is already saved (for example the step a run resumed from, saved
    again at the end) is skipped rather than raising orbax's
    ``StepAlreadyExistsError``.

    Args:
      step: the train step the state belongs to.
      state: a pytree of (possibly sharded) jax Arrays.
      force: save even where orbax's save-decision policy would skip the step
        (a step below the latest one); never overwrites an existing step.
    """
    step = int(step)
    if step in self._manager.all_steps():
      logging.info("checkpoint for step %d already in %s; not saving again",
                   step, self.directory)
      return False
    saved = self._manager.save(step, args=ocp.args.StandardSave(state), force=force)
    if saved:
      logging.info("saving checkpoint for step %d to %s", step, self.directory)
      if self._mirror:
        self.wait()
    return saved

  def latest_step(self) -> int | None:
    """The newest saved step (including one still being written), or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Every step currently kept, oldest first."""
    return sorted(self._manager.all_steps())

  def restore(self, step: int, abstract_state: PyTree) -> PyTree:
    """Restores ``step`` onto the shapes, dtypes and shardings of a target.

    Each device reads only its own shards, so a sharded state is never
    materialised whole on one device.

    Args:
      step: the step to restore.
      abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with ``sharding`` set
        (e.g. ``jax.eval_shape`` of the init plus the sharding rules), with the
        structure the state was saved with.

    Returns:
      The state as jax Arrays with the target's shardings.
    """
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(
          f"no checkpoint for step {step} in {self.directory}; "
          f"steps there: {self.all_steps()}")
    unsharded = [jax.tree_util.keystr(path) for path, leaf in
                 jax.tree_util.tree_flatten_with_path(abstract_state)[0]
                 if getattr(leaf, "sharding", None) is None]
    if unsharded:
      # Without a sharding orbax falls back to the sharding saved in the
      # checkpoint, which names devices of the saving job, not this one.
      raise ValueError(
          f"restore target needs a sharding on every leaf; missing on {unsharded}")
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except ValueError as e:
      raise ValueError(
          f"cannot restore step {step} of {self.directory} onto the target: {e}") from e

  def restore_latest(self, abstract_state: PyTree) -> tuple[int, PyTree]:
    """Restores the newest step that can be read, like ``restore``.

    A step that fails to restore while an older one restores (a truncated or
    corrupt file: a disk that filled up, a copy cut short) is logged as a warning
    that names it and moved to ``broken_<directory name>/``, out of orbax's sight,
    so that the run saves that step anew when it gets there; nothing is deleted.
    When no step can be restored the newest step's error is raised: that is a
    target that does not fit (or every step broken), not something to skip.

    All hosts try the same steps and agree on the outcome, so they fall back
    together even when only some of them read a broken file.

    Returns:
      (step, state).
    """
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    broken, first_error = [], None
    for step in steps:
      try:
        state, error = self.restore(step, abstract_state), None
      except Exception as e:  # pylint: disable=broad-except
        state, error = None, e
      if set_aside.all_hosts(error is None):
        break
      reason = error or RuntimeError("it failed to restore on another host")
      first_error = first_error or reason
      logging.warning("checkpoint step %d in %s cannot be restored (%s); trying the "
                      "step before it", step, self.directory,
                      (str(reason).splitlines() or [type(reason).__name__])[0][:300])
      broken.append(step)
    else:
      raise first_error
    if broken:
      moved = [set_aside.move(self.directory, str(s)) for s in broken]
      for s in broken:
        if self._mirror:
          self._mirror.drop(str(s))
      set_aside.sync(f"broken checkpoints of {self.directory} set aside")
      logging.warning("resuming from step %d of %s; the broken step(s) %s were moved to "
                      "%s", step, self.directory, broken, moved)
      self._manager.reload()
    return step, state

  def reached_preemption(self, step: int) -> bool:
    """Whether every host reached the step at which jax's pre-emption sync manager
    says to save (``vlkg.preemption``); always False without jax.distributed."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until every started save is on disk."""
    self._manager.wait_until_finished()
    if self._mirror and not self._read_only:
      self._mirror.push()

  def close(self) -> None:
    """Waits for pending saves and releases the manager's threads."""
    self._manager.close()
    if self._mirror:
      if not self._read_only:
        self._mirror.push()
      self._mirror.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def load_checkpoint_params(directory: str, step: int | None = None,
                           subtree: str = "params") -> tuple[int, dict[str, Any]]:
  """Reads the params subtree of a saved state as host numpy arrays.

  Needs no model code and no target: shapes and dtypes come from the checkpoint's
  own metadata, and only the ``subtree`` entry of the state is read, so optimizer
  state is never loaded. Any jax backend works (on CPU the saving job's devices
  need not exist), because arrays are restored as numpy.

  Args:
    directory: a checkpoints directory or a workdir holding one.
    step: the step to read; the latest if None.
    subtree: the key of the state to read.

  Returns:
    (step, nested dict of numpy arrays).
  """
  directory = checkpoints_dir(directory)
  # PyTreeCheckpointHandler rather than Standard: only it can restore a part of
  # the saved tree (partial_restore); both write the same format on disk.
  mirror = None if checkpoint_mirror.native(directory) else checkpoint_mirror.Mirror(directory)
  manager = _read_only_manager(mirror.local if mirror else directory,
                               ocp.PyTreeCheckpointHandler())
  try:
    steps = sorted(manager.all_steps())
    if step is None:
      if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}")
      step = steps[-1]
    if step not in steps:
      raise FileNotFoundError(f"no checkpoint for step {step} in {directory}; "
                              f"steps there: {steps}")
    metadata = manager.item_metadata(step)
    tree = getattr(metadata, "tree", metadata)
    if not isinstance(tree, Mapping) or subtree not in tree:
      keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
      raise KeyError(f"checkpoint {directory}/{step} has no {subtree!r} entry; "
                     f"it has {keys}")
    meta = tree[subtree]
    item = {subtree: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), meta)}
    restore_args = {subtree: jax.tree.map(
        lambda m: ocp.RestoreArgs(restore_type=np.ndarray), meta)}
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  finally:
    manager.close()
    if mirror:
      mirror.close()
  return step, restored[subtree]


# --- params.npz -------------------------------------------------------------


def flatten_params(params: PyTree) -> dict[str, Any]:
  """``{"img/conv1/kernel": leaf}`` for every leaf of a nested params dict."""
  return traverse_util.flatten_dict(params, sep="/")


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of ``flatten_params``: nested dicts from '/'-joined keys.

  Raises:
    ValueError: a key is also the prefix of another key ("a/b" and "a/b/c"), which
      ``traverse_util.unflatten_dict`` would silently resolve by overwriting.
  """
  parents = {k.rsplit("/", i)[0] for k in flat for i in range(1, k.count("/") + 1)}
  clash = sorted(parents & set(flat))
  if clash:
    raise ValueError(f"param keys {clash} are both leaves and prefixes of other keys")
  return traverse_util.unflatten_dict(dict(flat), sep="/")


def _to_host(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    # Multi-host: every process must take part in the gather.
    x = multihost_utils.process_allgather(x, tiled=True)
  x = np.asarray(jax.device_get(x))
  # bfloat16 and friends are ml_dtypes that np.load reads back as raw void
  # bytes; float32 is exact for them and loading casts to the model's dtype.
  if x.dtype.kind == "V":
    x = x.astype(np.float32)
  return x


def save_params_npz(path: str, params: PyTree) -> str:
  """Writes ``params`` to ``path`` as a flat npz, atomically.

  All processes must call this (sharded arrays are gathered collectively); only
  process 0 writes. The file is written beside ``path`` and renamed into place,
  so a crash never leaves a truncated ``params.npz``.

  Returns:
    The path written.
  """
  flat = {k: _to_host(v) for k, v in flatten_params(params).items()}
  if jax.process_index() != 0:
    return path
  atomic_write(path, lambda f: np.savez(f, **flat))
  logging.info("wrote %d params arrays to %s", len(flat), path)
  return path


def load_params_npz(path: str, expected: PyTree | None = None) -> dict[str, np.ndarray]:
  """Reads a ``params.npz`` as a flat ``{"a/b/kernel": np.ndarray}`` dict.

  Args:
    path: the npz file.
    expected: the params of a freshly built model (arrays or
      ``jax.ShapeDtypeStruct``); if given, every key and shape must match, and
      values are cast to its dtypes.

  Raises:
    ParamsMismatchError: listing the missing keys, the extra keys and the shape
      mismatches (expected vs got), naming the file.
  """
  flat = files.load_npz(path)
  if expected is None:
    return flat
  want = flatten_params(expected)
  missing = sorted(set(want) - set(flat))
  extra = sorted(set(flat) - set(want))
  shapes = sorted(f"{k}: expected {tuple(want[k].shape)}, got {tuple(flat[k].shape)}"
                  for k in set(want) & set(flat)
                  if tuple(want[k].shape) != tuple(flat[k].shape))
  if missing or extra or shapes:
    lines = [f"{path} does not match the model's parameters:"]
    for title, items in (("missing keys", missing), ("extra keys", extra),
                         ("shape mismatches", shapes)):
      if items:
        lines.append(f"  {title} ({len(items)}):")
        lines.extend(f"    {item}" for item in items)
    raise ParamsMismatchError("\n".join(lines))
  return {k: flat[k].astype(want[k].dtype, copy=False) for k in want}


# --- resume precedence --------------------------------------------------------


def checkpoints_dir(path: str) -> str:
  """The checkpoints directory of a workdir, or ``path`` if it is one already."""
  sub = os.path.join(path, CHECKPOINTS)
  return sub if files.isdir(sub) else path


def _latest_step(directory: str) -> int | None:
  if not files.isdir(directory):
    return None
  if not checkpoint_mirror.native(directory):
    steps = checkpoint_mirror.finished_steps(directory)
    return int(steps[-1]) if steps else None
  manager = _read_only_manager(directory, ocp.StandardCheckpointHandler())
  try:
    return manager.latest_step()
  finally:
    manager.close()


def resolve_init(workdir: str, resume: str | None,
                 model_init: str | None) -> tuple[str, str | None]:
  """Decides where a run starts from (DESIGN.md resume precedence).

  1. ``("workdir", <workdir>/checkpoints)`` when the workdir holds a checkpoint:
     a restarted run always continues itself.
  2. ``("resume", <checkpoints dir>)`` for ``config.resume``: another run's workdir
     or checkpoints directory; its full state, step included, is restored.
  3. ``("model_init", <params.npz>)`` for ``config.model_init``: a ``params.npz``
     or a directory holding one; params only, from step 0.
  4. ``("scratch", None)``.

  Only the option that is used is checked: a preempted run must still resume
  from its own workdir after the run it was started from has been deleted.

  Raises:
    FileNotFoundError: ``resume`` or ``model_init`` is used but its path does not
      exist or holds no checkpoint / params.npz; the message names the key.
  """
  own = os.path.join(workdir, CHECKPOINTS)
  if _latest_step(own) is not None:
    if resume or model_init:
      logging.info("workdir %s holds a checkpoint; ignoring resume=%r model_init=%r",
                   workdir, resume, model_init)
    return "workdir", own
  if resume:
    if not files.exists(resume):
      raise FileNotFoundError(f"config.resume: path does not exist: {resume}")
    directory = checkpoints_dir(resume)
    if _latest_step(directory) is None:
      raise FileNotFoundError(f"config.resume: no checkpoint in {resume}")
    return "resume", directory
  if model_init:
    path = model_init
    if files.isdir(path):
      path = os.path.join(path, PARAMS_NPZ)
    if not files.isfile(path):
      raise FileNotFoundError(f"config.model_init: no params.npz at {path}")
    return "model_init", path
  return "scratch", None
