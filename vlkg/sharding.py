"""Device meshes, rule-based parameter sharding, and global batches.

The same code runs on 1 CPU, 8 fake CPU devices, a GPU or a TPU pod slice:

  * ``config.mesh`` is a list of (axis name, size); one size may be -1 ("the rest").
    The default ``[("data", -1)]`` is pure data parallelism.
  * ``config.sharding_rules`` maps regexes over '/'-joined parameter paths to
    partition specs; the first match wins and unmatched parameters are replicated.
    A spec is a tuple of mesh axis names / None per dimension, or the string
    ``"fsdp"``: shard the largest dimension that the ``fsdp`` axis divides.
  * The batch dimension is split over every mesh axis, so each device gets a distinct
    slice of the global batch whatever the parameter layout.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def initialize_distributed(env: Mapping[str, str] = os.environ) -> bool:
  """Joins a multi-process run; call before anything touches a device.

  * ``VLKG_NUM_PROCESSES`` > 1 with ``VLKG_PROCESS_ID`` and ``VLKG_COORDINATOR``
    (host:port of process 0): explicit peers, e.g. several CPU processes on one
    machine (``launch/multihost_cpu.sh``) or GPU hosts without a cluster manager.
    On CPU the processes exchange data through gloo.
  * ``VLKG_DISTRIBUTED=1``: let ``jax.distributed.initialize`` find its peers
    itself, as it does on every worker of a TPU pod slice (``launch/tpu_vm.sh``)
    and under SLURM.
  * Neither: a single process; nothing to do.

  Returns whether a multi-process run was joined.
  """
  num = int(env.get("VLKG_NUM_PROCESSES", "1") or 1)
  if num > 1:
    missing = [k for k in ("VLKG_PROCESS_ID", "VLKG_COORDINATOR") if not env.get(k)]
    if missing:
      raise ValueError(f"VLKG_NUM_PROCESSES={num} needs {' and '.join(missing)} too")
    if env.get("JAX_PLATFORMS", "").startswith("cpu"):
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=env["VLKG_COORDINATOR"],
                               num_processes=num, process_id=int(env["VLKG_PROCESS_ID"]))
    return True
  if env.get("VLKG_DISTRIBUTED", "") not in ("", "0"):
    jax.distributed.initialize()
    return True
  return False


def make_mesh(axes, devices=None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(name for name, _ in axes)
  sizes = [int(size) for _, size in axes]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh={axes}: at most one axis may have size -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"config.mesh={axes} does not divide {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"config.mesh={axes} has {int(np.prod(sizes))} devices but "
                     f"{len(devices)} are available")
  return Mesh(np.asarray(devices).reshape(sizes), names)


def path_str(path) -> str:
  """The '/'-joined name of a jax key path, e.g. "opt_state/1/0/mu/img/kernel".

  Train states hold optax namedtuples as well as dicts, so this works on key paths
  of any pytree; for nested params dicts alone ``checkpoint.flatten_params``
  (``flax.traverse_util``) gives the same names.
  """
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _spec_for(name: str, shape, rules, mesh: Mesh) -> P:
  for pattern, spec in rules:
    if re.fullmatch(pattern, name) or re.search(pattern, name):
      if spec == "fsdp":
        return _fsdp_spec(shape, mesh)
      spec = tuple(spec or ())
      if len(spec) > len(shape):
        raise ValueError(f"sharding rule {pattern!r} -> {spec} has more dimensions than "
                         f"parameter {name} {tuple(shape)}")
      return P(*spec)
  return P()


def _fsdp_spec(shape, mesh: Mesh) -> P:
  size = mesh.shape.get("fsdp", 1)
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % size == 0 and size > 1:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def tree_shardings(abstract_tree, rules, mesh: Mesh):
  """NamedShardings for a pytree of arrays/ShapeDtypeStructs, by path rules."""
  def one(path, leaf):
    shape = getattr(leaf, "shape", ())
    return NamedSharding(mesh, _spec_for(path_str(path), shape, rules, mesh))
  return jax.tree_util.tree_map_with_path(one, abstract_tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(mesh.axis_names))


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global arrays split over all devices of the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
