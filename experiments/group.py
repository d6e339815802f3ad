"""Train / evaluate a group-level fusion (FeA, FeB, FeC = NVPF) on a groups dataset.

The fusions see faces through a trained EmoNet: `config.features.emonet_workdir`
names its run. `config.features.mode` says how:
- "cached" (default): EmoNet stays frozen; experiments.cache_features writes
  the dataset's EmoNet embeddings once (reused by every later run of the same
  checkpoint) and the group loaders read that cache;
- "end_to_end": EmoNet starts from that run and is fine-tuned with the fusion
  on the groups' face pixels (augmented if config.data.augment), its learning
  rate scaled by config.features.emonet_learning_rate_scale.
Either way a group fills N = config.model.max_faces slots.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data_pipelines import loaders
from data_pipelines.builders.records import FACE_SIDE
from emoflow.tasks import group
from emoflow.train import loop, optimizer, parallel
from emoflow.train.state import TrainState
from experiments import comparison, individual, sources

FEATURE_MODES = ("cached", "end_to_end")  # module docstring


def make_fusion_and_data(config, mesh, with_weights: bool = True):
  """(fusion, the TFDS builder its loaders read, trained EmoNet variables or None) for the
  config's features.mode; `with_weights=False` skips loading EmoNet's weights (restoring a run)."""
  if config.features.mode not in FEATURE_MODES:
    raise ValueError(f"features.mode {config.features.mode!r} unknown; known: "
                     f"{', '.join(FEATURE_MODES)}")
  fusion = group.make_fusion(config.model)
  if config.features.mode == "cached":
    return fusion, sources.features_builder(config), None
  emonet, emonet_variables = sources.emonet(config, mesh, with_weights)
  return group.FineTuned(fusion, emonet), sources.source_builder(config), emonet_variables


def make_optimizer(config) -> optax.GradientTransformation:
  """config.optimizer; end to end, EmoNet's part at emonet_learning_rate_scale times the rate."""
  tx = optimizer.make_optimizer(config.optimizer, config.num_steps)
  if config.features.mode != "end_to_end":
    return tx
  emonet_config = config.optimizer.copy_and_resolve_references()
  emonet_config.learning_rate *= config.features.emonet_learning_rate_scale
  emonet_tx = optimizer.make_optimizer(emonet_config, config.num_steps)
  return optax.multi_transform({"emonet": emonet_tx, "fusion": tx},
                               lambda params: {name: name for name in params})


def initial_state(config, fusion, num_features: int, emonet_variables=None) -> TrainState:
  """The fusion over `num_features`-dim embeddings initialised from config.seed (end to end,
  EmoNet's part from `emonet_variables` if given)."""
  n = config.model.max_faces
  if isinstance(fusion, group.FineTuned):
    inputs = jnp.zeros((1, n, FACE_SIDE, FACE_SIDE, 3), jnp.uint8)
  else:
    inputs = jnp.zeros((1, n, num_features), jnp.float32)
  mask = jnp.ones((1, n), bool)
  variables = jax.jit(lambda rng: fusion.init(rng, inputs, mask))(jax.random.key(config.seed))
  if emonet_variables is not None:
    variables = fusion.with_emonet(variables, emonet_variables)
  return TrainState.create(variables, make_optimizer(config))


def num_features(fusion, builder) -> int:
  """M, the size of the face embeddings the fusion reads."""
  if isinstance(fusion, group.FineTuned):
    return fusion.emonet.embed_dim
  return builder.info.features["embeddings"].shape[-1]


def _evaluate_fn(config, fusion, mesh, builder, split: str):
  eval_source = loaders.split_source(builder, split)
  return group.make_evaluate(
      fusion, lambda: loaders.eval_group_batches(eval_source, config.eval.batch_size,
                                                 config.model.max_faces),
      mesh, class_names=individual.class_names(config, builder, "label"))


def _with_row(results: dict, fusion) -> dict:
  """The evaluation plus the Table 5 columns that name the model."""
  model = "EmoNet (fine-tuned)" if isinstance(fusion, group.FineTuned) else "EmoNet"
  return {**results, "row_name": fusion.scheme,
          "table_row": {"model": model, "fusion": fusion.scheme, "stage": fusion.stage}}


