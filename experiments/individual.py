"""Train / evaluate EmoNet on a faces dataset: the individual level wired to data and fit()."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import loaders
from emoflow.models import EmoNet
from emoflow.tasks import individual
from emoflow.train import checkpoint, loop, optimizer, parallel
from emoflow.train.state import TrainState
from experiments import comparison


def make_model(config) -> EmoNet:
  return EmoNet(num_classes=config.model.num_classes, embed_dim=config.model.embed_dim,
                # .get: runs saved before `width` and `depth` existed
                width=config.model.get("width", 1.0), depth=config.model.get("depth", 1.0),
                dtype=jnp.dtype(config.model.dtype))


def initial_state(config, model, num_steps: int) -> TrainState:
  faces = jnp.zeros((1, 112, 112, 3), jnp.float32)
  variables = jax.jit(lambda rng: model.init(rng, faces, train=False))(
      jax.random.key(config.seed))
  return TrainState.create(variables, optimizer.make_optimizer(config.optimizer, num_steps))


def _class_weights(config, source) -> np.ndarray:
  if config.class_weighting == "none":
    return np.ones(config.model.num_classes, np.float32)
  if config.class_weighting != "inverse_frequency":
    raise ValueError(f"class_weighting must be 'inverse_frequency' or 'none', "
                     f"got {config.class_weighting!r}")
  labels = np.asarray([source[i]["emotion"] for i in range(len(source))])
  return individual.inverse_frequency_weights(labels, config.model.num_classes)


def _prepare(config):
  """The dataset's TFDS builder, built first if absent."""
  return loaders.prepare(config.data.name, config.data.config, config.data.data_dir,
                         config.data.get("manual_dir"))


def class_names(config, builder, feature: str = "emotion") -> tuple[str, ...]:
  """The names of the dataset's class `feature` (AffectNet's differ from SynthCrowd's), checked
  against the model's number of classes."""
  names = tuple(builder.info.features[feature].names)
  if len(names) != config.model.num_classes:
    raise ValueError(f"dataset {builder.info.full_name} has {len(names)} {feature} classes but "
                     f"config.model.num_classes is {config.model.num_classes}")
  return names


def _evaluate_fn(config, model, mesh, builder, split: str):
  source = loaders.split_source(builder, split)
  return individual.make_evaluate(
      model, lambda: loaders.eval_face_batches(source, config.eval.batch_size), mesh,
      size_buckets=tuple(tuple(b) for b in config.eval.size_buckets),
      class_names=class_names(config, builder))


def train(config, workdir: str) -> dict:
  """Builds the data if absent, trains with fit() (resuming), returns the final evaluation."""
  mesh = parallel.make_data_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  builder = _prepare(config)
  train_source = loaders.split_source(builder, config.data.train_split)
  model = make_model(config)
  state = initial_state(config, model, config.num_steps)
  outcome = loop.fit(
      workdir=workdir, state=state,
      train_step=individual.make_train_step(model, _class_weights(config, train_source)),
      train_batches=lambda start: loaders.train_face_batches(
          train_source, batch_size=config.batch_size, seed=config.seed,
          num_steps=config.num_steps, start_step=start, augment=config.data.augment,
          read_threads=config.data.read_threads, workers=config.data.workers),
      evaluate=_evaluate_fn(config, model, mesh, builder, config.data.eval_split),
      num_steps=config.num_steps, seed=config.seed, mesh=mesh, log_every=config.log_every,
      eval_every=config.eval.every, keep_latest=config.checkpoint.keep_latest,
      best_metric=config.checkpoint.best_metric, best_mode=config.checkpoint.best_mode,
      class_names=class_names(config, builder))
  return outcome["eval"]


def restore(config, workdir: str, mesh) -> tuple[EmoNet, TrainState, int]:
  """(model, state on `mesh`, step) of the run in `workdir`: its best checkpoint, else the latest."""
  model = make_model(config)
  state, step = restore_best(config, workdir, mesh,
                             lambda: initial_state(config, model, config.num_steps))
  return model, state, step


