"""RetinaFace, the paper's face detector, in Flax: box, 5 landmarks and face score per anchor.

The architecture of the public PyTorch model (github.com/biubug6/Pytorch_Retinaface),
with either of its two trunks:
- `mobilenet0.25`: MobileNet-v1 at width 0.25 (stem conv3x3/2 to 8 channels, then
  depthwise-separable units), leaky ReLU 0.1; FPN/SSH width 64.
- `resnet50`: torchvision's ResNet-50 (stride on the 3x3 conv of a bottleneck);
  FPN/SSH width 256.
The trunk's features at strides 8, 16 and 32 go through an FPN (1x1 lateral
convs, nearest upsampling top-down, a 3x3 merge conv on the two finer levels),
an SSH context module per level (3x3, 5x5 and 7x7 receptive fields as stacked
3x3 convs, concatenated: 1/2 + 1/4 + 1/4 of the width) and per level three 1x1
heads for the 2 anchors of a cell: class logits (2), box offsets (4) and
landmark offsets (10). Convs have no bias except the heads'; BatchNorm follows
every other conv (epsilon 1e-5 as in PyTorch) and runs on its stored statistics
unless `train=True`. The leaky slope of FPN and SSH is 0.1 at width <= 64, else 0.

Inputs are what the public model was trained on: BGR pixels in [0, 255] minus the
per-channel mean (104, 117, 123), unscaled; `preprocess` makes them from RGB
frames. Outputs line up with `detect.make_anchors((H, W))`: level by level
(strides 8, 16, 32), row-major over cells, 2 anchors (min sizes) per cell;
`detect.decode` turns loc/landm into boxes and landmarks and
`softmax(conf)[..., 1]` is the face score.

Flax names mirror the PyTorch state_dict (see retinaface_convert.py): `body`
(`stage{1,2,3}_{i}` or `conv1`, `bn1`, `layer{1..4}_{i}`), `fpn`
(`output{1,2,3}`, `merge{1,2}`), `ssh{1,2,3}` (`conv3X3`, `conv5X5_1`,
`conv5X5_2`, `conv7X7_2`, `conv7x7_3`), `{class,bbox,landmark}_head_{i}/conv1x1`.
Parameter counts: 426,608 (mobilenet0.25) and 27,293,600 (resnet50).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from emoflow.models import layers

Dtype = Any

BGR_MEAN = (104.0, 117.0, 123.0)
NUM_ANCHORS = 2  # per cell and level: the two min sizes of detect.make_anchors


def preprocess(frames: jax.Array) -> jax.Array:
  """RGB frames [..., H, W, 3] in [0, 255] -> the public model's input (BGR minus mean), float32."""
  return jnp.asarray(frames, jnp.float32)[..., ::-1] - jnp.asarray(BGR_MEAN, jnp.float32)


def _batch_norm(train: bool, dtype: Dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, name=name)


def _conv(features: int, kernel: int, stride: int, dtype: Dtype, name: str):
  """A bias-free conv padded like PyTorch's `padding=kernel // 2`; 1x1 as a GEMM on the subsampled x."""
  if kernel == 1:
    conv = layers.PointwiseConv(features, dtype=dtype, name=name)
    return lambda x: conv(x[:, ::stride, ::stride])
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                 use_bias=False, dtype=dtype, name=name)


def _activate(x: jax.Array, slope: float | None) -> jax.Array:
  """None: linear; 0: ReLU; else leaky ReLU with that slope."""
  if slope is None:
    return x
  return nn.relu(x) if slope == 0 else nn.leaky_relu(x, slope)


class ConvBN(nn.Module):
  """Conv (no bias) -> BatchNorm -> activation: the public code's conv_bn family."""
  features: int
  kernel: int = 3
  stride: int = 1
  slope: float | None = 0.0  # None: no activation
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = _conv(self.features, self.kernel, self.stride, self.dtype, "conv")(x)
    return _activate(_batch_norm(train, self.dtype, "bn")(x), self.slope)


class DepthwiseSeparable(nn.Module):
  """dw3x3 stride s (BN, leaky) -> 1x1 (BN, leaky): one MobileNet-v1 unit."""
  features: int
  stride: int = 1
  slope: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.DepthwiseConv3x3(self.stride, dtype=self.dtype, name="dw")(x)
    x = _activate(_batch_norm(train, self.dtype, "dw_bn")(x), self.slope)
    x = layers.PointwiseConv(self.features, dtype=self.dtype, name="pw")(x)
    return _activate(_batch_norm(train, self.dtype, "pw_bn")(x), self.slope)


# (output channels, stride) of the depthwise-separable units after the stem, per stage.
MOBILENET_STAGES = (
    ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1)),
    ((128, 2),) + ((128, 1),) * 5,
    ((256, 2), (256, 1)),
)


