"""Data parallelism: one EmoNet train step on 1 device equals the same step on 8 CPU devices.

Compared in float64: in float32 this deep network's gradients at initialisation
differ by ~1e-2 relative between any two summation orders (see STACK.md), which
would hide a real mismatch (e.g. BatchNorm over the local instead of the
global batch, which changes the loss at the 1e-2 level too).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from emoflow.models import EmoNet
from emoflow.tasks import individual
from emoflow.train import optimizer, parallel
from emoflow.train.state import TrainState


@pytest.fixture
def float64():
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


def _one_step(devices):
  model = EmoNet(num_classes=8, embed_dim=32, dtype=jnp.float64)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (16, 112, 112, 3), dtype=np.uint8),
           "label": rng.integers(0, 8, 16).astype(np.int32)}
  variables = model.init(jax.random.key(0), np.zeros((1, 112, 112, 3), np.float32), train=False)
  variables = jax.tree.map(lambda x: x.astype(jnp.float64), variables)
  cfg = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-3, warmup_steps=0))
  state = TrainState.create(variables, optimizer.make_optimizer(cfg, 10))
  mesh = parallel.make_data_mesh(devices)
  step = parallel.jit_train_step(individual.make_train_step(model, np.ones(8, np.float32)), mesh)
  state, metrics = step(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh),
                        jax.random.key(1))
  return jax.device_get(state), jax.device_get(metrics)


def test_eight_devices_match_one(float64):
  assert len(jax.devices()) == 8, "conftest forces 8 CPU devices"
  one_state, one_metrics = _one_step(jax.devices()[:1])
  eight_state, eight_metrics = _one_step(jax.devices())
  np.testing.assert_allclose(eight_metrics["loss"], one_metrics["loss"], rtol=1e-10)
  leaves_one = jax.tree_util.tree_leaves_with_path(one_state)
  leaves_eight = jax.tree.leaves(eight_state)
  for (path, a), b in zip(leaves_one, leaves_eight):
    np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-10, err_msg=jax.tree_util.keystr(path))


def test_batch_must_divide_over_devices():
  mesh = parallel.make_data_mesh()
  try:
    parallel.check_batch_size(12, mesh)
  except ValueError as e:
    assert "not divisible by the 8 devices" in str(e)
  else:
    raise AssertionError("12 over 8 devices must be refused")
