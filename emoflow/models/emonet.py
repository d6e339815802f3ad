"""EmoNet: the paper's per-face emotion CNN (Table 2, MobileFaceNet-like).

112x112x3 face -> conv3x3/2 (64) -> dwconv3x3 (64) -> five groups of
bottleneck blocks (expand 1x1, dw3x3 with stride s, linear 1x1 projection)
-> conv1x1 (512) -> global 7x7 depthwise conv (linear) -> M-d linear FC (the
embedding) -> classifier over the 8 individual emotions. BatchNorm follows
every conv/FC layer, ReLU every layer not marked linear; convs have no bias.

How Table 2 is read where it is ambiguous:
- In a group of repeated blocks only the first block has the printed stride;
  this is what makes each group's printed input size follow from the last.
- Residual connections only in the two stride-1 groups, as printed (in the
  other groups the later blocks do not stride either, but Table 2 marks the
  whole group without residual, and we follow it).
- The "512-d FC" on the 7x7x512 map is a global 7x7 depthwise linear layer,
  as in MobileFaceNet (GDConv): a dense 7*7*512 -> 512 layer alone would be
  ~51 MB of float32, against the paper's < 10 MB for the whole model.
- The "M-d FC" (M = `embed_dim`, 128 by default) is linear with BatchNorm;
  its output is the face embedding that NVPF fuses. The classifier is a
  Dense layer with bias on top of it.
- 3x3 convs pad one pixel on each side (PyTorch's `padding=1`).

With the defaults (Table 2): 881,928 trainable parameters (3.5 MB of
float32 with the BatchNorm statistics) and ~138 M multiply-accumulates per
face. `width` scales every conv's channels (rounded to multiples of 8) and
`depth` the blocks of every bottleneck group (rounded, at least 1): the
quickstart trains a half-depth EmoNet, which at 7 blocks, mostly without
residuals, starts learning far sooner than the full 14.

The convs come from `emoflow.models.layers` (shifted slices and GEMMs, fast
on XLA:CPU) and keep `nn.Conv`'s parameter names and shapes.
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from emoflow.models import layers

Dtype = Any


class Group(NamedTuple):
  """One row of Table 2's bottleneck section."""
  blocks: int
  expand: int  # channels after the 1x1 expansion (t * c)
  stride: int  # stride of the group's first block
  out: int
  residual: bool


STEM = 64
GROUPS = (
    Group(blocks=2, expand=128, stride=2, out=64, residual=False),
    Group(blocks=4, expand=128, stride=2, out=128, residual=False),
    Group(blocks=2, expand=256, stride=1, out=128, residual=True),
    Group(blocks=4, expand=256, stride=2, out=128, residual=False),
    Group(blocks=2, expand=256, stride=1, out=128, residual=True),
)
HEAD = 512
INPUT_SIZE = 112


def _batch_norm(train: bool, dtype: Dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, name=name)


class Bottleneck(nn.Module):
  """Expand 1x1 (BN, ReLU) -> dw3x3 stride s (BN, ReLU) -> linear 1x1 (BN)."""
  expand: int
  out: int
  stride: int
  residual: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = layers.PointwiseConv(self.expand, dtype=self.dtype, name="expand")(x)
    y = nn.relu(_batch_norm(train, self.dtype, "expand_bn")(y))
    y = layers.DepthwiseConv3x3(self.stride, dtype=self.dtype, name="dw")(y)
    y = nn.relu(_batch_norm(train, self.dtype, "dw_bn")(y))
    y = layers.PointwiseConv(self.out, dtype=self.dtype, name="project")(y)
    y = _batch_norm(train, self.dtype, "project_bn")(y)
    return x + y if self.residual else y


class EmoNet(nn.Module):
  """Face [B,112,112,3] in [-1, 1] -> (logits [B,C], embedding [B,M]).

  Attributes:
    num_classes: size of the classifier (the 8 individual emotions).
    embed_dim: M, the embedding size.
    width: multiplier of every conv's channels (1.0: Table 2).
    depth: multiplier of every bottleneck group's blocks (1.0: Table 2).
    dtype: compute dtype (e.g. bfloat16); parameters stay float32.
  """
  num_classes: int = 8
  embed_dim: int = 128
  width: float = 1.0
  depth: float = 1.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, faces: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    d, c = self.dtype, functools.partial(scaled_channels, width=self.width)
    x = layers.Conv3x3(c(STEM), stride=2, dtype=d, name="stem")(faces)
    x = nn.relu(_batch_norm(train, d, "stem_bn")(x))
    x = layers.DepthwiseConv3x3(1, dtype=d, name="stem_dw")(x)
    x = nn.relu(_batch_norm(train, d, "stem_dw_bn")(x))
    for g, group in enumerate(GROUPS):
      for b in range(scaled_blocks(group.blocks, self.depth)):
        x = Bottleneck(c(group.expand), c(group.out),
                       stride=group.stride if b == 0 else 1,
                       residual=group.residual, dtype=d,
                       name=f"group{g}_block{b}")(x, train)
    x = layers.PointwiseConv(c(HEAD), dtype=d, name="head")(x)
    x = nn.relu(_batch_norm(train, d, "head_bn")(x))
    x = layers.GlobalDepthwiseConv(dtype=d, name="gdc")(x)
    x = _batch_norm(train, d, "gdc_bn")(x)
    x = nn.Dense(self.embed_dim, use_bias=False, dtype=d, name="embed")(x)
    emb = _batch_norm(train, d, "embed_bn")(x)
    logits = nn.Dense(self.num_classes, dtype=d, name="classifier")(emb)
    return logits, emb


def scaled_channels(channels: int, width: float) -> int:
  """`channels * width` rounded to a multiple of 8 (at least 8)."""
  return max(8, int(round(channels * width / 8)) * 8)


def scaled_blocks(blocks: int, depth: float) -> int:
  """A group's `blocks * depth` rounded, at least 1."""
  return max(1, int(round(blocks * depth)))


def count_macs(embed_dim: int = 128, num_classes: int = 8, width: float = 1.0,
               depth: float = 1.0) -> int:
  """Multiply-accumulates per 112x112 face, counted from Table 2's layers.

  Counts conv/FC products only (not BatchNorm, ReLU, residual adds).
  """
  c = functools.partial(scaled_channels, width=width)
  size = INPUT_SIZE // 2
  stem, head = c(STEM), c(HEAD)
  macs = size * size * 9 * 3 * stem  # stem conv3x3/2
  macs += size * size * 9 * stem  # stem dwconv3x3
  cin = stem
  for group in GROUPS:
    expand, out = c(group.expand), c(group.out)
    for b in range(scaled_blocks(group.blocks, depth)):
      out_size = (size - 1) // group.stride + 1 if b == 0 else size
      macs += size * size * cin * expand  # expand 1x1
      macs += out_size * out_size * 9 * expand  # dw3x3
      macs += out_size * out_size * expand * out  # project 1x1
      size, cin = out_size, out
  macs += size * size * cin * head  # conv1x1 512
  macs += size * size * head  # global depthwise
  macs += head * embed_dim + embed_dim * num_classes  # embedding, classifier
  return macs
