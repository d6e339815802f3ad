"""Group proposals: the paper's region proposal network (Faster R-CNN's RPN on a ResNet-18 trunk).

The paper proposes group sub-windows, boxes around a group of faces, with
Faster R-CNN's RPN (Ren et al. 2015): ResNet-18's convolutional layers (no
average pooling, no FC) give 512-d maps at stride 32; a 3x3 conv + ReLU and
two parallel 1x1 convs give, per cell and per anchor, 2 class logits (group /
background) and 4 box offsets. Anchors are k = len(scales) * len(ratios)
boxes per cell (the paper's 3 scales x 3 ratios = 9), centred on the cell;
offsets are the R-CNN parametrisation (detect.decode_boxes, variances 1).

`width` scales every trunk channel count (1: ResNet-18's 64..512; 0.5 halves
them, for CPU runs); convs are bias-free with BatchNorm (eps 1e-5) except the
RPN's own three, which have biases and start at N(0, 0.01) as in Faster
R-CNN. The training loss (anchor labelling and sampling) is
emoflow.tasks.proposals; `GroupProposer` is what evaluation and the pipeline
run: network, decoding, clipping and NMS in one jitted function, boxes in
frame pixels.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from emoflow.vision import detect, resampling
from emoflow.vision.retinaface import ConvBN

Dtype = Any

STRIDE = 32  # of ResNet-18's last stage
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# exp() of a size offset is capped at 1000 / 16, as Faster R-CNN does, so an untrained
# head cannot overflow.
MAX_SIZE_DELTA = float(np.log(1000.0 / 16))


def preprocess(frames: jax.Array) -> jax.Array:
  """RGB frames [..., H, W, 3] in [0, 255] -> ResNet's input: ImageNet mean/std normalised, float32."""
  x = jnp.asarray(frames, jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


class BasicBlock(nn.Module):
  """ResNet's basic block: 3x3 stride s -> 3x3, projected (1x1 stride s) shortcut when the shape changes."""
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = ConvBN(self.features, 3, self.stride, slope=0.0, dtype=self.dtype, name="conv1")(x, train)
    y = ConvBN(self.features, 3, 1, slope=None, dtype=self.dtype, name="conv2")(y, train)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = ConvBN(self.features, 1, self.stride, slope=None, dtype=self.dtype,
                 name="downsample")(x, train)
    return nn.relu(x + y)


class ResNet18Trunk(nn.Module):
  """ResNet-18 without pooling and FC: [B, H, W, 3] -> [B, ceil(H/32), ceil(W/32), 512 * width]."""
  width: float = 1.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    channels = lambda c: max(1, round(c * self.width))
    x = ConvBN(channels(64), 7, 2, slope=0.0, dtype=self.dtype, name="stem")(x, train)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for n, (features, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
      for i in range(2):
        x = BasicBlock(channels(features), stride if i == 0 else 1, dtype=self.dtype,
                       name=f"layer{n}_{i}")(x, train)
    return x


class RPN(nn.Module):
  """images (preprocess()ed) [B, H, W, 3] -> (logits [B, A, 2], offsets [B, A, 4]), A in make_anchors order."""
  num_anchors: int = 9
  width: float = 1.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    x = ResNet18Trunk(self.width, dtype=self.dtype, name="trunk")(images.astype(self.dtype), train)
    init = nn.initializers.normal(0.01)
    x = nn.relu(nn.Conv(x.shape[-1], (3, 3), padding=1, kernel_init=init, dtype=self.dtype,
                        name="conv")(x))
    k, batch = self.num_anchors, x.shape[0]
    logits = nn.Conv(2 * k, (1, 1), kernel_init=init, dtype=self.dtype, name="cls")(x)
    offsets = nn.Conv(4 * k, (1, 1), kernel_init=init, dtype=self.dtype, name="reg")(x)
    out = jnp.promote_types(self.dtype, jnp.float32)  # bfloat16 compute, float32 outputs
    return logits.reshape(batch, -1, 2).astype(out), offsets.reshape(batch, -1, 4).astype(out)


def make_anchors(image_size: tuple[int, int], scales: Sequence[float] = (32, 80, 200),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0), stride: int = STRIDE) -> np.ndarray:
  """The anchors of an image of (height, width): float32 [A, 4] (cx, cy, w, h) pixels.

  A ceil(H/stride) x ceil(W/stride) grid of cell centres ((i + 0.5) *
  stride), and at each cell one anchor per (scale, ratio), scale outer: area
  scale^2, height / width = ratio. Ordered row, column, scale, ratio: the
  order of RPN's flattened outputs.
  """
  height, width = image_size
  rows, cols = -(-height // stride), -(-width // stride)
  scales, ratios = np.asarray(scales, np.float64), np.asarray(ratios, np.float64)
  w = (scales[:, None] / np.sqrt(ratios)[None]).ravel()
  h = (scales[:, None] * np.sqrt(ratios)[None]).ravel()
  cy, cx = np.meshgrid((np.arange(rows) + 0.5) * stride, (np.arange(cols) + 0.5) * stride,
                       indexing="ij")
  centres = np.stack([cx, cy], -1).reshape(-1, 1, 2).repeat(len(w), 1)
  sizes = np.broadcast_to(np.stack([w, h], -1), centres.shape)
  return np.concatenate([centres, sizes], -1).reshape(-1, 4).astype(np.float32)


def decode(offsets: jax.Array, anchors: jax.Array, image_size: tuple[int, int]) -> jax.Array:
  """Offsets [..., A, 4] -> boxes [..., A, 4] (x0, y0, x1, y1) clipped to the image, size offsets capped."""
  offsets = jnp.concatenate([offsets[..., :2], jnp.minimum(offsets[..., 2:], MAX_SIZE_DELTA)], -1)
  boxes = detect.decode_boxes(offsets, anchors)
  height, width = image_size
  return jnp.clip(boxes, 0, jnp.asarray([width, height, width, height], boxes.dtype))


def proposals(logits: jax.Array, offsets: jax.Array, anchors: jax.Array,
              image_size: tuple[int, int], *, score_threshold: float, nms_threshold: float,
              max_proposals: int, min_size: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One image's proposals: (boxes [P, 4], scores [P], valid [P]), P = max_proposals, best first.

  Decoded, clipped boxes with softmax(logits)[1] > score_threshold and both
  sides >= min_size pixels go through greedy NMS (detect.nms); empty slots
  are zeros with valid False.
  """
  boxes = decode(offsets, anchors, image_size)
  scores = jax.nn.softmax(logits)[:, 1]
  big = jnp.all(boxes[:, 2:] - boxes[:, :2] >= min_size, -1)
  scores = jnp.where(big, scores, 0.0)
  keep, valid = detect.nms(boxes, scores, nms_threshold, score_threshold, max_proposals)
  return (jnp.where(valid[:, None], boxes[keep], 0.0), jnp.where(valid, scores[keep], 0.0), valid)


def frame_scale(block: Mapping[str, Any], height: int, width: int) -> float:
  """The input scale for frames of height x width of a model directory's RPN (model.json's rpn block).

  Where the block records the training frames' size ("frame_size": [width,
  height]), the frame is scaled so its short side meets the short side the
  network was trained on (times the training input_scale): a 1280x720 video
  runs like the 640x360 training frames, at a quarter of the pixels. Else
  the training input_scale, as the frames came.
  """
  if "frame_size" not in block:
    return float(block["input_scale"])
  trained = min(block["frame_size"])
  return float(block["input_scale"]) * trained / min(height, width)


class GroupProposer:
  """A trained RPN as a function: frames uint8 RGB [F, H, W, 3] -> proposals in frame pixels.

  Returns (boxes [F, P, 4], scores [F, P], valid [F, P]) of `proposals`. The
  frames are resized by `input_scale` (bilinear) before the network, as in
  training; boxes come back in frame pixels. Jitted once per frame shape.
  """

  def __init__(self, model: RPN, variables: Mapping[str, Any] | None, *, scales, ratios,
               input_scale: float = 1.0, score_threshold: float = 0.5,
               nms_threshold: float = 0.5, max_proposals: int = 16, min_size: float = 1.0):
    if input_scale <= 0:
      raise ValueError(f"input_scale must be positive, got {input_scale}")
    if model.num_anchors != len(scales) * len(ratios):
      raise ValueError(f"the RPN has {model.num_anchors} anchors per cell but scales x ratios "
                       f"give {len(scales) * len(ratios)}")
    self.model, self.variables = model, variables
    self.scales, self.ratios = tuple(scales), tuple(ratios)
    self.input_scale = input_scale
    self.options = dict(score_threshold=score_threshold, nms_threshold=nms_threshold,
                        max_proposals=max_proposals, min_size=min_size)
    self._propose = jax.jit(self._forward)

  def _forward(self, variables, frames: jax.Array):
    num, height, width, _ = frames.shape
    size = (max(1, round(height * self.input_scale)), max(1, round(width * self.input_scale)))
    images = preprocess(frames)
    if size != (height, width):
      images = resampling.resize(images, *size)
    logits, offsets = self.model.apply(variables, images, train=False)
    anchors = jnp.asarray(make_anchors(size, self.scales, self.ratios))
    boxes, scores, valid = jax.vmap(
        lambda lg, off: proposals(lg, off, anchors, size, **self.options))(logits, offsets)
    scale = jnp.asarray([width / size[1], height / size[0]] * 2, jnp.float32)
    return boxes * scale, scores, valid

  def __call__(self, frames: np.ndarray) -> tuple[jax.Array, jax.Array, jax.Array]:
    return self._propose(self.variables, jnp.asarray(frames))
