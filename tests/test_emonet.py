"""EmoNet: shapes, size, MACs, and the fast layers against nn.Conv."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emoflow.models import EmoNet
from emoflow.models import layers
from emoflow.models.emonet import count_macs


@pytest.fixture(scope="module")
def net_and_vars():
  net = EmoNet(num_classes=8, embed_dim=128)
  faces = jnp.zeros((2, 112, 112, 3))
  return net, jax.jit(net.init)(jax.random.key(0), faces)


@pytest.fixture
def x64():
  """Float64 for the duration of one test (gradients at init differ ~1e-2
  between float32 summation orders; float64 makes the comparison exact)."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


def _faces(n, seed=1):
  return jax.random.uniform(jax.random.key(seed), (n, 112, 112, 3),
                            minval=-1.0, maxval=1.0)


def test_output_shapes_and_dtypes(net_and_vars):
  net, variables = net_and_vars
  logits, emb = jax.jit(net.apply)(variables, _faces(3))
  assert logits.shape == (3, 8) and logits.dtype == jnp.float32
  assert emb.shape == (3, 128) and emb.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


def test_bfloat16_compute_keeps_float32_params():
  net = EmoNet(embed_dim=16, dtype=jnp.bfloat16)
  variables = jax.jit(net.init)(jax.random.key(0), _faces(1))
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype("float32")}
  logits, emb = jax.jit(net.apply)(variables, _faces(1))
  assert logits.dtype == emb.dtype == jnp.bfloat16
  assert emb.shape == (1, 16)


def test_parameter_count_and_model_size(net_and_vars):
  _, variables = net_and_vars
  n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
  assert 870_000 <= n_params <= 890_000, n_params
  size_bytes = sum(x.size * 4 for x in jax.tree.leaves(variables))
  assert size_bytes < 10e6


def _macs_from_shapes(net, variables):
  """MACs per face from the shapes each conv/dense layer actually sees.

  A layer with kernel (..., Cout) makes prod(kernel.shape[:-1]) products
  per output element: kh*kw*Cin for dense convs, kh*kw for depthwise ones,
  Cin for Dense.
  """
  macs = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    kernel = context.module.variables.get("params", {}).get("kernel")
    if context.method_name == "__call__" and kernel is not None:
      macs.append(out.size // out.shape[0] * math.prod(kernel.shape[:-1]))
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: net.apply(v, x), variables, _faces(4))
  return sum(macs)


def test_macs_match_layer_shapes(net_and_vars):
  net, variables = net_and_vars
  macs = count_macs(embed_dim=128, num_classes=8)
  assert macs == _macs_from_shapes(net, variables)
  assert 137e6 < macs < 140e6
  assert count_macs(embed_dim=64) == macs - 512 * 64 - 64 * 8


def test_narrower_shallower_net_matches_its_count_and_outputs_the_same_shapes():
  net = EmoNet(num_classes=8, embed_dim=64, width=0.5, depth=0.5)
  variables = jax.jit(net.init)(jax.random.key(0), _faces(2))
  assert _macs_from_shapes(net, variables) == count_macs(64, 8, width=0.5, depth=0.5)
  params = variables["params"]
  assert params["stem"]["kernel"].shape[-1] == 32 and params["head"]["kernel"].shape[-1] == 256
  assert sum(name.startswith("group1_") for name in params) == 2  # 4 blocks at depth 1
  logits, emb = jax.jit(net.apply)(variables, _faces(3))
  assert logits.shape == (3, 8) and emb.shape == (3, 64)


def test_train_updates_batch_stats_eval_is_deterministic(net_and_vars):
  net, variables = net_and_vars
  faces = _faces(4)
  _, updates = jax.jit(lambda v, x: net.apply(
      v, x, train=True, mutable=["batch_stats"]))(variables, faces)
  before, after = variables["batch_stats"], updates["batch_stats"]
  assert jax.tree.structure(before) == jax.tree.structure(after)
  assert any(not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(before), jax.tree.leaves(after)))

  apply = jax.jit(lambda v, x: net.apply(v, x, train=False))
  first = apply(variables, faces)
  np.testing.assert_array_equal(first[0], apply(variables, faces)[0])
  # In eval mode a face's output does not depend on the rest of the batch.
  alone = apply(variables, faces[:1])
  np.testing.assert_allclose(alone[1], first[1][:1], rtol=1e-4, atol=1e-4)


def _check_against(ours, reference, x):
  """Same forward and same gradients (input, kernel) with shared params."""
  params = jax.jit(ours.init)(jax.random.key(2), x)
  weights = jax.random.normal(jax.random.key(3),
                              jax.eval_shape(ours.apply, params, x).shape,
                              x.dtype)

  def loss(module):
    return lambda p, x: jnp.vdot(module.apply(p, x).reshape(weights.shape),
                                 weights)

  np.testing.assert_allclose(
      jax.jit(ours.apply)(params, x),
      jax.jit(reference.apply)(params, x).reshape(weights.shape), rtol=1e-12,
      atol=1e-12)
  got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(params, x)
  want = jax.jit(jax.grad(loss(reference), argnums=(0, 1)))(params, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_depthwise_matches_grouped_conv(x64, stride, size):
  c = 6
  x = jax.random.normal(jax.random.key(0), (3, *size, c), jnp.float64)
  _check_against(
      layers.DepthwiseConv3x3(stride, **F64),
      nn.Conv(c, (3, 3), strides=stride, padding=((1, 1), (1, 1)),
              feature_group_count=c, use_bias=False, **F64), x)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_conv3x3_matches_conv(x64, stride, size):
  x = jax.random.normal(jax.random.key(0), (2, *size, 3), jnp.float64)
  _check_against(
      layers.Conv3x3(5, stride=stride, **F64),
      nn.Conv(5, (3, 3), strides=stride, padding=((1, 1), (1, 1)),
              use_bias=False, **F64), x)


def test_pointwise_matches_conv(x64):
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 6), jnp.float64)
  _check_against(layers.PointwiseConv(4, **F64),
                 nn.Conv(4, (1, 1), use_bias=False, **F64), x)


def test_global_depthwise_matches_valid_grouped_conv(x64):
  x = jax.random.normal(jax.random.key(0), (2, 7, 7, 6), jnp.float64)
  _check_against(
      layers.GlobalDepthwiseConv(**F64),
      nn.Conv(6, (7, 7), padding="VALID", feature_group_count=6,
              use_bias=False, **F64), x)


def test_depthwise_matches_lax_conv_in_float32():
  """The production dtype, against XLA's own grouped convolution."""
  x = jax.random.normal(jax.random.key(0), (2, 9, 10, 8))
  k = jax.random.normal(jax.random.key(1), (3, 3, 1, 8))
  for stride in (1, 2):
    want = jax.lax.conv_general_dilated(
        x, k, (stride, stride), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=8)
    got = jax.jit(layers.depthwise3x3, static_argnums=2)(x, k, stride)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
