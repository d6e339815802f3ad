"""Convolution layers written as slices and GEMMs, fast on XLA:CPU.

XLA:CPU runs grouped convolutions (`nn.Conv(feature_group_count=C)`) far
below its matmul speed (jax-ml/jax#23713), and 1x1 convolutions on 4-D input
slower than one flat matmul. These layers compute the same functions as
`nn.Conv` with symmetric zero padding (PyTorch's `padding=1` for 3x3) from
shifted slices and 2-D GEMMs. Their parameters keep `nn.Conv`'s names and
shapes (`kernel`: (kh, kw, Cin / groups, Cout)), so weights move between
these layers, `nn.Conv` and PyTorch (after a transpose) unchanged.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any


def conv3x3_taps(x: jax.Array, stride: int) -> list[jax.Array]:
  """The 9 shifted views of `x` [B,H,W,C] that a padded 3x3 conv combines.

  Tap (i, j) (row-major) holds x_pad[:, i + s*h, j + s*w, :] for every output
  position (h, w), with one zero row/column of padding on each side, so the
  output is ((H - 1) // s + 1, (W - 1) // s + 1).
  """
  b, h, w, c = x.shape
  ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [
      lax.slice(xp, (0, i, j, 0),
                (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                (1, stride, stride, 1))
      for i in range(3) for j in range(3)
  ]


def depthwise3x3(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """Depthwise 3x3 conv, padding 1: 9 multiply-adds of shifted views.

  Args:
    x: [B,H,W,C] input.
    kernel: [3,3,1,C] (the `nn.Conv(feature_group_count=C)` layout).
    stride: 1 or 2, the same in both spatial dimensions.
  """
  k = kernel.reshape(9, -1)
  out = None
  for t, tap in enumerate(conv3x3_taps(x, stride)):
    term = tap * k[t]
    out = term if out is None else out + term
  return out


def pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """1x1 conv as one 2-D GEMM: (B*H*W, Cin) @ (Cin, Cout)."""
  cin, cout = kernel.shape[-2:]
  y = jnp.dot(x.reshape(-1, cin), kernel.reshape(cin, cout))
  return y.reshape(*x.shape[:-1], cout)


class DepthwiseConv3x3(nn.Module):
  """Depthwise 3x3 convolution without bias, padding 1 on each side."""
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (3, 3, 1, x.shape[-1]),
                        self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return depthwise3x3(x, kernel, self.stride)


class PointwiseConv(nn.Module):
  """1x1 convolution without bias, computed as a flat GEMM."""
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init,
                        (1, 1, x.shape[-1], self.features), self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return pointwise(x, kernel)


class Conv3x3(nn.Module):
  """Dense 3x3 convolution without bias, padding 1: im2col + one GEMM.

  Meant for few input channels (the RGB stem), where the 9x larger im2col
  matrix is small.
  """
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init,
                        (3, 3, x.shape[-1], self.features), self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    cols = jnp.concatenate(conv3x3_taps(x, self.stride), axis=-1)
    return pointwise(cols, kernel.reshape(1, 1, -1, self.features))


class GlobalDepthwiseConv(nn.Module):
  """Depthwise conv whose window is the whole feature map (MobileFaceNet GDC).

  Maps [B,H,W,C] to [B,C] with one HxW weight per channel and no padding: a
  learned, position-aware global pooling.
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _, h, w, c = x.shape
    kernel = self.param("kernel", self.kernel_init, (h, w, 1, c),
                        self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return jnp.einsum("bhwc,hwc->bc", x, kernel[:, :, 0])
