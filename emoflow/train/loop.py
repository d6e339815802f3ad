"""fit(): the one training loop every level shares.

The level supplies a pure `train_step(state, batch, rng) -> (state, metrics)`,
a batch stream that starts at any step, and `evaluate(state) -> metrics`; fit
compiles the step once over the data mesh, runs it with a progress bar, logs
to WORKDIR/metrics.csv, evaluates and checkpoints periodically, draws the
plots (at the end, and during training at most once a minute), and resumes
from the latest checkpoint when started on the same workdir. The RNG of step k
is fold_in(seed, k) and batch k is a function of (seed, k), so a resumed run
computes what an uninterrupted one does.
"""

import math
import os
import time
from typing import Callable, Iterator

import jax
import numpy as np
import tqdm

from emoflow.train import distributed, parallel, plots
from emoflow.train.checkpoint import Checkpoints
from emoflow.train.metrics_log import MetricsLog
from emoflow.train.state import TrainState

# Drawing takes 1-2 s: short runs that evaluate every few seconds would spend much of
# their time on pictures that the next evaluation replaces.
PICTURES_EVERY_S = 60.0


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite; the message names the step and last checkpoint."""


def fit(*, workdir: str, state: TrainState, train_step: Callable,
        train_batches: Callable[[int], Iterator[dict]], evaluate: Callable[[TrainState], dict],
        num_steps: int, seed: int, mesh, log_every: int = 50, eval_every: int = 500,
        keep_latest: int = 2, best_metric: str, best_mode: str = "max",
        class_names=None, progress: bool = True) -> dict:
  """Trains `state` to `num_steps`; returns {"state", "eval", "best_step"}.

  `evaluate` returns scalar metrics plus optionally "confusion_matrix" (drawn
  with `class_names`). Evaluations happen every `eval_every` steps and at the
  end, each followed by a checkpoint that carries its metrics.
  """
  is_main = distributed.is_main_process()
  checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep_latest=keep_latest,
                            best_metric=best_metric, best_mode=best_mode)
  state = parallel.replicate(state, mesh)
  restored = checkpoints.restore(state)
  if restored is not None:
    state = restored
  start = int(state.step)
  log = MetricsLog(os.path.join(workdir, "metrics.csv"), resume_step=start)
  drawn_at = time.perf_counter()

  def run_eval(step: int) -> dict:
    nonlocal drawn_at
    results = evaluate(state)
    scalars = {k: v for k, v in results.items() if np.ndim(v) == 0}
    if is_main:
      log.append(step, "validation", scalars)
      log.flush()
    if is_main and (step == num_steps or time.perf_counter() - drawn_at >= PICTURES_EVERY_S):
      drawn_at = time.perf_counter()
      plots.plot_curves(log.rows, os.path.join(workdir, "plots", "curves.png"))
      if class_names is not None and "confusion_matrix" in results:
        plots.plot_confusion(results["confusion_matrix"], class_names,
                             os.path.join(workdir, "plots", "confusion_matrix.png"),
                             title=f"validation, step {step}")
    return results

  try:
    step_fn = parallel.jit_train_step(train_step, mesh)
    base_rng = jax.random.key(seed)
    bar = tqdm.tqdm(total=num_steps, initial=start, disable=not (progress and is_main),
                    desc="train", unit="step", dynamic_ncols=True)
    pending, in_flight, tick, results = [], None, time.perf_counter(), None
    batches = train_batches(start)
    for step in range(start, num_steps):
      local = next(batches)
      if step == start and is_main:
        size = len(next(iter(local.values()))) * jax.process_count()
        hosts = f", {jax.process_count()} processes" if jax.process_count() > 1 else ""
        bar.write(f"data-parallel: global batch {size} = {size // mesh.size} on each of "
                  f"{mesh.size} devices{hosts}")
      batch = parallel.shard_batch(local, mesh)
      state, metrics = step_fn(state, batch, jax.random.fold_in(base_rng, step))
      if in_flight is not None:  # one step stays queued; the bar counts finished steps
        jax.block_until_ready(in_flight)
        bar.update(1)
      in_flight = metrics
      pending.append(metrics)
      done = step + 1
      at_eval = done % eval_every == 0 or done == num_steps
      if done % log_every == 0 or at_eval:  # windows end at evals, so resumes see the same windows
        means = {k: float(np.mean([m[k] for m in pending])) for k in pending[0]}
        bar.update(1)
        in_flight = None
        means["seconds_per_step"] = (time.perf_counter() - tick) / len(pending)
        if not math.isfinite(means["loss"]):
          checkpoints.wait()  # so that the message names the checkpoint really on disk
          raise NonFiniteLossError(
              f"loss became {means['loss']} by step {done}; the last good checkpoint is step "
              f"{checkpoints.latest_step()} in {workdir}")
        bar.set_postfix(loss=f"{means['loss']:.4f}")
        if is_main:
          log.append(done, "train", means)
        pending, tick = [], time.perf_counter()
      if at_eval:
        results = run_eval(done)
        checkpoints.save(state, {k: float(v) for k, v in results.items() if np.ndim(v) == 0})
        tick = time.perf_counter()
    bar.close()
    if results is None:  # nothing left to train: the run had finished before
      results = evaluate(state)
  finally:
    checkpoints.wait()  # an interrupted run still completes the save it started
    best = checkpoints.best_step()
    checkpoints.close()
  return {"state": state, "eval": results, "best_step": best}
