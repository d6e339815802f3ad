"""One NVPF fusion unit: an affine coupling layer over a group's feature map S.

The paper's Eq. 6 is garbled in print ("Y = (1-b) * [T1(exp(S')) + T2(S')]
+ S'"); we implement the standard RealNVP affine coupling it cites ([14]):

  S' = b * S,  s = T1(S'),  t = T2(S'),
  Y  = S' + (1 - b) * (S * exp(s) + t),   log|det dY/dS| = sum (1 - b) * s,

with b a binary mask over the M x N map whose first half of feature rows is
one (Sec. 3.2); NVPF alternates b unit by unit so every entry is transformed.

Choices the paper leaves open:
- T1 (scale) and T2 (translation) are separate conv nets over S' seen as a
  one-channel image [B, M, N, 1]: a 3x3 conv lifting to `width` channels,
  `num_blocks` residual blocks (conv3x3-ReLU-conv3x3 + skip, ReLU) and a 3x3
  conv back to one channel. No BatchNorm: the unit stays a fixed bijection.
- Their last convs start at zero and the scale is bounded, s = scale *
  tanh(T1(S')) with a learned per-feature-row `scale` starting at one, so the
  flow starts as the identity and a unit can scale an entry by at most
  exp(+-scale). (A zero `scale` would stall training: both gradients vanish.)
- Absent faces (mask False) pass through unchanged and add 0 to the log-det.
  Their columns are zeroed in the conditioner's input and after every conv,
  so the conditioner sees exactly what it sees with fewer slots (the convs'
  zero 'SAME' padding equals empty slots): the valid outputs and log-det do
  not depend on how many empty slots a group has, where they are, or what
  they hold.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class CouplingNet(nn.Module):
  """T1 or T2 of Eq. 6: a small residual CNN over the map [B, M, N] -> [B, M, N].

  `keep` [B, 1, N, 1] (1 on present faces) zeroes absent columns after every
  conv, so they act like the convs' zero padding.
  """
  width: int
  num_blocks: int
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, keep: jax.Array) -> jax.Array:
    def conv(h, features, name, **kw):
      h = nn.Conv(features, (3, 3), padding="SAME", dtype=self.dtype,
                  param_dtype=self.param_dtype, name=name, **kw)(h)
      return h * keep.astype(h.dtype)

    h = nn.relu(conv(x[..., None], self.width, "lift"))
    for i in range(self.num_blocks):
      r = nn.relu(conv(h, self.width, f"block{i}_a"))
      h = nn.relu(h + conv(r, self.width, f"block{i}_b"))
    out = conv(h, 1, "out", kernel_init=nn.initializers.zeros)
    return out[..., 0]


class AffineCoupling(nn.Module):
  """One fusion unit UF_i of Eq. 5: the affine coupling of Eq. 6 (see module docstring).

  `flip` False keeps feature rows m < M // 2 fixed (b = 1 there) and
  transforms the rest; True swaps the halves.
  """
  width: int = 32
  num_blocks: int = 2
  flip: bool = False
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def scale_shift(self, x: jax.Array, mask: jax.Array):
    """b and the masked (s, t) of Eq. 6 from x [B, M, N] (only b * x is read).

    s and t are zero wherever b = 1 or the face is absent, so there y = x.
    """
    m = x.shape[1]
    b = (jnp.arange(m) < m // 2) != self.flip
    b = b[None, :, None]
    present = mask[:, None, :]
    free = (~b & present).astype(x.dtype)
    keep = present[..., None].astype(x.dtype)
    fixed = jnp.where(b & present, x, 0)
    net = lambda name: CouplingNet(self.width, self.num_blocks, self.dtype,
                                   self.param_dtype, name=name)
    scale = self.param("scale", nn.initializers.ones, (m,), self.param_dtype)
    raw_s = net("T1")(fixed, keep).astype(x.dtype)
    t = net("T2")(fixed, keep).astype(x.dtype)
    s = scale[:, None].astype(x.dtype) * jnp.tanh(raw_s)
    return s * free, t * free

  def __call__(self, x: jax.Array, mask: jax.Array):
    """Forward: (y, log|det dy/dx|) with y [B, M, N] and log-det [B]."""
    s, t = self.scale_shift(x, mask)
    return x * jnp.exp(s) + t, s.sum(axis=(1, 2))

  def inverse(self, y: jax.Array, mask: jax.Array):
    """Inverse: (x, -log|det dy/dx|); b * y == b * x, so s and t are recomputed exactly."""
    s, t = self.scale_shift(y, mask)
    return (y - t) * jnp.exp(-s), -s.sum(axis=(1, 2))
