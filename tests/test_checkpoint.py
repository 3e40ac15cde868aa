"""Tests for vlkg.checkpoint and vlkg.tools.export (8 fake CPU devices, conftest)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vlkg import checkpoint
from vlkg.tools import export
from tests import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_params(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {
      "img": {"conv1": {"kernel": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32),
                        "bias": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}},
      "txt": {"embed": {"embedding": jnp.asarray(rng.normal(size=(10, 4)), jnp.float32)}},
  }


def make_state(step: int = 7, seed: int = 0) -> dict:
  params = make_params(seed)
  tx = optax.adamw(1e-3)
  opt_state = tx.init(params)
  # One update so mu/nu/count are not the trivial zeros of init.
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = tx.update(grads, opt_state, params)
  return {"step": jnp.asarray(step, jnp.int32), "params": params, "opt_state": opt_state}


def abstract_of(state, sharding=None):
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_round_trip(tmp_path):
  state = make_state()
  with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
    assert ckpt.save(7, state)
    ckpt.wait()
    restored = ckpt.restore(7, abstract_of(state))
  assert_trees_equal(restored, state)
  assert int(restored["step"]) == 7


@pytest.mark.devices(8)
def test_restore_onto_sharded_mesh(tmp_path):
  mesh = Mesh(np.array(jax.devices()), ("data",))
  assert mesh.size == 8
  rows = NamedSharding(mesh, P("data"))
  cols = NamedSharding(mesh, P(None, "data"))
  replicated = NamedSharding(mesh, P())
  kernel = jnp.arange(128, dtype=jnp.float32).reshape(16, 8)
  state = {"step": jnp.asarray(3, jnp.int32),
           "params": {"dense": {"kernel": jax.device_put(kernel, rows)}}}

  def target(sharding):
    return {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
            "params": {"dense": {"kernel": jax.ShapeDtypeStruct(
                (16, 8), jnp.float32, sharding=sharding)}}}

  with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
    ckpt.save(3, state)
    ckpt.wait()
    same = ckpt.restore(3, target(rows))
    # A different layout than the one saved (e.g. a changed mesh or rules).
    other = ckpt.restore(3, target(cols))
  for restored, sharding, shard_shape in ((same, rows, (2, 8)), (other, cols, (16, 1))):
    out = restored["params"]["dense"]["kernel"]
    assert out.sharding == sharding
    assert {s.data.shape for s in out.addressable_shards} == {shard_shape}
    np.testing.assert_array_equal(np.asarray(out), np.asarray(kernel))
    assert restored["step"].sharding == replicated
    assert int(restored["step"]) == 3


def test_a_replicated_state_saves_without_compiling_on_cpu(tmp_path):
  """On CPU orbax saves each replicated array from one replica: no slicing
  program per array and replica (eight fake devices here)."""
  replicated = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P())
  state = jax.device_put(make_state(step=5, seed=3), replicated)
  compiles = []

  def listen(event, seconds, **_):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(seconds)

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
      assert ckpt.save(5, state)
      ckpt.wait()
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert compiles == []
  with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
    assert_trees_equal(ckpt.restore(5, abstract_of(state, replicated)), state)


def test_restore_requires_shardings_and_existing_step(tmp_path):
  state = make_state()
  with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
    ckpt.save(1, state)
    ckpt.wait()
    bare = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    with pytest.raises(ValueError, match="sharding"):
      ckpt.restore(1, bare)
    with pytest.raises(FileNotFoundError, match="step 2"):
      ckpt.restore(2, abstract_of(state))


@pytest.mark.parametrize("keep_every, expected", [(0, [4, 5]), (None, [4, 5]),
                                                  (2, [2, 4, 5])])
def test_keep_policy(tmp_path, keep_every, expected):
  state = make_state()
  directory = tmp_path / "checkpoints"
  with checkpoint.Checkpointer(str(directory), keep=2, keep_every=keep_every) as ckpt:
    for step in range(1, 6):
      assert ckpt.save(step, state)
    ckpt.wait()
    assert ckpt.all_steps() == expected
  assert sorted(int(p) for p in os.listdir(directory) if p.isdigit()) == expected


def test_async_save_and_resave(tmp_path):
  state = make_state()
  with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(10, state)
    # The step counts as saved at once, while it is still being written.
    assert ckpt.latest_step() == 10
    # A step that is already saved is skipped, not an orbax error.
    assert not ckpt.save(10, state)
    assert not ckpt.save(10, state, force=True)
    ckpt.wait()
    assert ckpt.latest_step() == 10
  # A fresh Checkpointer (a restarted run) sees the finished step.
  with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as again:
    assert again.latest_step() == 10
    assert_trees_equal(again.restore(10, abstract_of(state)), state)


def test_state_may_be_deleted_after_async_save_returns(tmp_path):
  # The trainer donates the state to the next step right after saving.
  state = make_state()
  expected = jax.tree.map(np.asarray, state)
  with checkpoint.Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
    ckpt.save(1, state)
    for leaf in jax.tree.leaves(state):
      leaf.delete()
    ckpt.wait()
    assert_trees_equal(ckpt.restore(1, abstract_of(expected)), expected)


def test_flatten_unflatten():
  params = make_params()
  flat = checkpoint.flatten_params(params)
  assert sorted(flat) == ["img/conv1/bias", "img/conv1/kernel", "txt/embed/embedding"]
  assert_trees_equal(checkpoint.unflatten_params(flat), params)
  assert checkpoint.unflatten_params({"a/b": 1, "a/c/d": 2, "e": 3}) == {
      "a": {"b": 1, "c": {"d": 2}}, "e": 3}
  # A key that is also another key's prefix has no nested form.
  with pytest.raises(ValueError, match=r"\['img/conv1'\] are both leaves"):
    checkpoint.unflatten_params({**flat, "img/conv1": np.zeros(1)})


def test_params_npz_round_trip(tmp_path):
  mesh = Mesh(np.array(jax.devices()), ("data",))
  params = make_params()
  params["img"]["conv1"]["kernel"] = jax.device_put(
      params["img"]["conv1"]["kernel"], NamedSharding(mesh, P("data")))
  params["txt"]["embed"]["embedding"] = params["txt"]["embed"]["embedding"].astype(
      jnp.bfloat16)
  path = str(tmp_path / "params.npz")
  checkpoint.save_params_npz(path, params)
  assert os.listdir(tmp_path) == ["params.npz"]  # No temp file left behind.
  with np.load(path) as data:
    assert sorted(data.files) == sorted(checkpoint.flatten_params(params))
    # bfloat16 is stored as float32 so that plain numpy can read the file.
    assert data["txt/embed/embedding"].dtype == np.float32
  expected = jax.eval_shape(lambda: params)
  flat = checkpoint.load_params_npz(path, expected=expected)
  assert flat["txt/embed/embedding"].dtype == jnp.bfloat16
  assert_trees_equal(checkpoint.unflatten_params(flat), params)
  # Without a target it returns the file as stored.
  assert checkpoint.load_params_npz(path)["img/conv1/kernel"].shape == (16, 8)


def test_params_npz_mismatch_lists_everything(tmp_path):
  path = str(tmp_path / "params.npz")
  checkpoint.save_params_npz(path, make_params())
  expected = jax.eval_shape(make_params)
  expected["img"]["conv1"]["kernel"] = jax.ShapeDtypeStruct((16, 9), jnp.float32)
  del expected["txt"]
  expected["img"]["proj"] = jax.ShapeDtypeStruct((8, 4), jnp.float32)
  with pytest.raises(checkpoint.ParamsMismatchError) as err:
    checkpoint.load_params_npz(path, expected=expected)
  message = str(err.value)
  assert path in message
  assert "missing keys (1):\n    img/proj" in message
  assert "extra keys (1):\n    txt/embed/embedding" in message
  assert "img/conv1/kernel: expected (16, 9), got (16, 8)" in message


def test_resolve_init_precedence(tmp_path):
  state = make_state()
  workdir = str(tmp_path / "run")
  other = str(tmp_path / "other")
  other_ckpts = os.path.join(other, "checkpoints")
  own = os.path.join(workdir, "checkpoints")
  init_dir = tmp_path / "init"
  init_dir.mkdir()
  init_npz = str(init_dir / "params.npz")
  checkpoint.save_params_npz(init_npz, state["params"])
  with checkpoint.Checkpointer(other_ckpts) as ckpt:
    ckpt.save(4, state)

  assert checkpoint.resolve_init(workdir, "", "") == ("scratch", None)
  assert checkpoint.resolve_init(workdir, None, str(init_dir)) == ("model_init", init_npz)
  assert checkpoint.resolve_init(workdir, None, init_npz) == ("model_init", init_npz)
  # resume beats model_init; another run's workdir and its checkpoints dir both work.
  assert checkpoint.resolve_init(workdir, other, init_npz) == ("resume", other_ckpts)
  assert checkpoint.resolve_init(workdir, other_ckpts, "") == ("resume", other_ckpts)
  # An empty checkpoints dir (a run that died before its first save) does not count.
  os.makedirs(own)
  assert checkpoint.resolve_init(workdir, other, "")[0] == "resume"
  with checkpoint.Checkpointer(own) as ckpt:
    ckpt.save(2, state)
  assert checkpoint.resolve_init(workdir, other, init_npz) == ("workdir", own)
  # The workdir wins even when the run it was started from is gone.
  assert checkpoint.resolve_init(workdir, str(tmp_path / "gone"), "") == ("workdir", own)

  # Resuming restores the other run's full state, step included, and leaves
  # its checkpoints alone.
  kind, path = checkpoint.resolve_init(str(tmp_path / "fresh"), other, "")
  assert kind == "resume"
  with checkpoint.Checkpointer(path, read_only=True) as ro:
    restored = ro.restore(ro.latest_step(), abstract_of(state))
    assert ro.all_steps() == [4]
  assert_trees_equal(restored, state)
  assert int(restored["step"]) == 7


def test_resolve_init_missing_paths(tmp_path):
  workdir = str(tmp_path / "run")
  missing = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match=f"config.resume.*{missing}"):
    checkpoint.resolve_init(workdir, missing, "")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="config.resume: no checkpoint"):
    checkpoint.resolve_init(workdir, str(tmp_path / "empty"), "")
  with pytest.raises(FileNotFoundError, match=f"config.model_init.*{missing}"):
    checkpoint.resolve_init(workdir, "", missing)
  with pytest.raises(FileNotFoundError, match="config.model_init.*empty/params.npz"):
    checkpoint.resolve_init(workdir, "", str(tmp_path / "empty"))


def _saved_run(tmp_path):
  workdir = tmp_path / "run"
  mesh = Mesh(np.array(jax.devices()), ("data",))
  states = {s: make_state(step=s, seed=s) for s in (1, 2)}
  states[2]["params"]["img"]["conv1"]["kernel"] = jax.device_put(
      states[2]["params"]["img"]["conv1"]["kernel"], NamedSharding(mesh, P("data")))
  with checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=None) as ckpt:
    for step, state in states.items():
      ckpt.save(step, state)
  return str(workdir), states


def test_export_in_process(tmp_path):
  workdir, states = _saved_run(tmp_path)
  out = export.export(workdir)
  assert out == os.path.join(workdir, "params.npz")
  assert_trees_equal(checkpoint.unflatten_params(checkpoint.load_params_npz(out)),
                     states[2]["params"])
  older = export.export(workdir, step=1, out=str(tmp_path / "step1.npz"))
  assert_trees_equal(checkpoint.unflatten_params(checkpoint.load_params_npz(older)),
                     states[1]["params"])
  with pytest.raises(FileNotFoundError, match="step 3"):
    export.export(workdir, step=3)
  with pytest.raises(ValueError, match="open_clip"):
    export.export(workdir, fmt="open_clip")


def test_export_import_defines_no_flags():
  # vlkg.main imports the tool for --mode export and defines its own --workdir.
  from absl import flags
  assert not flags.FLAGS.get_flags_for_module(export.__name__)


def test_export_command_line(tmp_path):
  # Saved on 8 devices, exported by a process that has 1: the tool must need
  # neither the saving job's devices nor the model code.
  workdir, states = _saved_run(tmp_path)
  env = dict(os.environ, XLA_FLAGS=xla_flags.with_devices(1), JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "vlkg.tools.export", "--workdir", workdir],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = os.path.join(workdir, "params.npz")
  assert proc.stdout.strip().splitlines()[-1] == out
  assert_trees_equal(checkpoint.unflatten_params(checkpoint.load_params_npz(out)),
                     states[2]["params"])
  bad = subprocess.run(
      [sys.executable, "-m", "vlkg.tools.export", "--workdir", workdir,
       "--format", "onnx"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert bad.returncode != 0
  assert "--format" in bad.stderr and "npz" in bad.stderr


# --- safe resume: broken and unfinished checkpoints ---------------------------


# A failed restore leaves orbax coroutines that are never awaited.
_UNAWAITED = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _truncate_data_files(step_dir):
  """Cuts every array data file of a saved step in half, as a full disk or a copy cut
  short would."""
  cut = []
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      if f"{os.sep}d{os.sep}" in path:
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
        cut.append(path)
  assert cut
  return cut


@_UNAWAITED
def test_restore_latest_falls_back_past_a_truncated_checkpoint(tmp_path, caplog):
  directory = str(tmp_path / "checkpoints")
  states = {s: make_state(step=s, seed=s) for s in (1, 2, 3)}
  with checkpoint.Checkpointer(directory, keep=None) as ckpt:
    for step, state in states.items():
      ckpt.save(step, state)
  cut = _truncate_data_files(os.path.join(directory, "3"))
  with checkpoint.Checkpointer(directory, keep=None) as ckpt:
    assert ckpt.latest_step() == 3
    with caplog.at_level("WARNING"):
      step, restored = ckpt.restore_latest(abstract_of(states[1]))
    assert step == 2
    assert_trees_equal(restored, states[2])
    assert "checkpoint step 3 in" in caplog.text and "cannot be restored" in caplog.text
    # Out of orbax's sight, so the run can save step 3 again, but not deleted.
    assert ckpt.all_steps() == [1, 2]
    moved = tmp_path / "broken_checkpoints" / "3"
    assert moved.is_dir() and str(moved) in caplog.text
    assert all(os.path.exists(p.replace(directory, str(tmp_path / "broken_checkpoints")))
               for p in cut)
    assert ckpt.save(3, states[3])
    ckpt.wait()
    assert_trees_equal(ckpt.restore_latest(abstract_of(states[1]))[1], states[3])
  gc.collect()  # the failed restore's coroutines go here, under _UNAWAITED


@_UNAWAITED
def test_restore_latest_raises_when_nothing_restores(tmp_path):
  directory = str(tmp_path / "checkpoints")
  state = make_state()
  with checkpoint.Checkpointer(directory) as ckpt:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
      ckpt.restore_latest(abstract_of(state))
    ckpt.save(1, state)
    ckpt.save(2, state)
    ckpt.wait()
    # A target that fits no step is an error, not a reason to skip steps.
    wrong = abstract_of(dict(state, step=jnp.zeros((3,), jnp.int32)))
    with pytest.raises(ValueError, match="cannot restore step 2"):
      ckpt.restore_latest(wrong)
    assert ckpt.all_steps() == [1, 2]
  assert not (tmp_path / "broken_checkpoints").exists()
  gc.collect()


def test_unfinished_save_is_set_aside_with_a_warning(tmp_path, caplog):
  directory = tmp_path / "checkpoints"
  state = make_state()
  with checkpoint.Checkpointer(str(directory)) as ckpt:
    ckpt.save(4, state)
  # What a run killed while saving step 8 leaves behind.
  leftover = directory / "8.orbax-checkpoint-tmp"
  (leftover / "default").mkdir(parents=True)
  (leftover / "default" / "part").write_bytes(b"half")
  with caplog.at_level("WARNING"):
    ckpt = checkpoint.Checkpointer(str(directory))
  assert "checkpoint step 8 in" in caplog.text and "never finished" in caplog.text
  assert not leftover.exists()
  kept = tmp_path / "broken_checkpoints" / "8.orbax-checkpoint-tmp" / "default" / "part"
  assert kept.read_bytes() == b"half"
  assert checkpoint.resolve_init(str(tmp_path), None, None)[0] == "workdir"
  step, restored = ckpt.restore_latest(abstract_of(state))
  assert step == 4
  assert ckpt.save(8, state)  # the step is saved anew
  ckpt.close()
  assert ckpt.all_steps() == [4, 8]
