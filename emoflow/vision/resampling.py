"""Bilinear image resizing as jax.image.resize does it, at a fraction of the work.

jax.image.resize(..., "linear") contracts each axis with a dense [size,
new_size] weight matrix; when shrinking a 720p frame nearly all of those
weights are zero (4 of 720 per output row for MTCNN's largest pyramid
level), so the matmuls cost far more than the pixels. `resize` computes the
same weights and sums only each output's band of nonzero ones. MTCNN's
pyramid, the RPN and RetinaFace at an input scale use it.
"""

import jax
import jax.numpy as jnp
import numpy as np


def taps(size: int, new_size: int) -> tuple[np.ndarray, np.ndarray]:
  """The weights of jax.image.resize(..., "linear") along one axis as taps: (index, weight), int32
  and float32 [new_size, T].

  Output i is sum_t weight[i, t] * input[index[i, t]]. jax's formula, in
  float32 as its code writes it (jax/_src/image/scale.py,
  compute_weight_mat): the triangle kernel at (i + 0.5) / scale - 0.5,
  scale = new_size / size, widened by 1 / scale when shrinking
  (antialiasing), truncated at the edges and normalised to sum 1. jax
  contracts with the dense [size, new_size] matrix; the taps keep each
  output's band of nonzero weights, T the widest (~2 / scale when
  shrinking, 2 when enlarging), padded with weight 0.
  """
  f32 = np.float32
  inv_scale = f32(1) / f32(new_size / size)
  kernel_scale = max(inv_scale, f32(1))
  sample = (np.arange(new_size, dtype=f32) + f32(0.5)) * inv_scale - f32(0.5)
  distance = np.abs(sample - np.arange(size, dtype=f32)[:, None])  # [size, new_size]
  weights = np.maximum(f32(0), f32(1) - distance / kernel_scale)
  total = weights.sum(0, dtype=f32)
  weights = np.where(total > 1000 * np.finfo(f32).eps, weights / np.where(total != 0, total, 1), f32(0))
  weights = np.where((sample >= -0.5) & (sample <= size - 0.5), weights, f32(0))
  nonzero = weights != 0
  first = nonzero.argmax(0)
  end = size - nonzero[::-1].argmax(0)
  width = max(int((end - first).max()), 1)
  index = first[:, None] + np.arange(width)
  inside = index < end[:, None]
  index = np.minimum(index, size - 1)
  return index.astype(np.int32), np.where(inside, weights[index, np.arange(new_size)[:, None]], f32(0))


def _resample(x: jax.Array, axis: int, index: np.ndarray, weight: np.ndarray) -> jax.Array:
  """One axis of `resize`: float32 sum over the taps (a loop: one small program for any T)."""
  shape = [1] * x.ndim
  shape[axis] = -1

  def tap(total, index_weight):
    i, w = index_weight
    return total + jnp.take(x, i, axis).astype(jnp.float32) * w.reshape(shape), None

  out_shape = list(x.shape)
  out_shape[axis] = len(index)
  total, _ = jax.lax.scan(tap, jnp.zeros(out_shape, jnp.float32), (index.T, weight.T))
  return total


def resize(images: jax.Array, rows: int, cols: int) -> jax.Array:
  """images [N, H, W, C] (any real dtype) -> float32 [N, rows, cols, C], as
  jax.image.resize(images, (N, rows, cols, C), "linear") within float32 rounding.

  With `taps`' banded weights, a pass over rows, then one over
  columns: each output pixel sums ~2 / scale inputs per axis where jax's
  dense contraction sums all of them (4 instead of 720 down the rows of a
  720p frame's largest pyramid level). An axis whose size stays is left
  alone, as jax does.
  """
  x = images
  for axis, size in ((1, rows), (2, cols)):
    if x.shape[axis] != size:
      x = _resample(x, axis, *taps(x.shape[axis], size))
  return x.astype(jnp.float32)
