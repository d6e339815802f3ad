"""The paper's non-flow group fusions (Sec. 5, Table 5): FeA and FeB.

Both read the per-face EmoNet embeddings of a group, [B, N, M] (batch, face
slots, features), with a [B, N] bool mask of the valid slots, and return
group logits [B, num_classes]. Padded slots are zeroed first, so whatever
they hold changes neither the output nor any gradient.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def zero_padded(embeddings: jax.Array, mask: jax.Array) -> jax.Array:
  """[B,N,M] embeddings with the slots where mask [B,N] is False set to 0."""
  return jnp.where(mask[..., None], embeddings, 0)


class FeA(nn.Module):
  """Fused EmoNet A: per-face scores, averaged over the group's valid faces.

  A linear classifier (Dense) scores each face; the group score is the mean
  of the faces' softmax probabilities ("averaging score" fusion), returned as
  its log, so `softmax(logits)` is exactly that average and cross-entropy on
  the logits is the loss on the averaged scores. Averaging is over valid
  faces only, so the result does not depend on their order; a group with no
  valid face gets the score of a zero embedding.
  """
  num_classes: int = 3

  @nn.compact
  def __call__(self, embeddings: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout or batch statistics
    log_probs = nn.log_softmax(nn.Dense(self.num_classes)(zero_padded(embeddings, mask)))
    weights = jnp.where(mask.any(axis=1, keepdims=True), mask, True).astype(log_probs.dtype)
    weights = weights / weights.sum(axis=1, keepdims=True)
    return jax.nn.logsumexp(log_probs, axis=1, b=weights[..., None])


class FeB(nn.Module):
  """Fused EmoNet B: the group's embeddings concatenated, then an MLP.

  The N slots (padded ones zeroed) are concatenated in slot order, which is
  the records' face order (largest face first), to [B, N*M] -> Dense(hidden)
  -> ReLU -> dropout (active only when `train`) -> Dense(num_classes). The
  first Dense fixes N = N_max at init; apply with the same N. Unlike FeA the
  output depends on which slot holds which face.
  """
  num_classes: int = 3
  hidden: int = 256
  dropout: float = 0.0

  @nn.compact
  def __call__(self, embeddings: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
    x = zero_padded(embeddings, mask)
    x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)
