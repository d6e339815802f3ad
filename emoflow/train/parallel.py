"""Data parallelism on JAX's own runtime: one ('data',) mesh over all devices.

The batch is sharded along its first axis, everything else is replicated, and
a step is jitted once with those shardings (the modern form of pmap). With jit
and NamedSharding, BatchNorm statistics are over the global batch, so a step
on 8 devices computes what the same step computes on one.
"""

from typing import Callable, Iterable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else list(devices)
  # Auto axes: Explicit axes (the default of make_mesh) break optax's
  # integer-label cross-entropy gradients on jax 0.12.
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, name: str = "batch_size") -> int:
  """Per-process batch size; one-line error (naming the config key) when it does not divide."""
  if global_batch_size % mesh.size:
    raise ValueError(f"{name} {global_batch_size} is not divisible by the {mesh.size} "
                     "devices of the mesh")
  return global_batch_size // jax.process_count()


def shard_batch(batch, mesh: Mesh):
  """Places this process's slice of the global batch on the mesh, sharded along axis 0."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def replicate(tree, mesh: Mesh):
  """Places a pytree (the train state) replicated on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def jit_train_step(step: Callable, mesh: Mesh) -> Callable:
  """jit(step(state, batch, rng) -> (state, metrics)) with the state donated."""
  return jax.jit(step,
                 in_shardings=(replicated(mesh), batch_sharded(mesh), replicated(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)),
                 donate_argnums=(0,))


def jit_eval_step(step: Callable, mesh: Mesh) -> Callable:
  """jit(step(state, batch) -> outputs) with outputs kept sharded like the batch."""
  return jax.jit(step, in_shardings=(replicated(mesh), batch_sharded(mesh)),
                 out_shardings=batch_sharded(mesh))


def gather_valid(eval_step: Callable, state, batches: Iterable[dict], mesh: Mesh) -> dict:
  """Runs a jit_eval_step over `batches`; its outputs of all processes, rows where "valid" holds.

  The step must return the batch's boolean "valid" (padding) mask among its outputs.
  """
  parts = []
  for batch in batches:
    out = eval_step(state, shard_batch(batch, mesh))
    parts.append(jax.tree.map(np.asarray, multihost_utils.process_allgather(out, tiled=True)))
  joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  valid = joined.pop("valid").astype(bool)
  return {k: v[valid] for k, v in joined.items()}