class MobileNet025(nn.Module):
  """MobileNet-v1 x0.25 -> features at strides 8, 16, 32 (64, 128, 256 channels)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
    x = ConvBN(8, stride=2, slope=0.1, dtype=self.dtype, name="stage1_0")(x, train)
    features = []
    for s, units in enumerate(MOBILENET_STAGES, start=1):
      for i, (out, stride) in enumerate(units, start=1 if s == 1 else 0):
        x = DepthwiseSeparable(out, stride, dtype=self.dtype, name=f"stage{s}_{i}")(x, train)
      features.append(x)
    return features


class Bottleneck(nn.Module):
  """torchvision's bottleneck: 1x1 -> 3x3 stride s -> 1x1 (x4), projected shortcut if needed."""
  planes: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    d, out = self.dtype, 4 * self.planes
    y = nn.relu(_batch_norm(train, d, "bn1")(_conv(self.planes, 1, 1, d, "conv1")(x)))
    y = nn.relu(_batch_norm(train, d, "bn2")(_conv(self.planes, 3, self.stride, d, "conv2")(y)))
    y = _batch_norm(train, d, "bn3")(_conv(out, 1, 1, d, "conv3")(y))
    if self.stride != 1 or x.shape[-1] != out:
      x = _conv(out, 1, self.stride, d, "downsample_conv")(x)
      x = _batch_norm(train, d, "downsample_bn")(x)
    return nn.relu(x + y)


# (blocks, planes, stride of the first block) of layer1..layer4.
RESNET50_LAYERS = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))


class ResNet50(nn.Module):
  """ResNet-50 -> layer2, layer3, layer4 (strides 8, 16, 32; 512, 1024, 2048 channels)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
    x = _conv(64, 7, 2, self.dtype, "conv1")(x)
    x = nn.relu(_batch_norm(train, self.dtype, "bn1")(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    features = []
    for n, (blocks, planes, stride) in enumerate(RESNET50_LAYERS, start=1):
      for i in range(blocks):
        x = Bottleneck(planes, stride if i == 0 else 1, dtype=self.dtype,
                       name=f"layer{n}_{i}")(x, train)
      features.append(x)
    return features[1:]


def upsample_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """PyTorch's `F.interpolate(mode="nearest")` of x [B,h,w,C] to (H, W): i <- floor(i * h / H)."""
  def index(n_in, n_out):
    scale = np.float32(n_in / n_out)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(int), n_in - 1)
  x = jnp.take(x, index(x.shape[1], size[0]), axis=1)
  return jnp.take(x, index(x.shape[2], size[1]), axis=2)


class FPN(nn.Module):
  """Three trunk levels -> three maps of `width` channels; coarser levels added top-down."""
  width: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: list[jax.Array], train: bool) -> list[jax.Array]:
    slope = 0.1 if self.width <= 64 else 0.0
    lateral = lambda i, x: ConvBN(self.width, 1, slope=slope, dtype=self.dtype,
                                  name=f"output{i}")(x, train)
    merge = lambda i, x: ConvBN(self.width, 3, slope=slope, dtype=self.dtype,
                                name=f"merge{i}")(x, train)
    out1, out2, out3 = (lateral(i, x) for i, x in enumerate(features, start=1))
    out2 = merge(2, out2 + upsample_nearest(out3, out2.shape[1:3]))
    out1 = merge(1, out1 + upsample_nearest(out2, out1.shape[1:3]))
    return [out1, out2, out3]


class SSH(nn.Module):
  """SSH context module: 3x3, 5x5 and 7x7 branches (as 3x3 stacks), concatenated, ReLU."""
  width: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    slope = 0.1 if self.width <= 64 else 0.0
    unit = lambda features, slope, name: ConvBN(features, 3, slope=slope, dtype=self.dtype,
                                                name=name)
    quarter = self.width // 4
    branch3 = unit(self.width // 2, None, "conv3X3")(x, train)
    branch5_1 = unit(quarter, slope, "conv5X5_1")(x, train)
    branch5 = unit(quarter, None, "conv5X5_2")(branch5_1, train)
    branch7 = unit(quarter, slope, "conv7X7_2")(branch5_1, train)
    branch7 = unit(quarter, None, "conv7x7_3")(branch7, train)
    return nn.relu(jnp.concatenate([branch3, branch5, branch7], -1))


class Head(nn.Module):
  """1x1 conv with bias -> [B, h*w*anchors, values]: cells row-major, then anchors."""
  values: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.Conv(NUM_ANCHORS * self.values, (1, 1), dtype=self.dtype, name="conv1x1")(x)
    return y.reshape(y.shape[0], -1, self.values)


TRUNKS = {"mobilenet0.25": (MobileNet025, 64), "resnet50": (ResNet50, 256)}


class RetinaFace(nn.Module):
  """Preprocessed images [B,H,W,3] -> (loc [B,A,4], conf [B,A,2] logits, landm [B,A,10]).

  A = len(detect.make_anchors((H, W))) = 2 * sum over s in (8, 16, 32) of ceil(H/s) * ceil(W/s).

  Attributes:
    trunk: a key of TRUNKS, "mobilenet0.25" or "resnet50".
    dtype: compute dtype (e.g. bfloat16); parameters stay float32.
  """
  trunk: str = "mobilenet0.25"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    try:
      trunk_cls, width = TRUNKS[self.trunk]
    except KeyError:
      raise ValueError(f"unknown RetinaFace trunk {self.trunk!r}; "
                       f"known: {', '.join(TRUNKS)}") from None
    features = trunk_cls(dtype=self.dtype, name="body")(images, train)
    features = FPN(width, dtype=self.dtype, name="fpn")(features, train)
    features = [SSH(width, dtype=self.dtype, name=f"ssh{i}")(x, train)
                for i, x in enumerate(features, start=1)]
    heads = {}
    for kind, values in (("bbox", 4), ("class", 2), ("landmark", 10)):
      heads[kind] = jnp.concatenate(
          [Head(values, dtype=self.dtype, name=f"{kind}_head_{i}")(x)
           for i, x in enumerate(features)], axis=1)
    return heads["bbox"], heads["class"], heads["landmark"]
