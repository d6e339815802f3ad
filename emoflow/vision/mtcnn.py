"""MTCNN (Zhang et al. 2016), the three-network cascade face detector, in Flax, plus its pure pieces.

P-Net scans an image pyramid (a 12x12 window every 2 pixels of each level)
for face candidates, R-Net re-scores and refines them from 24x24 crops and
O-Net from 48x48 crops, adding 5 landmarks. The architectures are those of
the `mtcnn` package (MIT, github.com/ipazc/mtcnn), whose Keras weights
`load_weights` converts: convs without padding, PReLU with one slope per
channel, max pools padded like TensorFlow's "SAME" (extra row/column at the
end, padding never wins) or unpadded ("VALID"). R-Net and O-Net swap the
feature map's rows and columns before flattening it into their dense layers,
as the Keras models do (a trace of the original Caffe models, trained on
transposed images). Inputs are RGB pixels mapped to (x - 127.5) / 128.
Outputs, as the Keras models give them: box regression (dx0, dy0, dx1, dy1,
in units of the box's width and height), softmax over (not face, face) and,
from O-Net, 10 landmark values, the 5 x's then the 5 y's (in units of the
box, in the order of emoflow.vision.align: image-left eye first).
Parameter counts: 6,632 (P-Net), 100,178 (R-Net), 389,040 (O-Net).

The cascade itself (thresholds, NMS, static candidate counts) is
detect.MTCNNDetector; below are the networks, the image pyramid and the box
arithmetic it uses.
"""

import importlib.util
import math
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CELL = 12  # P-Net's window, in pixels of a pyramid level
STRIDE = 2  # P-Net's step between windows
RNET_SIZE = 24
ONET_SIZE = 48


def preprocess(pixels: jax.Array) -> jax.Array:
  """RGB pixels in [0, 255] -> the networks' input, float32."""
  return (jnp.asarray(pixels, jnp.float32) - 127.5) / 128.0


class PReLU(nn.Module):
  """max(x, 0) + alpha * min(x, 0), one alpha per channel (the last axis), shared over space."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param("alpha", nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, alpha * x)


def _as_matmul(inputs: jax.Array, kernel: jax.Array, strides, padding, **unused) -> jax.Array:
  """A stride-1 "VALID" NHWC convolution as one matmul of its k x k patches (im2col).

  Same sums; on XLA's CPU backend P-Net's 1x1 heads and every R-Net and
  O-Net layer (on chunks of small crops) run 2-8x faster as matmuls than as
  convolutions (BUILD.md, MTCNN).
  """
  del unused
  if tuple(strides) != (1, 1) or padding != "VALID":
    raise ValueError(f"_as_matmul takes stride 1 and VALID padding, got {strides} and {padding}")
  rows, cols = kernel.shape[:2]
  out_h, out_w = inputs.shape[1] - rows + 1, inputs.shape[2] - cols + 1
  patches = jnp.concatenate([inputs[:, i:i + out_h, j:j + out_w] for i in range(rows)
                             for j in range(cols)], -1)
  return patches @ kernel.reshape(-1, kernel.shape[-1])


def _in_halves(inputs: jax.Array, kernel: jax.Array, *args, **kwargs) -> jax.Array:
  """The convolution as two, each computing half the output channels.

  XLA's CPU convolution of P-Net's 16 -> 32 channel layer runs about 3x
  faster as two 16 -> 16 convolutions (BUILD.md, MTCNN).
  """
  half = kernel.shape[-1] // 2
  return jnp.concatenate([jax.lax.conv_general_dilated(inputs, k, *args, **kwargs)
                          for k in (kernel[..., :half], kernel[..., half:])], -1)


def _conv(features: int, kernel: int, name: str, how=None) -> nn.Conv:
  """An unpadded convolution; `how` replaces lax.conv_general_dilated (same parameters, same sums)."""
  return nn.Conv(features, (kernel, kernel), padding="VALID", name=name, conv_general_dilated=how)


def _pool(x: jax.Array, window: int, padding: str) -> jax.Array:
  return nn.max_pool(x, (window, window), (2, 2), padding=padding)


def _flatten_transposed(x: jax.Array) -> jax.Array:
  """[N, H, W, C] -> [N, W * H * C]: Keras' Permute((2, 1, 3)) then Flatten."""
  return jnp.swapaxes(x, 1, 2).reshape(x.shape[0], -1)


