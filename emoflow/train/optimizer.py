"""Optimizers from config: name + peak learning rate + warmup/cosine schedule."""

import optax

_OPTIMIZERS = {
    "adam": lambda lr, c: optax.adam(lr, b1=c.get("b1", 0.9), b2=c.get("b2", 0.999)),
    "adamw": lambda lr, c: optax.adamw(lr, b1=c.get("b1", 0.9), b2=c.get("b2", 0.999),
                                       weight_decay=c.get("weight_decay", 1e-4)),
    "sgd": lambda lr, c: optax.sgd(lr, momentum=c.get("momentum", 0.9), nesterov=True),
}


def known() -> tuple[str, ...]:
  """Names `make_optimizer` accepts."""
  return tuple(sorted(_OPTIMIZERS))


def learning_rate_schedule(config, num_steps: int) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine decay to 0 ("cosine") or flat ("constant")."""
  peak, warmup = config.learning_rate, min(config.get("warmup_steps", 0), num_steps)
  schedule = config.get("schedule", "cosine")
  if schedule == "cosine":
    warmup = max(warmup, 1)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(num_steps, warmup + 1))
  if schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, peak, max(warmup, 1)),
                                 optax.constant_schedule(peak)], [warmup])
  raise ValueError(f"optimizer.schedule must be 'cosine' or 'constant', got {schedule!r}")


def make_optimizer(config, num_steps: int) -> optax.GradientTransformation:
  """The optax transformation named by `config.name`, with global-norm clipping if set."""
  if config.name not in _OPTIMIZERS:
    raise ValueError(f"optimizer.name {config.name!r} unknown; known: {', '.join(known())}")
  tx = _OPTIMIZERS[config.name](learning_rate_schedule(config, num_steps), config)
  clip = config.get("clip_global_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx
