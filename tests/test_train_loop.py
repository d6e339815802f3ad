"""fit(): checkpoints, resume after an interruption equals an uninterrupted run, metrics.csv, NaN stop."""

import csv
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from emoflow.train import loop, optimizer, parallel
from emoflow.train.state import TrainState

NUM_STEPS, BATCH = 12, 16


class TinyNet(nn.Module):
  """Dense + BatchNorm, so the state has batch_stats like EmoNet's."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(8)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(3)(nn.relu(x))


def _data(seed=0, n=400):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 5)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
  return x, y


def _train_step(model):
  def step(state, batch, rng):
    noise = 0.01 * jax.random.normal(rng, batch["x"].shape)  # uses the per-step RNG

    def loss_fn(params):
      logits, updates = model.apply({"params": params, **state.model_state}, batch["x"] + noise,
                                    train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads, updates), {"loss": loss}
  return step


def _run(workdir, stop_at=None, nan_at=None):
  """fit() on TinyNet; `stop_at` interrupts the batch stream like a kill would."""
  model = TinyNet()
  x, y = _data()
  mesh = parallel.make_data_mesh()
  cfg = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-2, warmup_steps=2))
  state = TrainState.create(model.init(jax.random.key(0), x[:2], train=False),
                            optimizer.make_optimizer(cfg, NUM_STEPS))

  def batches(start):
    for step in range(start, NUM_STEPS):
      if step == stop_at:
        raise KeyboardInterrupt
      idx = np.random.default_rng([7, step]).choice(len(x), BATCH, replace=False)
      xb = x[idx].copy()
      if step == nan_at:
        xb[:] = np.nan
      yield {"x": xb, "y": y[idx]}

  def evaluate(state):
    logits = model.apply(state.variables, x, train=False)
    return {"accuracy": float(jnp.mean(jnp.argmax(logits, -1) == y))}

  return loop.fit(workdir=str(workdir), state=state, train_step=_train_step(model),
                  train_batches=batches, evaluate=evaluate, num_steps=NUM_STEPS, seed=3,
                  mesh=mesh, log_every=2, eval_every=4, best_metric="accuracy", progress=False)


def _csv(workdir):
  with open(os.path.join(workdir, "metrics.csv")) as f:
    return [{k: v for k, v in r.items() if k != "seconds_per_step"} for r in csv.DictReader(f)]


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted(tmp_path):
  full = _run(tmp_path / "full")
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "resumed", stop_at=6)  # after the step-4 checkpoint, before step 8's
  assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["4"]
  resumed = _run(tmp_path / "resumed")
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert resumed["eval"] == full["eval"]
  assert _csv(tmp_path / "full") == _csv(tmp_path / "resumed")
  assert os.path.exists(tmp_path / "full" / "plots" / "curves.png")


def test_finished_run_is_not_retrained(tmp_path):
  first = _run(tmp_path)
  again = _run(tmp_path, stop_at=0)  # any training step would hit the interruption
  assert again["eval"] == first["eval"]


def test_keeps_latest_and_best(tmp_path):
  outcome = _run(tmp_path)
  kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints"))
  assert kept[-2:] == [8, 12] and outcome["best_step"] in kept


def test_non_finite_loss_stops_with_step_and_checkpoint(tmp_path):
  with pytest.raises(loop.NonFiniteLossError, match=r"by step 10; the last good checkpoint is step 8"):
    _run(tmp_path, nan_at=9)


def test_the_state_keeps_its_dtypes_so_the_step_compiles_once():
  """A float64 forward pass returns BatchNorm's running statistics in float64: the state keeps the
  float32 they were made with, so every step sees the same types and the jitted step compiles once
  (a changed type would also make it compile again, on step 2)."""
  with jax.enable_x64(True):
    model, (x, y) = TinyNet(), _data()
    cfg = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-2, warmup_steps=0))
    state = TrainState.create(model.init(jax.random.key(0), x[:2], train=False),
                              optimizer.make_optimizer(cfg, 3))
    step = jax.jit(_train_step(model))
    batch = {"x": x[:BATCH].astype(np.float64), "y": y[:BATCH]}
    for i in range(3):
      state, _ = step(state, batch, jax.random.key(i))
  assert {leaf.dtype for leaf in jax.tree.leaves(state.model_state)} == {np.dtype(np.float32)}
  assert step._cache_size() == 1


@pytest.mark.parametrize("every_s, drawn_at_steps", [(3600.0, [12]), (0.0, [4, 8, 12])])
def test_pictures_are_drawn_at_the_end_and_at_most_once_per_interval(tmp_path, monkeypatch,
                                                                    every_s, drawn_at_steps):
  drawn = []
  monkeypatch.setattr(loop, "PICTURES_EVERY_S", every_s)
  monkeypatch.setattr(loop.plots, "plot_curves", lambda rows, path: drawn.append(rows[-1]["step"]))
  _run(tmp_path)
  assert drawn == drawn_at_steps