class PNet(nn.Module):
  """Proposal network, fully convolutional: [N, H, W, 3] -> regression [N, h, w, 4], probs [N, h, w, 2].

  Output cell (i, j) sees the 12x12 input window at (2i, 2j); h = ceil((H - 2) / 2) - 4.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = _pool(PReLU(name="prelu1")(_conv(10, 3, "conv1")(x)), 2, "SAME")
    x = PReLU(name="prelu2")(_conv(16, 3, "conv2")(x))
    x = PReLU(name="prelu3")(_conv(32, 3, "conv3", _in_halves)(x))
    return (_conv(4, 1, "conv4_1", _as_matmul)(x),
            nn.softmax(_conv(2, 1, "conv4_2", _as_matmul)(x)))


class RNet(nn.Module):
  """Refinement network: [N, 24, 24, 3] -> regression [N, 4], probs [N, 2]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = _pool(PReLU(name="prelu1")(_conv(28, 3, "conv1", _as_matmul)(x)), 3, "SAME")
    x = _pool(PReLU(name="prelu2")(_conv(48, 3, "conv2", _as_matmul)(x)), 3, "VALID")
    x = PReLU(name="prelu3")(_conv(64, 2, "conv3", _as_matmul)(x))
    x = PReLU(name="prelu4")(nn.Dense(128, name="fc4")(_flatten_transposed(x)))
    return nn.Dense(4, name="fc5_1")(x), nn.softmax(nn.Dense(2, name="fc5_2")(x))


