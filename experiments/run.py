"""Run a named experiment: `python -m experiments.run --config=NAME[:arg] [--config.a.b=v]`.

NAME is a file in experiments/configs/ (or a path to one); its get_config(arg)
returns the ConfigDict. The run lives in --workdir (default runs/NAME): the
config as JSON, checkpoints, metrics.csv, plots/, results.md and results.json
(its scalar metrics; --mode=eval writes results_SPLIT.md/.json). Starting the
same command again resumes from the latest checkpoint. A user mistake (unknown
config, bad value, missing data) ends with one line on stderr and exit code 2;
--debug shows the traceback instead. --help (or -h) prints this, the known
configs and the flags.

Multi-host: every process runs the same command; a SLURM step or Open MPI job
of several tasks is joined by itself, other clusters pass --coordinator_address,
--num_processes and --process_id (BUILD.md, "Several hosts").
"""

import functools
import json
import os
import sys
import textwrap

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from emoflow import host_memory
from emoflow.fileio import atomic_open
from emoflow.train import distributed
from emoflow.train.loop import NonFiniteLossError
from experiments import command, comparison, configs
from experiments.workdir import save_or_check_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config: NAME[:arg]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (default runs/NAME)")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes) or evaluate")
_DEBUG = flags.DEFINE_bool("debug", False, "show tracebacks for user errors")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "multi-host: HOST:PORT of process 0's coordinator")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-host: processes in the job")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-host: this process's index")


class UserError(Exception):
  """A mistake in the command line, config or data: reported in one line."""


def resolve_config_argv(argv: list[str]) -> tuple[list[str], str]:
  """Rewrites --config=NAME[:arg] to the config file's path and checks every --config.a.b=v
  names a key of it; returns (argv, run name)."""
  out = list(argv)
  for i, token in enumerate(out):
    if token == "--config" and i + 1 < len(out):
      out[i:i + 2] = [f"--config={out[i + 1]}"]
      token = out[i]
    if token.startswith("--config="):
      path, arg, name = configs.resolve(token[len("--config="):])
      out[i] = f"--config={path}:{arg}" if arg else f"--config={path}"
      config = configs.load(path, arg)
      for override in out:
        if override.startswith("--config."):
          configs.check_override_key(config, override[len("--config."):].split("=", 1)[0])
      return out, name
  raise UserError(f"--config=NAME is required; known: {', '.join(configs.known())}")


def _tasks():
  from experiments import detection, group, individual, video  # noqa: PLC0415 - heavy imports after flags
  from experiments import proposals, quickstart  # noqa: PLC0415
  return {"individual": individual, "group": group, "video": video, "detection": detection,
          "proposals": proposals, "quickstart": quickstart}


def scalar_results(results: dict) -> dict:
  """The top-level numbers of a task's results (what a sweep's summary table shows)."""
  def is_number(v) -> bool:
    return not isinstance(v, bool) and np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype,
                                                                         np.number)
  return {k: float(v) for k, v in results.items() if is_number(v)}


def _with_intervals(config, workdir: str, results: dict) -> dict:
  """Per-example results (group and video levels) saved to predictions_SPLIT.npz, the reference
  run's (config.eval.reference_workdir) found for the paired differences, and the intervals
  added to the results (experiments.comparison)."""
  split = config.data.eval_split
  if comparison.save(workdir, split, results, results.get("row_name", "")) is None:
    return results
  ref = comparison.reference(workdir, config.eval.get("reference_workdir", ""), split, results)
  return {**results, "reference": ref, **comparison.intervals(results, ref)}


def main(argv, run_name: str) -> None:
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and TFDS are chatty at INFO
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  joined = distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if joined and distributed.is_main_process():
    print(f"multi-host job: {joined}")
  config = _CONFIG.value
  tasks = _tasks()
  if config.task not in tasks:
    raise UserError(f"config.task {config.task!r} unknown; known: {', '.join(sorted(tasks))}")
  task = tasks[config.task]
  from experiments import config_checks  # noqa: PLC0415 - loads JAX, after the flags
  config_checks.check(config)
  workdir = _WORKDIR.value or os.path.join("runs", run_name)
  os.makedirs(workdir, exist_ok=True)
  if _MODE.value == "train":
    save_or_check_config(config, workdir)
    results = task.train(config, workdir)
  else:
    results = task.evaluate(config, workdir)
  if not distributed.is_main_process():
    return
  results = _with_intervals(config, workdir, results)
  text = task.results_markdown(results, title=f"{run_name} ({_MODE.value}, "
                               f"{config.data.eval_split} split)")
  print(text)
  name = "results" if _MODE.value == "train" else f"results_{config.data.eval_split}"
  with atomic_open(os.path.join(workdir, name + ".md")) as f:
    f.write(text)
  with atomic_open(os.path.join(workdir, name + ".json")) as f:  # written last: the run is done
    json.dump(scalar_results(results), f, indent=2, sort_keys=True)
  print(f"\nworkdir: {workdir}")


def _run_main(argv, run_name: str) -> None:
  try:
    main(argv, run_name)
  except (UserError, ValueError, FileNotFoundError, NonFiniteLossError) as e:
    if _DEBUG.value:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


_HELP = ("-h", "--help", "-?", "--helpshort", "--helpfull")


def usage(full: bool = False) -> str:
  """This module's docstring, the known configs and the command's flags (every absl flag if
  `full`)."""
  module = flags.FLAGS.find_module_defining_flag(_WORKDIR.name)  # this file's path under -m
  flag_help = flags.FLAGS.get_help() if full else flags.FLAGS.module_help(module)
  known = textwrap.fill(", ".join(configs.known()), 80, initial_indent="  ", subsequent_indent="  ")
  return f"{__doc__.strip()}\n\nconfigs (experiments/configs/):\n{known}\n\nflags:\n{flag_help}\n"


def entry() -> None:
  # Help is answered before resolve_config_argv, which needs --config (without it the command
  # would end in "--config=NAME is required"), and instead of absl's --help, which exits 1 and
  # does not list the configs. With --config=X it prints help too and runs nothing.
  if any(token in _HELP for token in sys.argv[1:]):
    print(usage(full="--helpfull" in sys.argv[1:]))
    sys.exit(0)
  host_memory.keep_freed_memory()
  try:
    argv, run_name = resolve_config_argv(sys.argv)
  except (UserError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  app.run(functools.partial(_run_main, run_name=run_name), argv=argv,
          flags_parser=command.parse_flags)


if __name__ == "__main__":
  entry()
