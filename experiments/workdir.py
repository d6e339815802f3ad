"""A run directory's config.json: written for a new run, checked when a run is resumed, read by
whatever uses the trained run."""

import json
import os

import ml_collections

from emoflow.fileio import atomic_open
from emoflow.train.distributed import is_main_process


def load_config(workdir: str, task: str) -> ml_collections.ConfigDict:
  """The config of the `task` run in `workdir`; one-line errors if it holds no such run."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{workdir} holds no run (no config.json); "
                            "train one with experiments.run")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.task != task:
    raise ValueError(f"{workdir} holds a {config.task!r} run, not the {task!r} run needed here")
  return config


def _flatten(d: dict, prefix: str = "") -> dict:
  flat = {}
  for k, v in d.items():
    if isinstance(v, dict):
      flat.update(_flatten(v, f"{prefix}{k}."))
    else:
      flat[f"{prefix}{k}"] = v
  return flat


def _has_checkpoint(workdir: str) -> bool:
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def save_or_check_config(config, workdir: str) -> None:
  """Writes WORKDIR/config.json, or refuses to resume a workdir made by another config.

  A workdir without a checkpoint holds no run to resume (e.g. one that stopped
  at a missing dataset), so its config.json is simply replaced. Every process
  of a multi-host job checks; process 0 writes.
  """
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json())
  if os.path.exists(path) and _has_checkpoint(workdir):
    with open(path) as f:
      saved = _flatten(json.load(f))
    now = _flatten(current)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
      key = changed[0]
      raise ValueError(f"{workdir} holds a run with a different config ({key}: "
                       f"{saved.get(key)!r} there, {now.get(key)!r} now); use another --workdir")
    return
  if not is_main_process():
    return
  with atomic_open(path) as f:
    json.dump(current, f, indent=2, sort_keys=True)
