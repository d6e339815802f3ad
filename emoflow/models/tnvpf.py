"""TNVPF: the paper's temporal fusion of a clip's groups (Sec. 3.3, Eq. 8, Table 7).

Per frame t, every group g's faces are fused by the group-level NVPF F
(`emoflow.models.nvpf`, params under "group_flow", so a trained FeC flow
drops in) to H_g = F(S_g) [M, N]. The groups are stacked, G_t(H_1..H_G),
fused again by a frame-level NVPF F_G to H_t, and a GRU-style cell runs over
the frames:

  z_t = sigmoid(W_z x_t + U_z o_{t-1}),  r_t = sigmoid(W_r x_t + U_r o_{t-1}),
  o_t = (1 - z_t) o_{t-1} + z_t tanh(W x_t + U (r_t * o_{t-1})),  o_0 = 0,

with x_t = H_t flattened to [M * G] (`frame_readout` "flatten") or averaged over
the frame's valid groups to [M] ("mean": the cell reads as much as the baselines'
do, whatever G, and no longer depends on which slot holds which group); a
softmax head on o_t gives frame t's logits, trained with the frame
cross-entropy summed over t (Eq. 8). The cell has no biases, as printed; the
head has one (W_h, b_h of Eq. 8).

How a group's H_g enters the frame stack (the paper leaves it open): H_g
[M, N] is pooled over the group's valid faces to [M], by masked mean
("mean", the default), masked max ("max") or masked sum ("sum": a group
weighs by its faces, as in a frame label that counts faces); the pooled groups are the
columns of S_t [M, G] in the caller's group-slot order (F_G's 3x3 convs see
neighbouring groups, so that order is part of the model). Flattening H_g
instead would make S_t [M * N, G] and tie the model to N.

Table 7's baselines keep the group NVPF and pooling but have no frame flow:
"rnn" (FeC + vanilla RNN, `nn.SimpleCell`) and "lstm" (FeC + LSTM,
`nn.OptimizedLSTMCell`) read x_t = the mean of S_t over the valid groups
[M]. For them "frame_h" is S_t itself and "frame_logdet" is 0 (the identity
flow), so every cell returns the same keys.

Masks. A face is valid when face_mask, its group_mask and its frame_mask all
hold; a group slot is valid when it has a valid face. Invalid faces and
groups are zeroed before the flows, so they hold 0 in "group_h" / "frame_h",
add 0 to the log-dets and take no gradient. On a padded frame (frame_mask
False) the cell's state and output carry over unchanged, so a padded frame's
logits repeat the last valid frame's (the head of o = 0 before any), nothing
of a valid frame depends on it, and "last", the logits at the final step,
are the logits at each clip's last valid frame wherever the padding lies.
The scan runs forward only: frame t's outputs depend on frames <= t.
"""

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from emoflow.models.nvpf import NVPF

Dtype = Any


def mean_pool(h: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over the valid columns: h [..., M, N], mask [..., N] -> [..., M]; 0 if none."""
  count = jnp.maximum(mask.sum(-1), 1).astype(h.dtype)
  return jnp.where(mask[..., None, :], h, 0).sum(-1) / count[..., None]


def max_pool(h: jax.Array, mask: jax.Array) -> jax.Array:
  """Max over the valid columns: h [..., M, N], mask [..., N] -> [..., M]; 0 if none."""
  top = jnp.max(jnp.where(mask[..., None, :], h, -jnp.inf), axis=-1)
  return jnp.where(mask.any(-1)[..., None], top, 0)


def sum_pool(h: jax.Array, mask: jax.Array) -> jax.Array:
  """Sum over the valid columns: h [..., M, N], mask [..., N] -> [..., M]; 0 if none. A
  group's column then grows with its faces, as its weight in the frame label does."""
  return jnp.where(mask[..., None, :], h, 0).sum(-1)


POOLINGS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "mean": mean_pool, "max": max_pool, "sum": sum_pool}


class GatedCell(nn.RNNCellBase):
  """TNVPF's GRU-style cell (Sec. 3.3): carry o [B, features], input x [B, D] -> (o', o').

  W_* act on the input and U_* on the state (as in the paper's equation; its
  prose swaps the two names). No biases, as printed.
  """
  features: int
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, o: jax.Array, x: jax.Array):
    dense = lambda name: nn.Dense(self.features, use_bias=False, dtype=self.dtype,
                                  param_dtype=self.param_dtype, name=name)
    z = nn.sigmoid(dense("W_z")(x) + dense("U_z")(o))
    r = nn.sigmoid(dense("W_r")(x) + dense("U_r")(o))
    o = (1 - z) * o + z * jnp.tanh(dense("W")(x) + dense("U")(r * o))
    return o, o

  @nn.nowrap
  def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> jax.Array:
    """o_0 = 0."""
    del rng
    return jnp.zeros((*input_shape[:-1], self.features), self.param_dtype)

  @property
  def num_feature_axes(self) -> int:
    return 1


FRAME_READOUTS = ("flatten", "mean")  # what TNVPF's cell reads of H_t (module docstring)

CELLS: dict[str, Callable[..., nn.RNNCellBase]] = {
    "tnvpf": GatedCell, "rnn": nn.SimpleCell, "lstm": nn.OptimizedLSTMCell}


def _masked_step(cell: nn.RNNCellBase, state, inputs):
  """One frame: (cell carry, output) advance where the frame is valid, else stay."""
  x, valid = inputs
  new = cell(state[0], x)
  state = jax.tree.map(lambda n, o: jnp.where(valid[:, None], n, o), new, state)
  return state, state[1]


