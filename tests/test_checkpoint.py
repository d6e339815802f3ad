"""Checkpoints: a train state on 8 devices comes back as it was saved, saving compiles nothing,
and checkpoints written by orbax's standard handler (emoflow before December 2026) restore."""

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from emoflow.train import checkpoint, optimizer, parallel
from emoflow.train.state import TrainState


def _replicated_state(shift: float) -> TrainState:
  """An Adam train state of a small two-layer net on the 8 test devices, weights moved by
  `shift` so that a fresh state differs from it. Its arrays divide over 8 replicas."""
  model = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(8)])
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8)))
  cfg = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-3, warmup_steps=0))
  state = TrainState.create(variables, optimizer.make_optimizer(cfg, 10))
  state = jax.tree.map(lambda x: x + shift if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
  return parallel.replicate(state.replace(step=jnp.asarray(4)), parallel.make_data_mesh())


def _assert_same(a: TrainState, b: TrainState):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert x.sharding.is_equivalent_to(y.sharding, x.ndim)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_replicated_state_saves_without_compiling_and_restores_as_it_was(tmp_path, caplog):
  saved, like = _replicated_state(0.5), _replicated_state(0.0)
  checkpoints = checkpoint.Checkpoints(str(tmp_path), best_metric="UAR")
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    checkpoints.save(saved, {"UAR": 0.5})
    checkpoints.wait()
  # Orbax's CPU default sliced each array per device, a compile per new slice shape.
  assert not [r for r in caplog.records if "compil" in r.getMessage().lower()]
  _assert_same(checkpoints.restore(like), saved)
  checkpoints.close()


def test_a_checkpoint_from_orbaxs_standard_handler_restores(tmp_path):
  saved = _replicated_state(0.5)
  with ocp.CheckpointManager(str(tmp_path)) as manager:
    manager.save(4, args=ocp.args.StandardSave(saved))
  checkpoints = checkpoint.Checkpoints(str(tmp_path), best_metric="UAR")
  assert checkpoints.latest_step() == 4
  _assert_same(checkpoints.restore(_replicated_state(0.0)), saved)
  checkpoints.close()
