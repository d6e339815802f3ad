"""Train / evaluate a group-level fusion (FeA, FeB, FeC = NVPF) on a groups dataset.

The fusions see faces through a trained EmoNet: `config.features.emonet_workdir`
names its run, and experiments.cache_features writes the dataset's EmoNet
embeddings once (reused by every later run of the same checkpoint); the
group loaders then read that cache with N = config.model.max_faces slots.
"""

import os

import jax
import jax.numpy as jnp

from data_pipelines import builders, loaders
from emoflow.tasks import group
from emoflow.train import loop, optimizer, parallel
from emoflow.train.state import TrainState
from experiments import cache_features, individual

# config.data.source shorthands: "synthcrowd" runs any group config on rendered data.
SOURCE_SHORTHANDS = {"synthcrowd": "synthcrowd/groups_small"}
# Feature modes: only the EmoNet cache so far (EmoNet frozen while the fusion trains).
FEATURE_MODES = ("cached",)


def source(config) -> str:
  """config.data.source with shorthands resolved: NAME/CONFIG or a prepared dataset directory."""
  return SOURCE_SHORTHANDS.get(config.data.source, config.data.source)


def _prepare_source(config) -> None:
  """Builds a registry dataset if absent; a missing download says how to run on SynthCrowd instead."""
  name, _, data_config = source(config).partition("/")
  if os.path.isdir(source(config)) or not data_config:
    return  # a prepared directory, or a malformed name that cache_features reports
  builders.get(name)  # an unknown name fails here, without the hint below
  try:
    loaders.prepare(name, data_config, config.data.data_dir, config.data.manual_dir)
  except ValueError as e:
    if name == "synthcrowd":
      raise
    raise ValueError(f"{e}; or run this config on rendered data: "
                     "--config.data.source=synthcrowd") from None


def features_builder(config):
  """The TFDS builder of the EmoNet feature cache of the groups dataset (written if absent)."""
  if config.features.mode == "end_to_end":
    raise ValueError("features.mode 'end_to_end' (fine-tuning EmoNet with the fusion) is not "
                     "implemented yet; use features.mode=cached")
  if config.features.mode not in FEATURE_MODES:
    raise ValueError(f"features.mode {config.features.mode!r} unknown; known: "
                     f"{', '.join(FEATURE_MODES)}")
  _prepare_source(config)
  data_dir = os.path.expanduser(config.data.data_dir)
  try:
    builder, written = cache_features.cache(
        config.features.emonet_workdir, source(config), data_dir=data_dir,
        out_dir=os.path.expanduser(config.features.cache_dir or data_dir),
        batch_size=config.features.batch_size)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"no trained EmoNet for the group features ({e}); run `python -m "
                            "experiments.run --config=emonet_synthcrowd` first or set "
                            "--config.features.emonet_workdir") from None
  if written:
    print(f"cached EmoNet features of {source(config)} in {builder.data_dir}")
  return builder


def initial_state(config, fusion, num_features: int) -> TrainState:
  features = jnp.zeros((1, config.model.max_faces, num_features), jnp.float32)
  mask = jnp.ones((1, config.model.max_faces), bool)
  variables = jax.jit(lambda rng: fusion.init(rng, features, mask))(jax.random.key(config.seed))
  return TrainState.create(variables, optimizer.make_optimizer(config.optimizer, config.num_steps))


def _num_features(builder) -> int:
  return builder.info.features["embeddings"].shape[-1]


def _evaluate_fn(config, fusion, mesh, builder, split: str):
  eval_source = loaders.split_source(builder, split)
  return group.make_evaluate(
      fusion, lambda: loaders.eval_group_batches(eval_source, config.eval.batch_size,
                                                 config.model.max_faces),
      mesh, class_names=individual.class_names(config, builder, "label"))


def _with_row(results: dict, fusion) -> dict:
  """The evaluation plus the Table 5 columns that name the model."""
  return {**results, "table_row": {"model": "EmoNet", "fusion": fusion.scheme,
                                   "stage": fusion.stage}}


def train(config, workdir: str) -> dict:
  """Caches features if absent, trains with fit() (resuming), returns the final evaluation."""
  mesh = parallel.make_data_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  fusion = group.make_fusion(config.model)
  builder = features_builder(config)
  train_source = loaders.split_source(builder, config.data.train_split)
  outcome = loop.fit(
      workdir=workdir, state=initial_state(config, fusion, _num_features(builder)),
      train_step=group.make_train_step(fusion),
      train_batches=lambda start: loaders.train_group_batches(
          train_source, batch_size=config.batch_size, max_faces=config.model.max_faces,
          seed=config.seed, num_steps=config.num_steps, start_step=start, augment=False,
          read_threads=config.data.read_threads, workers=config.data.workers),
      evaluate=_evaluate_fn(config, fusion, mesh, builder, config.data.eval_split),
      num_steps=config.num_steps, seed=config.seed, mesh=mesh, log_every=config.log_every,
      eval_every=config.eval.every, keep_latest=config.checkpoint.keep_latest,
      best_metric=config.checkpoint.best_metric, best_mode=config.checkpoint.best_mode,
      class_names=individual.class_names(config, builder, "label"))
  return _with_row(outcome["eval"], fusion)


def evaluate(config, workdir: str) -> dict:
  """Evaluates the best checkpoint in `workdir` on `config.data.eval_split`."""
  mesh = parallel.make_data_mesh()
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  fusion = group.make_fusion(config.model)
  builder = features_builder(config)
  state, _ = individual.restore_best(
      config, workdir, mesh, lambda: initial_state(config, fusion, _num_features(builder)))
  return _with_row(_evaluate_fn(config, fusion, mesh, builder, config.data.eval_split)(state),
                   fusion)


def results_markdown(results: dict, title: str) -> str:
  """One row in the format of the paper's Table 5: model, fusion, stage, mAC, UAR, F1, per class."""
  names = [k[len("acc/"):] for k in results if k.startswith("acc/")]
  row = results["table_row"]
  lines = [f"## {title}", "",
           "| model | fusion | stage | mAC | UAR | F1 | " + " | ".join(names) + " |",
           "|" + "---|" * (6 + len(names)),
           f"| {row['model']} | {row['fusion']} | {row['stage']} | {results['mAC']:.2%} | "
           f"{results['UAR']:.4f} | {results['F1']:.4f} | "
           + " | ".join(f"{results[f'acc/{name}']:.2%}" for name in names) + " |",
           f"\nchance: {1 / len(names):.1%}"]
  return "\n".join(lines) + "\n"
