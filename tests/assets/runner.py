"""`python -m experiments.run ARGS` from the repository root, as a user types it."""

import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_experiment(*args, timeout: int = 600) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "experiments.run", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def train_then_eval(*args) -> subprocess.CompletedProcess:
  """Trains with `args` (which name --workdir=W), then evaluates W; asserts both succeed and that
  the evaluation's table equals the training's. Returns the training run."""
  trained = run_experiment(*args)
  assert trained.returncode == 0, trained.stderr[-2000:]
  evaluated = run_experiment(*args, "--mode=eval")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  workdir = next(a for a in map(str, args) if a.startswith("--workdir="))[len("--workdir="):]
  tables = [open(os.path.join(workdir, name)).read().splitlines()[2:]
            for name in ("results.md", "results_validation.md")]
  assert tables[0] == tables[1]
  return trained


def checkpoint_params(workdir, step: int) -> list[np.ndarray]:
  """The parameter leaves of a run's checkpoint `step`, read as numpy whatever devices wrote them."""
  path = os.path.join(workdir, "checkpoints", str(step), "default")
  checkpointer = ocp.PyTreeCheckpointer()
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          checkpointer.metadata(path).item_metadata.tree)
  restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  return jax.tree.leaves(restored["params"])
