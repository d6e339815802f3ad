"""The named experiment configs (one file each in this folder) and how a command finds one.

`--config=NAME[:arg]` names a file here (or a path to any config file); its
get_config(arg) returns the ConfigDict. Mistakes raise ValueError with one line.
"""

import importlib.util
import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def known() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(DIRECTORY)
                if f.endswith(".py") and not f.startswith("_"))


def resolve(spec: str) -> tuple[str, str, str]:
  """NAME[:arg] or PATH[:arg] -> (the config file's path, arg, the run's default name)."""
  base, _, arg = spec.partition(":")
  if base.endswith(".py") or os.sep in base:
    if not os.path.isfile(base):
      raise ValueError(f"config file {base!r} does not exist")
    path = base
  else:
    path = os.path.join(DIRECTORY, base + ".py")
    if not os.path.isfile(path):
      raise ValueError(f"unknown config {base!r}; known: {', '.join(known())}")
  return path, arg, os.path.basename(path)[:-3] + (f"_{arg}" if arg else "")


def load(path: str, arg: str = ""):
  """get_config(arg) of the config file at `path` (get_config() when arg is empty)."""
  spec = importlib.util.spec_from_file_location("_emoflow_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def check_override_key(config, path: str, flag: str = "--config.") -> None:
  """One-line error, naming `flag`, when `config` has no key at dotted `path` (a.b of a.b=v)."""
  node = config
  for depth, key in enumerate(path.split(".")):
    if not hasattr(node, "keys") or key not in node:
      known_keys = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none (not a group)"
      where = ".".join(path.split(".")[:depth]) or "the config"
      raise ValueError(f"{flag}{path}: no key {key!r} in {where}; it has: {known_keys}")
    node = node[key]
