"""emoflow.chunking: a batch computed chunk by chunk equals one call, values and gradients."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from emoflow import chunking
from emoflow.tasks import group as group_task


@pytest.mark.parametrize("unroll", [False, True])
def test_in_chunks_hands_fn_chunks_and_returns_rows_in_order(unroll):
  seen = []

  def fn(x, y):
    seen.append(x.shape)
    return x * 2 + y[:, None], x.sum(axis=1)

  x = jnp.arange(10 * 3, dtype=jnp.float32).reshape(10, 3)
  y = jnp.arange(10, dtype=jnp.float32)
  doubled, sums = jax.jit(lambda x, y: chunking.in_chunks(fn, x, y, chunk=4, unroll=unroll))(x, y)
  assert seen == ([(4, 3)] * 3 if unroll else [(4, 3)])  # 10 rows padded to 12
  np.testing.assert_array_equal(doubled, x * 2 + y[:, None])
  np.testing.assert_array_equal(sums, x.sum(axis=1))


def test_small_batches_and_chunk_zero_are_one_call():
  calls = []
  fn = lambda x: calls.append(x.shape) or x
  chunking.in_chunks(fn, jnp.zeros((4, 2)), chunk=8)
  chunking.in_chunks(fn, jnp.zeros((12, 2)), chunk=0)
  assert calls == [(4, 2), (12, 2)]


def test_flow_fusion_in_chunks_equals_one_call_with_gradients(monkeypatch):
  """FeC's class scores and their gradient are the same with the flow run 4 groups at a time."""
  config = ml_collections.ConfigDict({"fusion": "fec", "num_classes": 3, "max_faces": 5,
                                      "flow_units": 2, "flow_width": 4,
                                      "prior": "learned_gaussian", "ce_weight": 1.0,
                                      "feb_hidden": 8})
  fusion = group_task.make_fusion(config)
  rng = np.random.default_rng(0)
  mask = np.arange(5)[None] < rng.integers(1, 6, 10)[:, None]
  features = group_task.face_features(jnp.asarray(rng.normal(size=(10, 5, 6)), jnp.float32),
                                      jnp.asarray(mask))
  variables = jax.jit(fusion.init)(jax.random.key(0), features[:1], mask[:1])

  def scores(params, chunk):
    monkeypatch.setattr(group_task, "CPU_FLOW_CHUNK", chunk)
    return fusion.class_scores({"params": params}, features, mask)[0]

  def grad(chunk):  # jitted afresh: traced with this chunk
    return jax.jit(jax.grad(lambda p: jnp.sum(scores(p, chunk) ** 2)))(variables["params"])

  # 0: one call; 4: the 10 groups as 4 + 4 + 2 (padded).
  jit_scores = jax.jit(scores, static_argnums=1)
  np.testing.assert_allclose(jit_scores(variables["params"], 4), jit_scores(variables["params"], 0),
                             rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(grad(4)), jax.tree.leaves(grad(0))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