def restore_best(config, workdir: str, mesh, make_state) -> tuple[TrainState, int]:
  """(state on `mesh`, step) of any level's run in `workdir`: its best checkpoint, else the latest.

  `make_state()` gives the state's structure; it is only traced (eval_shape), never run.
  """
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoint in {directory}; train it first with experiments.run")
  checkpoints = checkpoint.Checkpoints(directory, best_metric=config.checkpoint.best_metric,
                                       best_mode=config.checkpoint.best_mode)
  step = checkpoints.best_step()
  step = checkpoints.latest_step() if step is None else step
  # Shapes only: initialising for real would compile the model's init just to overwrite it.
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                     sharding=parallel.replicated(mesh)),
                      jax.eval_shape(make_state))
  state = checkpoints.restore(like, step)
  checkpoints.close()
  if state is None:
    raise FileNotFoundError(f"no checkpoint in {directory}; train it first with experiments.run")
  return state, step


def evaluate(config, workdir: str) -> dict:
  """Evaluates the best checkpoint in `workdir` on `config.data.eval_split`."""
  mesh = parallel.make_data_mesh()
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  builder = _prepare(config)
  model, state, _ = restore(config, workdir, mesh)
  return _evaluate_fn(config, model, mesh, builder, config.data.eval_split)(state)


def accuracy_table(columns: list[str], rows: list[tuple[list[str], dict, str]],
                   ref: dict | None = None, ref_label: str = "") -> list[str]:
  """Markdown lines: the leading `columns`, then mAC, UAR, F1 and each class's accuracy, one row
  per (leading cells, results, key prefix of its metrics); then chance.

  Results with per-example arrays (experiments.comparison) also get the number of examples,
  mAC's 95% interval and, given a reference run `ref`, the paired difference to it.
  """
  names = [k[len("acc/"):] for k in rows[0][1] if k.startswith("acc/")]
  with_examples = any(comparison.readouts(results) for _, results, _ in rows)
  extra = ["examples", "mAC (95% CI)", f"mAC - {ref_label} (points, 95% CI)"] if with_examples \
      else ["mAC"]
  lines = ["| " + " | ".join([*columns, *extra, "UAR", "F1", *names]) + " |",
           "|" + "---|" * (len(columns) + len(extra) + 2 + len(names))]
  for cells, results, p in rows:
    mac = list(comparison.cells(results, p, ref)) if with_examples else [f"{results[f'{p}mAC']:.2%}"]
    lines.append("| " + " | ".join([
        *cells, *mac, f"{results[f'{p}UAR']:.4f}", f"{results[f'{p}F1']:.4f}",
        *(f"{results[f'{p}acc/{name}']:.2%}" for name in names)]) + " |")
  return lines + [f"\nchance: {1 / len(names):.1%}"]


def detail_tables(results: dict) -> list[str]:
  """Markdown lines: accuracy per emotion, then per face size (if evaluated), then chance."""
  names = [k[len("acc/"):] for k in results if k.startswith("acc/")]
  lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names),
           "| " + " | ".join(f"{results[f'acc/{e}']:.1%}" for e in names) + " |"]
  buckets = [k[len("acc@"):] for k in results if k.startswith("acc@")]
  if buckets:
    lines += ["", "| face size | faces | accuracy |", "|---|---|---|"]
    lines += [f"| {b} | {results[f'n@{b}']} | {results[f'acc@{b}']:.1%} |" for b in buckets]
  return lines + [f"\nchance: {1 / len(names):.1%}"]


def results_markdown(results: dict, title: str) -> str:
  """The paper's individual-level numbers as markdown: summary, per emotion, per face size."""
  lines = [f"## {title}", "", "| mAC | UAR | F1 |", "|---|---|---|",
           f"| {results['mAC']:.2%} | {results['UAR']:.4f} | {results['F1']:.4f} |", "",
           *detail_tables(results)]
  return "\n".join(lines) + "\n"
