"""NVPF (Eqs. 5-6): a bijection with the right log-det, blind to empty face slots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emoflow.models import NVPF

M, N, WIDTH, UNITS = 8, 5, 8, 3
MASKS = np.array([
    [1, 1, 1, 1, 1],  # full group
    [1, 1, 1, 0, 0],  # padded
    [1, 0, 0, 0, 0],  # one face
    [0, 0, 0, 0, 0],  # fully padded
], bool)


def random_variables(flow, s, mask, seed=0, std=0.1):
  """Variables of `flow` drawn at random, the zero last convs included: F is not the identity.

  Weights are N(0, std), the coupling scales 1 + N(0, std). Shapes come from
  `jax.eval_shape` and numbers from numpy: no per-shape XLA compiles.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(flow.init, jax.random.key(0), s, mask)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: ((path[-1].key == "scale") +
                       std * rng.standard_normal(x.shape)).astype(x.dtype),
      shapes)


def random_s(mask, m=M, seed=2, dtype=np.float32):
  """S [B, m, N] with normal entries in present columns and zeros in empty ones."""
  s = np.random.default_rng(seed).standard_normal((len(mask), m, mask.shape[1]))
  return (s * mask[:, None, :]).astype(dtype)


@pytest.fixture
def x64():
  before = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", before)


def test_identity_at_init():
  flow = NVPF(num_units=UNITS, width=WIDTH)
  s = random_s(MASKS)
  h, logdet = flow.apply(flow.init(jax.random.key(0), s, MASKS), s, MASKS)
  np.testing.assert_array_equal(h, s)
  np.testing.assert_array_equal(logdet, 0)


def test_inverse_undoes_forward():
  flow = NVPF(num_units=UNITS, width=WIDTH)
  s = random_s(MASKS)
  v = random_variables(flow, s, MASKS)
  h, logdet = flow.apply(v, s, MASKS)
  back, neg_logdet = flow.apply(v, h, MASKS, method=NVPF.inverse)
  valid = np.broadcast_to(MASKS[:, None, :], s.shape)
  assert np.all(h[valid] != s[valid]) and np.all(np.abs(logdet[:3]) > 0.1)
  np.testing.assert_allclose(back, s, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(neg_logdet, -logdet, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(logdet[3], 0)


def test_logdet_is_jacobian_of_valid_entries(x64):
  flow = NVPF(num_units=UNITS, width=WIDTH, param_dtype=jnp.float64)
  m = 5  # odd: the halves of b are 2 and 3 rows
  s = random_s(MASKS, m=m, dtype=np.float64)
  v = random_variables(flow, s, MASKS)
  # One Jacobian for the batch, [B, m, N, B, m, N]; example i's valid block below.
  jac, logdet = jax.jit(jax.jacfwd(lambda x: flow.apply(v, x, MASKS), has_aux=True))(s)
  for i, mask in enumerate(MASKS[:3]):
    valid = np.broadcast_to(mask, (m, N))
    block = jac[i][valid][:, i][:, valid]
    sign, expected = jnp.linalg.slogdet(block)
    assert sign == 1
    np.testing.assert_allclose(logdet[i], expected, rtol=1e-10, atol=1e-10)


def test_empty_slots_pass_through_and_are_ignored():
  flow = NVPF(num_units=UNITS, width=WIDTH)
  s = random_s(MASKS)
  garbage = 100 * random_s(~MASKS, seed=9)
  dirty = s + garbage
  v = random_variables(flow, s, MASKS)
  h, logdet = flow.apply(v, s, MASKS)
  h_dirty, logdet_dirty = flow.apply(v, dirty, MASKS)
  empty = np.broadcast_to(~MASKS[:, None, :], s.shape)
  np.testing.assert_array_equal(h[empty], 0)
  np.testing.assert_array_equal(h_dirty[empty], dirty[empty])
  np.testing.assert_array_equal(h_dirty[~empty], h[~empty])
  np.testing.assert_array_equal(logdet_dirty, logdet)


def test_number_and_order_of_empty_slots_do_not_matter():
  flow = NVPF(num_units=UNITS, width=WIDTH)
  mask8 = np.pad(MASKS, ((0, 0), (0, 3)))
  mask16 = np.pad(MASKS, ((0, 0), (0, 11)))
  s8 = random_s(mask8)
  s16 = np.pad(s8, ((0, 0), (0, 0), (0, 8))) + random_s(~mask16, seed=5)
  v = random_variables(flow, s8, mask8)
  apply = jax.jit(flow.apply)
  h8, logdet8 = apply(v, s8, mask8)
  h16, logdet16 = apply(v, s16, mask16)
  np.testing.assert_allclose(h16[:, :, :8] * mask8[:, None], h8, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(logdet16, logdet8, rtol=1e-6, atol=1e-6)

  perm = np.concatenate([np.arange(N), N + np.random.default_rng(0).permutation(16 - N)])
  h_perm, logdet_perm = apply(v, s16[:, :, perm], mask16[:, perm])
  np.testing.assert_array_equal(h_perm, h16[:, :, perm])
  np.testing.assert_array_equal(logdet_perm, logdet16)


def test_parameter_shapes_and_single_compile():
  flow = NVPF(num_units=UNITS, width=WIDTH)
  s = random_s(MASKS)
  params = flow.init(jax.random.key(0), s, MASKS)["params"]
  assert sorted(params) == [f"units_{i}" for i in range(UNITS)]
  unit = params["units_0"]
  assert unit["scale"].shape == (M,)
  for net in ("T1", "T2"):
    shapes = {k: p["kernel"].shape for k, p in unit[net].items()}
    assert shapes == {
        "lift": (3, 3, 1, WIDTH),
        "block0_a": (3, 3, WIDTH, WIDTH), "block0_b": (3, 3, WIDTH, WIDTH),
        "block1_a": (3, 3, WIDTH, WIDTH), "block1_b": (3, 3, WIDTH, WIDTH),
        "out": (3, 3, WIDTH, 1),
    }
  per_net = 10 * WIDTH + 2 * 2 * (9 * WIDTH + 1) * WIDTH + 9 * WIDTH + 1
  count = sum(x.size for x in jax.tree.leaves(params))
  assert count == UNITS * (2 * per_net + M)

  traces = []

  @jax.jit
  def forward(params, s, mask):
    traces.append(None)
    return flow.apply({"params": params}, s, mask)

  forward(params, s, MASKS)
  forward(params, 2 * s, ~MASKS)
  assert len(traces) == 1