def train(config, workdir: str) -> dict:
  """Caches features if absent, trains with fit() (resuming), returns the final evaluation."""
  mesh = parallel.make_data_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  fusion, builder, emonet_variables = make_fusion_and_data(config, mesh)
  train_source = loaders.split_source(builder, config.data.train_split)
  outcome = loop.fit(
      workdir=workdir, state=initial_state(config, fusion, num_features(fusion, builder),
                                           emonet_variables),
      train_step=group.make_train_step(fusion),
      train_batches=lambda start: loaders.train_group_batches(
          train_source, batch_size=config.batch_size, max_faces=config.model.max_faces,
          seed=config.seed, num_steps=config.num_steps, start_step=start,
          augment=config.data.augment, read_threads=config.data.read_threads,
          workers=config.data.workers),
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
  fusion, builder, _ = make_fusion_and_data(config, mesh, with_weights=False)
  state, _ = individual.restore_best(
      config, workdir, mesh, lambda: initial_state(config, fusion, num_features(fusion, builder)))
  return _with_row(_evaluate_fn(config, fusion, mesh, builder, config.data.eval_split)(state),
                   fusion)


REFERENCE_LABEL = comparison.REFERENCES["group"].label


def table(runs: list[dict], ref: dict | None = None) -> list[str]:
  """Markdown lines of the paper's Table 5, one row per run's results: model, fusion, stage,
  examples, mAC with its interval and its paired difference to the reference run `ref`
  (experiments.comparison), UAR, F1, accuracy per class; a last row for what the true face
  emotions allow (the ceiling, where known); then chance and what the intervals are."""
  rows = [([r["table_row"]["model"], r["table_row"]["fusion"], r["table_row"]["stage"]], r, "")
          for r in runs]
  ceiling = next((r for r in runs if f"{comparison.CEILING}mAC" in r), None)
  if ceiling is not None:
    rows.append((["true face emotions", "majority valence (ceiling)", "-"], ceiling,
                 comparison.CEILING))
  lines = individual.accuracy_table(["model", "fusion", "stage"], rows, ref, REFERENCE_LABEL)
  if any(comparison.readouts(r) for r in runs):
    lines += ["", comparison.footnote("groups", ref, f"mAC - {REFERENCE_LABEL}")]
  return lines


FACE_COUNTS = ((1, 1), (2, 3), (4, None))  # groups by faces (up to model.max_faces are kept)


def size_table(results: dict, ref: dict | None = None) -> list[str]:
  """Markdown lines: mAC by the number of faces in the group, with its interval and the paired
  difference to the reference on the same groups (on one face there is nothing to fuse, only
  a classifier to differ); [] for results without per-group face counts."""
  arrays = comparison.examples(results)
  if "faces" not in arrays:
    return []
  lines = [f"| faces in the group | groups | mAC (95% CI) | mAC - {REFERENCE_LABEL} (points, 95% "
           "CI) |", "|---|---|---|---|"]
  for low, high in FACE_COUNTS:
    inside = (arrays["faces"] >= low) & (arrays["faces"] <= (high or arrays["faces"].max()))
    if not inside.any():
      continue

    def subset(r: dict) -> dict:
      """r with its per-group results cut to this size's groups (markers such as is_self kept)."""
      kept = {k: v for k, v in r.items() if not k.startswith(comparison.PREFIX)}
      correct = r.get(comparison.PREFIX + "correct")
      return kept if correct is None else {
          **kept, comparison.PREFIX + "correct": np.asarray(correct)[inside]}

    count, mac, delta = comparison.cells(subset(results), "", ref and subset(ref))
    name = str(low) if high == low else f"{low}-{high}" if high else f"{low} or more"
    lines.append(f"| {name} | {count} | {mac} | {delta} |")
  return lines


def results_markdown(results: dict, title: str) -> str:
  """One row in the format of the paper's Table 5 (`table`), against results["reference"], then
  its mAC by group size (`size_table`)."""
  ref = results.get("reference")
  sizes = size_table(results, ref)
  return "\n".join([f"## {title}", "", *table([results], ref),
                    *(["", *sizes] if sizes else [])]) + "\n"
