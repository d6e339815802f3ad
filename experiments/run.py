"""Run a named experiment: `python -m experiments.run --config=NAME[:arg] [--config.a.b=v]`.

NAME is a file in experiments/configs/ (or a path to one); its get_config(arg)
returns the ConfigDict. The run lives in --workdir (default runs/NAME): the
config as JSON, checkpoints, metrics.csv, plots/ and results.md (--mode=eval
writes results_SPLIT.md). Starting the
same command again resumes from the latest checkpoint. A user mistake (unknown
config, bad value, missing data) ends with one line on stderr and exit code 2;
--debug shows the traceback instead.
"""

import functools
import importlib.util
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from emoflow.fileio import atomic_open
from emoflow.train.loop import NonFiniteLossError
from experiments.workdir import save_or_check_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config: NAME[:arg]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (default runs/NAME)")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes) or evaluate")
_DEBUG = flags.DEFINE_bool("debug", False, "show tracebacks for user errors")


class UserError(Exception):
  """A mistake in the command line, config or data: reported in one line."""


def known_configs() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and not f.startswith("_"))


def resolve_config_argv(argv: list[str]) -> tuple[list[str], str]:
  """Rewrites --config=NAME[:arg] to the config file's path; returns (argv, run name)."""
  out, name = list(argv), None
  for i, token in enumerate(out):
    if token == "--config" and i + 1 < len(out):
      out[i:i + 2] = [f"--config={out[i + 1]}"]
      token = out[i]
    if token.startswith("--config="):
      spec = token[len("--config="):]
      base, sep, arg = spec.partition(":")
      if base.endswith(".py") or os.sep in base:
        if not os.path.isfile(base):
          raise UserError(f"config file {base!r} does not exist")
        path = base
      else:
        path = os.path.join(CONFIG_DIR, base + ".py")
        if not os.path.isfile(path):
          raise UserError(f"unknown config {base!r}; known: {', '.join(known_configs())}")
      name = os.path.basename(path)[:-3] + (f"_{arg}" if arg else "")
      out[i] = f"--config={path}{sep}{arg}"
      check_override_keys(_load_config(path, arg or None), out)
      break
  if name is None:
    raise UserError(f"--config=NAME is required; known: {', '.join(known_configs())}")
  return out, name


def _load_config(path: str, arg: str | None):
  spec = importlib.util.spec_from_file_location("_emoflow_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def check_override_keys(config, argv: list[str]) -> None:
  """One-line error for a --config.a.b=v whose key the config does not have."""
  for token in argv:
    if not token.startswith("--config."):
      continue
    node = config
    path = token[len("--config."):].split("=", 1)[0]
    for depth, key in enumerate(path.split(".")):
      if not hasattr(node, "keys") or key not in node:
        known = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none (not a group)"
        where = ".".join(path.split(".")[:depth]) or "the config"
        raise UserError(f"--config.{path}: no key {key!r} in {where}; it has: {known}")
      node = node[key]


def _tasks():
  from experiments import detection, group, individual, video  # noqa: PLC0415 - heavy imports after flags
  from experiments import quickstart  # noqa: PLC0415
  return {"individual": individual, "group": group, "video": video, "detection": detection,
          "quickstart": quickstart}


def main(argv, run_name: str) -> None:
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and TFDS are chatty at INFO
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  tasks = _tasks()
  if config.task not in tasks:
    raise UserError(f"config.task {config.task!r} unknown; known: {', '.join(sorted(tasks))}")
  task = tasks[config.task]
  workdir = _WORKDIR.value or os.path.join("runs", run_name)
  os.makedirs(workdir, exist_ok=True)
  if _MODE.value == "train":
    save_or_check_config(config, workdir)
    results = task.train(config, workdir)
  else:
    results = task.evaluate(config, workdir)
  text = task.results_markdown(results, title=f"{run_name} ({_MODE.value}, "
                               f"{config.data.eval_split} split)")
  print(text)
  name = "results.md" if _MODE.value == "train" else f"results_{config.data.eval_split}.md"
  with atomic_open(os.path.join(workdir, name)) as f:
    f.write(text)
  print(f"\nworkdir: {workdir}")


def _run_main(argv, run_name: str) -> None:
  try:
    main(argv, run_name)
  except (UserError, ValueError, FileNotFoundError, NonFiniteLossError) as e:
    if _DEBUG.value:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def entry() -> None:
  try:
    argv, run_name = resolve_config_argv(sys.argv)
  except (UserError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  app.run(functools.partial(_run_main, run_name=run_name), argv=argv)


if __name__ == "__main__":
  entry()
