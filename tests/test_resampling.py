"""emoflow.vision.resampling against jax.image.resize, the resize it stands in for."""

import jax
import numpy as np
import pytest

from emoflow.vision import mtcnn, resampling


@pytest.mark.parametrize("shape,rows,cols", [
    ((2, 37, 53, 3), 17, 29), ((1, 9, 11, 3), 20, 31), ((1, 30, 40, 2), 45, 13),
    ((1, 30, 40, 1), 30, 7), *(((1, 120, 200, 3), r, c) for _, r, c in mtcnn.pyramid(120, 200, 12))])
def test_resize_is_jax_image_resize(shape, rows, cols):
  """Shrinking, enlarging, one axis of each, an axis left alone, a pyramid's levels; uint8 in.

  Against jax.image.resize in float64: the float32 sample positions alone
  (jax's own float32 result has them too) put results up to ~2e-3 off here.
  """
  x = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
  got = resampling.resize(x, rows, cols)
  with jax.enable_x64(True):
    want = jax.image.resize(np.asarray(x, np.float64), (shape[0], rows, cols, shape[3]), "linear")
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=255 * 2e-5)


def test_resize_taps_are_the_band_of_nonzero_weights():
  index, weight = resampling.taps(720, 432)  # the 720p pyramid's largest level
  assert index.shape == weight.shape == (432, 4) and index.dtype == np.int32
  assert weight.dtype == np.float32 and np.all(weight[:, 0] > 0)
  np.testing.assert_allclose(weight.sum(1), 1, rtol=1e-6)
  assert np.all(np.diff(index, axis=1)[weight[:, 1:] > 0] == 1)  # consecutive input rows
  assert np.all((index >= 0) & (index < 720))
