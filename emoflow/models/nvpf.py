"""NVPF: the paper's spatial fusion of a group's faces (Sec. 3.2, Eqs. 5-7).

A group's N face embeddings (M features each) are stacked as columns of
S [M, N] and mapped by the bijection F = UF_1 o ... o UF_K (Eq. 5) of affine
coupling units (Eq. 6, `emoflow.models.coupling`) to the group feature
H = F(S), with log|det dF/dS| for the likelihood of Eq. 7. The prior p_H is
not part of the flow: `emoflow.models.priors` applies it in the loss.

Face order inside S: the flow's 3x3 convs see neighbouring faces, so the
order is part of the model. Slots hold a group's faces in the dataset
record order, largest face first, ties by the left edge of its box
(`data_pipelines.builders.records`), and empty slots (mask False) last.
Empty slots pass through unchanged and add nothing to the log-det; the valid
part of H and the log-det are the same whatever the number of slots N.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emoflow.models.coupling import AffineCoupling

Dtype = Any


class NVPF(nn.Module):
  """Non-volume preserving fusion F (Eq. 5): `num_units` affine couplings.

  Unit i keeps the first half of the feature rows fixed when i is even and
  the second half when i is odd, so every entry is transformed. Paper
  setting: 10 units, T1/T2 of 2 residual blocks with 32 filters.
  """
  num_units: int = 10
  width: int = 32
  num_blocks: int = 2
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.units = [
        AffineCoupling(self.width, self.num_blocks, flip=i % 2 == 1,
                       dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(self.num_units)
    ]

  def __call__(self, s: jax.Array, mask: jax.Array):
    """H = F(S) and log|det dF/dS|: S [B, M, N], mask [B, N] bool -> [B, M, N], [B]."""
    logdet = jnp.zeros(s.shape[0], s.dtype)
    for unit in self.units:
      s, ld = unit(s, mask)
      logdet = logdet + ld
    return s, logdet

  def inverse(self, h: jax.Array, mask: jax.Array):
    """S = F^-1(H) and -log|det dF/dS| (the log-det of F^-1 at H)."""
    logdet = jnp.zeros(h.shape[0], h.dtype)
    for unit in reversed(self.units):
      h, ld = unit.inverse(h, mask)
      logdet = logdet + ld
    return h, logdet
