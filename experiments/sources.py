"""The data a group or clip run reads: its source dataset, and a trained EmoNet's features of it.

`config.data.source` is NAME/CONFIG of the builders registry (built if
absent), a prepared TFDS dataset directory, or "synthcrowd", shorthand for
the task's small SynthCrowd dataset. `config.features.emonet_workdir` names
the EmoNet run whose outputs the fusions see.
"""

import os

import jax

from data_pipelines import builders, loaders
from experiments import cache_features, individual

# "synthcrowd" runs any group or video config on rendered data.
SYNTHCROWD = {"group": "synthcrowd/groups_small", "video": "synthcrowd/clips_small"}


def source(config) -> str:
  """config.data.source with the shorthand resolved: NAME/CONFIG or a prepared dataset directory."""
  if config.data.source == "synthcrowd":
    return SYNTHCROWD[config.task]
  return config.data.source


def source_builder(config):
  """The source dataset's TFDS builder, built if absent; a missing download also says how to run
  on SynthCrowd instead."""
  data_dir = os.path.expanduser(config.data.data_dir)
  name, _, data_config = source(config).partition("/")
  if os.path.isdir(source(config)) or not data_config:
    return cache_features.source_builder(source(config), data_dir)  # a directory, or its error
  builders.get(name)  # an unknown name fails here, without the hint below
  try:
    return loaders.prepare(name, data_config, data_dir, config.data.manual_dir)
  except ValueError as e:
    if name == "synthcrowd":
      raise
    raise ValueError(f"{e}; or run this config on rendered data: "
                     "--config.data.source=synthcrowd") from None


def _no_emonet(e: FileNotFoundError) -> FileNotFoundError:
  return FileNotFoundError(f"no trained EmoNet for the features ({e}); run `python -m "
                           "experiments.run --config=emonet_synthcrowd` first or set "
                           "--config.features.emonet_workdir")


def features_builder(config):
  """The TFDS builder of the EmoNet feature cache of the source dataset (written if absent)."""
  source_builder(config)
  data_dir = os.path.expanduser(config.data.data_dir)
  try:
    builder, written = cache_features.cache(
        config.features.emonet_workdir, source(config), data_dir=data_dir,
        out_dir=os.path.expanduser(config.features.cache_dir or data_dir),
        batch_size=config.features.batch_size)
  except FileNotFoundError as e:
    raise _no_emonet(e) from None
  if written:
    print(f"cached EmoNet features of {source(config)} in {builder.data_dir}")
  return builder


def emonet(config, mesh, with_weights: bool):
  """(EmoNet module, its trained variables or None) of the run in config.features.emonet_workdir."""
  workdir = config.features.emonet_workdir
  try:
    if not with_weights:
      return individual.make_model(cache_features.run_config(workdir)), None
    _, model, state, _ = cache_features.restore(workdir, mesh)
  except FileNotFoundError as e:
    raise _no_emonet(e) from None
  return model, jax.device_get(state.variables)
