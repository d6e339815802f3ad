"""FeA and FeB (paper Table 5): shapes, masking, FeA's average against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from emoflow.models import FeA, FeB

B, N, M = 3, 4, 6
MASK = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)


def _embeddings(seed=0):
  return np.random.default_rng(seed).normal(size=(B, N, M)).astype(np.float32)


@pytest.fixture(scope="module", params=[FeA(), FeB(hidden=8, dropout=0.5)], ids=["FeA", "FeB"])
def model_and_vars(request):
  model = request.param
  return model, model.init(jax.random.key(0), jnp.asarray(_embeddings()), jnp.asarray(MASK))


def test_shapes(model_and_vars):
  model, variables = model_and_vars
  logits = jax.jit(model.apply)(variables, _embeddings(), MASK)
  assert logits.shape == (B, 3) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_padded_slots_change_nothing(model_and_vars):
  model, variables = model_and_vars
  x = _embeddings()
  garbage = np.where(MASK[..., None], x, np.float32(1e6) * _embeddings(seed=1))
  garbage[2, 0, 0] = np.nan
  np.testing.assert_array_equal(model.apply(variables, x, MASK),
                                model.apply(variables, garbage, MASK))


def test_feb_dropout_only_when_training():
  model = FeB(hidden=8, dropout=0.5)
  x = _embeddings()
  variables = model.init(jax.random.key(0), jnp.asarray(x), jnp.asarray(MASK))
  rngs = {"dropout": jax.random.key(1)}
  np.testing.assert_array_equal(model.apply(variables, x, MASK),
                                model.apply(variables, x, MASK, train=False, rngs=rngs))
  assert not np.allclose(model.apply(variables, x, MASK),
                         model.apply(variables, x, MASK, train=True, rngs=rngs))


def test_fea_matches_numpy_average_of_face_scores():
  model = FeA()
  variables = model.init(jax.random.key(0), jnp.asarray(_embeddings()), jnp.asarray(MASK))
  kernel = np.asarray(variables["params"]["Dense_0"]["kernel"], np.float64)
  bias = np.asarray(variables["params"]["Dense_0"]["bias"], np.float64)
  x = _embeddings()
  probs = special.softmax(x @ kernel + bias, axis=-1)  # [B,N,3]
  want = np.stack([
      probs[b, MASK[b]].mean(0) if MASK[b].any() else special.softmax(bias)
      for b in range(B)])
  got = model.apply(variables, x, MASK)
  np.testing.assert_allclose(jax.nn.softmax(got), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.nn.logsumexp(got, axis=-1), 0, atol=1e-5)


def test_fea_invariant_to_order_of_valid_faces():
  model = FeA()
  x = _embeddings()
  variables = model.init(jax.random.key(0), jnp.asarray(x), jnp.asarray(MASK))
  perm = np.array([3, 1, 0, 2])
  np.testing.assert_allclose(model.apply(variables, x[:, perm], MASK[:, perm]),
                             model.apply(variables, x, MASK), rtol=1e-6, atol=1e-6)