class ONet(nn.Module):
  """Output network: [N, 48, 48, 3] -> regression [N, 4], landmarks [N, 10] (x's, y's), probs [N, 2]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x = _pool(PReLU(name="prelu1")(_conv(32, 3, "conv1", _as_matmul)(x)), 3, "SAME")
    x = _pool(PReLU(name="prelu2")(_conv(64, 3, "conv2", _as_matmul)(x)), 3, "VALID")
    x = _pool(PReLU(name="prelu3")(_conv(64, 3, "conv3", _as_matmul)(x)), 2, "SAME")
    x = PReLU(name="prelu4")(_conv(128, 2, "conv4", _as_matmul)(x))
    x = PReLU(name="prelu5")(nn.Dense(256, name="fc5")(_flatten_transposed(x)))
    return (nn.Dense(4, name="fc6_1")(x), nn.Dense(10, name="fc6_2")(x),
            nn.softmax(nn.Dense(2, name="fc6_3")(x)))


# Each network's layers in the order of the package's weight lists (kernel and bias per
# conv or dense layer, the slopes per PReLU).
_LAYERS = {
    "pnet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4_1", "conv4_2"),
    "rnet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "fc4", "prelu4", "fc5_1",
             "fc5_2"),
    "onet": ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4", "fc5",
             "prelu5", "fc6_1", "fc6_2", "fc6_3"),
}
NETWORKS = {"pnet": PNet(), "rnet": RNet(), "onet": ONet()}
# Crops per R-Net or O-Net call on CPU (chunking.in_chunks): on 2 cores a chunk's activations
# stay in cache, 1.7-3x faster than one call on thousands of crops.
CPU_CHUNK = 32


def convert_keras(name: str, arrays: Sequence[np.ndarray]) -> dict[str, Any]:
  """One network's Keras weight list (as the `mtcnn` package stores it) -> Flax variables.

  Keras and Flax share the HWIO conv and (in, out) dense layouts; PReLU
  slopes (1, 1, C) or (C,) become (C,).
  """
  arrays = list(arrays)
  params = {}
  for layer in _LAYERS[name]:
    if layer.startswith("prelu"):
      params[layer] = {"alpha": np.asarray(arrays.pop(0), np.float32).reshape(-1)}
    else:
      kernel, bias = arrays.pop(0), arrays.pop(0)
      params[layer] = {"kernel": np.asarray(kernel, np.float32), "bias": np.asarray(bias, np.float32)}
  if arrays:
    raise ValueError(f"{name}: {len(arrays)} weight arrays left over; not the mtcnn package's layout")
  return {"params": params}


def load_weights() -> dict[str, dict[str, Any]]:
  """The installed `mtcnn` package's weights as {"pnet", "rnet", "onet"} -> Flax variables.

  Reads mtcnn/assets/weights/*.lz4 (joblib dumps of Keras weight lists)
  without importing the package, whose __init__ imports TensorFlow.
  """
  import joblib  # noqa: PLC0415 - only this loader needs it (an mtcnn dependency)
  spec = importlib.util.find_spec("mtcnn")
  if spec is None or not spec.submodule_search_locations:
    raise ValueError("the mtcnn detector needs the weights of the mtcnn package: pip install mtcnn")
  folder = os.path.join(spec.submodule_search_locations[0], "assets", "weights")
  return {name: convert_keras(name, joblib.load(os.path.join(folder, f"{name}.lz4")))
          for name in _LAYERS}


# --- the image pyramid ------------------------------------------------------------------


def pyramid(height: int, width: int, min_face: float = 20, factor: float = 0.709
            ) -> list[tuple[float, int, int]]:
  """The pyramid levels P-Net scans for a frame: [(scale, level height, level width)], largest first.

  Scale 12 / min_face maps the smallest face onto P-Net's 12-pixel window;
  each next level is `factor` times smaller, down to the last whose short
  side still holds a window (the original's loop). Level sides are
  ceil(scale * side).
  """
  if min_face <= 0 or not 0 < factor < 1:
    raise ValueError(f"need min_face > 0 and 0 < factor < 1, got {min_face} and {factor}")
  levels = []
  scale = CELL / min_face
  while min(height, width) * scale >= CELL:
    levels.append((scale, math.ceil(height * scale), math.ceil(width * scale)))
    scale *= factor
  return levels


# --- the cascade's box arithmetic --------------------------------------------------------


def pnet_candidates(regression: jax.Array, probs: jax.Array, count: int
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The `count` best P-Net windows of one pyramid level, in level pixels.

  Args:
    regression: [h, w, 4], probs: [h, w, 2]: P-Net's output on one level.
    count: windows to return.

  Returns:
    windows [count, 4] (x0, y0, x1, y1, before regression), their
    regression [count, 4] and face probabilities [count], best first; the
    probability is -1 in slots beyond the level's h * w windows. The
    windows' corners are whole level pixels, so their overlaps are exact:
    windows two cells apart overlap at IoU 0.5 exactly, the level NMS's
    threshold, which frame pixels would leave to rounding (`in_frame`
    converts after that NMS).
  """
  cols = probs.shape[1]
  scores = probs[..., 1].reshape(-1)
  take = min(count, scores.size)
  scores, index = jax.lax.top_k(scores, take)
  left, top = STRIDE * (index % cols), STRIDE * (index // cols)
  windows = jnp.stack([left, top, left + CELL, top + CELL], -1).astype(jnp.float32)
  pad = count - take
  return (jnp.pad(windows, ((0, pad), (0, 0))),
          jnp.pad(regression.reshape(-1, 4)[index], ((0, pad), (0, 0))),
          jnp.pad(scores, (0, pad), constant_values=-1.0))


def in_frame(windows: jax.Array, pixel_size: tuple[float, float]) -> jax.Array:
  """Windows [..., 4] in level pixels -> frame pixels; pixel_size: (frame height / level
  height, frame width / level width)."""
  size_y, size_x = pixel_size
  return windows * jnp.array([size_x, size_y, size_x, size_y], jnp.float32)


def calibrate(boxes: jax.Array, regression: jax.Array) -> jax.Array:
  """Applies box regression: each edge moves by its offset times the box's width (x) or height (y)."""
  size = boxes[..., 2:] - boxes[..., :2]
  return boxes + regression * jnp.concatenate([size, size], -1)


def square(boxes: jax.Array) -> jax.Array:
  """The square with the box's centre and its longer side (the next network sees square crops)."""
  centre = (boxes[..., :2] + boxes[..., 2:]) / 2
  half = jnp.max(boxes[..., 2:] - boxes[..., :2], -1, keepdims=True) / 2
  return jnp.concatenate([centre - half, centre + half], -1)


def landmarks_in_frame(values: jax.Array, boxes: jax.Array) -> jax.Array:
  """O-Net's 10 landmark values [..., 10] (x's then y's, in box units) on boxes [..., 4] -> [..., 5, 2] pixels."""
  relative = jnp.stack([values[..., :5], values[..., 5:]], -1)
  return boxes[..., None, :2] + relative * (boxes[..., None, 2:] - boxes[..., None, :2])


def crop(images: jax.Array, frame: jax.Array, boxes: jax.Array, size: int) -> jax.Array:
  """Crops each box [N, 4] out of its frame of images [F, H, W, C] (any real dtype), frame [N]
  int, and resizes them to float32 [N, size, size, C].

  Bilinear sampling at the centres of a size x size grid over each box
  (pixel (r, c) of the image covers [c, c + 1) x [r, r + 1)); pixels
  outside the image are 0, as the original pads crops at the frame edge
  with black.
  """
  height, width = images.shape[1:3]
  grid = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
  xs = boxes[:, 0, None] + grid * (boxes[:, 2, None] - boxes[:, 0, None]) - 0.5  # [N, size]
  ys = boxes[:, 1, None] + grid * (boxes[:, 3, None] - boxes[:, 1, None]) - 0.5
  frame = frame[:, None, None]

  def taps(coords: jax.Array, limit: int):
    low = jnp.floor(coords)
    weight = coords - low
    low = low.astype(jnp.int32)
    # Per neighbour: its index (clipped) and weight (0 outside the image).
    return [(jnp.clip(k, 0, limit - 1), jnp.where((k >= 0) & (k < limit), w, 0.0))
            for k, w in ((low, 1 - weight), (low + 1, weight))]

  out = 0.0
  for y, wy in taps(ys, height):
    for x, wx in taps(xs, width):
      pixels = images[frame, y[:, :, None], x[:, None, :]].astype(jnp.float32)  # [N, size, size, C]
      out = out + pixels * (wy[:, :, None] * wx[:, None, :])[..., None]
  return out
