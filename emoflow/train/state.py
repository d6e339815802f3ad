"""The training state: parameters, non-trainable model collections, optimizer state.

One pytree, so a step can take it, donate it and return the next one, and a
checkpoint can save and restore it whole.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
  """What a train step reads and returns; `tx` is static (not saved)."""

  step: jax.Array
  params: Any
  model_state: Any  # Flax collections other than params, e.g. {"batch_stats": ...}
  opt_state: Any
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @classmethod
  def create(cls, variables: dict, tx: optax.GradientTransformation) -> "TrainState":
    """Splits Flax `variables` into params and the rest and initialises the optimizer.

    Every leaf is made strongly typed: a weakly typed one (an init computed from
    Python numbers) would come back strong from the first steps and make the
    jitted step compile again, twice.
    """
    variables = dict(jax.tree.map(lambda x: jnp.array(x, dtype=jnp.result_type(x)), variables))
    params = variables.pop("params")
    return cls(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
               opt_state=tx.init(params), tx=tx)

  @property
  def variables(self) -> dict:
    """The Flax variables dict for `model.apply`."""
    return {"params": self.params, **self.model_state}

  def apply_gradients(self, grads, model_state) -> "TrainState":
    """One optimizer update; `model_state` is the apply's updated collections, kept at the dtypes
    the state holds: a float64 forward pass returns BatchNorm's float32 running statistics as
    float64, which would change the step's input types and make it compile again."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    model_state = jax.tree.map(lambda new, old: new.astype(old.dtype), model_state,
                               self.model_state)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        model_state=model_state, opt_state=opt_state)
