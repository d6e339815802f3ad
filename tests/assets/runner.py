"""`python -m experiments.run ARGS` from the repository root: as a user types it (a new
interpreter), or in this process, where nothing is imported or compiled again."""

import contextlib
import dataclasses
import io
import os
import subprocess
import sys
from unittest import mock

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass
class Finished:
  """A finished command's exit code and output, as subprocess.CompletedProcess holds them."""
  returncode: int
  stdout: str
  stderr: str


def run_experiment_subprocess(*args, timeout: int = 600) -> subprocess.CompletedProcess:
  """`python -m experiments.run ARGS` in a new interpreter, as a user types it."""
  return subprocess.run([sys.executable, "-m", "experiments.run", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def call(entry, argv: list) -> Finished:
  """A command's entry point run in this process as `argv` from the repository root: its exit
  code (SystemExit's, else 0), stdout and stderr."""
  out, err = io.StringIO(), io.StringIO()
  with (contextlib.chdir(ROOT), mock.patch.object(sys, "argv", list(map(str, argv))),
        contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
    try:
      entry()
      code = 0
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else int(e.code is not None)
  return Finished(code, out.getvalue(), err.getvalue())


def run_experiment(*args) -> Finished:
  """`python -m experiments.run ARGS` in this process. The flags start from their defaults, and
  the override flags (`--config.a.b`) an earlier config defined are dropped, as in a new
  interpreter."""
  from experiments import run  # noqa: PLC0415 - defines the command's flags when first needed
  for name in [name for name in flags.FLAGS if name.startswith("config.")]:
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
  return call(run.entry, ["experiments/run.py", *args])


def predict(*args) -> Finished:
  """`emoflow predict ARGS` in this process."""
  from emoflow import cli  # noqa: PLC0415
  return call(cli.main, ["emoflow", "predict", *args])


def train_then_eval(*args) -> Finished:
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