class TNVPF(nn.Module):
  """Temporal NVPF over a clip (module docstring): per-frame logits from groups of faces.

  Attributes:
    cell: "tnvpf" (frame NVPF + GRU-style cell), "rnn" or "lstm" (Table 7's
      FeC + RNN / LSTM: no frame flow).
    hidden: the cell's state size (paper: 4096).
    group_units, group_width: the group-level NVPF F ("group_flow").
    frame_units, frame_width: the frame-level NVPF F_G ("frame_flow", tnvpf only; 0 units
      is the identity: the cell reads S_t itself, what the frame flow adds is then gone).
    group_pooling: how H_g [M, N] becomes a column of S_t: "mean", "max" or "sum".
    frame_readout: what the tnvpf cell reads of H_t [M, G]: "flatten" ([M * G]) or "mean"
      (over the valid groups, [M]).
  """
  cell: str = "tnvpf"
  hidden: int = 4096
  num_classes: int = 3
  group_units: int = 10
  group_width: int = 32
  frame_units: int = 10
  frame_width: int = 32
  group_pooling: str = "mean"
  frame_readout: str = "flatten"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if self.cell not in CELLS:
      raise ValueError(f"cell {self.cell!r} unknown; known: {', '.join(sorted(CELLS))}")
    if self.group_pooling not in POOLINGS:
      raise ValueError(f"group_pooling {self.group_pooling!r} unknown; "
                       f"known: {', '.join(sorted(POOLINGS))}")
    if self.frame_readout not in FRAME_READOUTS:
      raise ValueError(f"frame_readout {self.frame_readout!r} unknown; "
                       f"known: {', '.join(FRAME_READOUTS)}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.group_flow = NVPF(self.group_units, self.group_width, **kw)
    if self.cell == "tnvpf":
      self.frame_flow = NVPF(self.frame_units, self.frame_width, **kw)
    self.recurrence = CELLS[self.cell](features=self.hidden, **kw)
    self.head = nn.Dense(self.num_classes, **kw)

  def fuse(self, features, face_mask, group_mask, frame_mask) -> dict:
    """The flows, per frame: everything `__call__` returns but the logits, plus the cell's
    inputs "frame_inputs" [B, T, D] (D = M * G for tnvpf, M for rnn / lstm)."""
    b, t, g, n, m = features.shape
    face_valid = face_mask & group_mask[..., None] & frame_mask[..., None, None]
    group_valid = face_valid.any(-1)
    s = jnp.swapaxes(jnp.where(face_valid[..., None], features, 0), -1, -2)
    group_h, group_logdet = self.group_flow(s.reshape(-1, m, n), face_valid.reshape(-1, n))
    group_h = group_h.reshape(b, t, g, m, n)
    stack = jnp.swapaxes(POOLINGS[self.group_pooling](group_h, face_valid), -1, -2)
    if self.cell == "tnvpf":
      frame_h, frame_logdet = self.frame_flow(stack.reshape(-1, m, g), group_valid.reshape(-1, g))
      frame_h = frame_h.reshape(b, t, m, g)
      frame_logdet = frame_logdet.reshape(b, t)
      inputs = (frame_h.reshape(b, t, m * g) if self.frame_readout == "flatten"
                else mean_pool(frame_h, group_valid))
    else:
      frame_h, frame_logdet = stack, jnp.zeros((b, t), stack.dtype)
      inputs = mean_pool(stack, group_valid)
    return {"group_h": group_h, "group_logdet": group_logdet.reshape(b, t, g),
            "frame_h": frame_h, "frame_logdet": frame_logdet,
            "face_valid": face_valid, "group_valid": group_valid, "frame_inputs": inputs}

  def __call__(self, features, face_mask, group_mask, frame_mask) -> dict:
    """A clip's frame logits and flow outputs.

    Args:
      features: [B, T, G, N, M] per-face features (normalised by the caller).
      face_mask: [B, T, G, N] bool; group_mask: [B, T, G] bool; frame_mask: [B, T] bool.

    Returns:
      dict of "frame_logits" [B, T, C] (softmax head on o_t), "last" [B, C]
      (logits at each clip's last valid frame), "group_h" [B, T, G, M, N],
      "group_logdet" [B, T, G], "frame_h" [B, T, M, G], "frame_logdet" [B, T],
      and the masks the flows used, "face_valid" [B, T, G, N] and
      "group_valid" [B, T, G], for the priors' log-likelihoods.
    """
    out = self.fuse(features, face_mask, group_mask, frame_mask)
    x = out.pop("frame_inputs")
    # The scan's state keeps the dtype the cell computes in (its inputs' and parameters').
    dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
    carry = self.recurrence.initialize_carry(jax.random.key(0), x[:, 0].shape)  # zeros
    state = jax.tree.map(lambda z: z.astype(dtype),
                         (carry, jnp.zeros((x.shape[0], self.hidden), x.dtype)))
    scan = nn.scan(_masked_step, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=1, out_axes=1)
    _, o = scan(self.recurrence, state, (x, frame_mask))
    logits = self.head(o)
    return {"frame_logits": logits, "last": logits[:, -1], **out}


def count_params(variables) -> int:
  """Number of parameter entries in a pytree of arrays or `jax.ShapeDtypeStruct`s
  (e.g. `jax.eval_shape(model.init, ...)`, which needs no memory)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(variables))
