"""Registry of TFDS builders by dataset name; a config names its dataset here."""

import importlib

# name -> "module:Class"; modules import lazily so a missing optional source costs nothing.
_BUILDERS = {
    "affectnet": "data_pipelines.builders.affectnet:Affectnet",
    "emotiw_gaf": "data_pipelines.builders.emotiw_gaf:EmotiwGaf",
    "gecv": "data_pipelines.builders.gecv:Gecv",
    "synthcrowd": "data_pipelines.builders.synthcrowd:Synthcrowd",
    "vgaf": "data_pipelines.builders.vgaf:Vgaf",
}


def known() -> tuple[str, ...]:
  return tuple(sorted(_BUILDERS))


def get(name: str):
  """The builder class registered under `name`; one-line error naming the known ones."""
  if name not in _BUILDERS:
    raise ValueError(f"no dataset builder named {name!r}; known: {', '.join(known())}")
  module, cls = _BUILDERS[name].split(":")
  return getattr(importlib.import_module(module), cls)
