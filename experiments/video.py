"""Train / evaluate a temporal fusion (TNVPF, FeC + RNN, FeC + LSTM) on a clips dataset (Table 7).

The clips' faces are seen through a trained EmoNet's cached embeddings
(`config.features`, as at the group level; experiments.sources). Training
reads windows of T annotated frames, every `config.clip.frame_stride`-th,
with T following `config.clip.curriculum`, pairs (T, until_step): the
paper trains with 2 time steps, then 5. Evaluation reads each clip from its
first annotated frame, `config.eval.num_frames` of them (enough for the
whole clip gives the video label of the whole clip).
"""

import itertools
import os

import jax
import jax.numpy as jnp
import optax

from data_pipelines import loaders
from emoflow.tasks import group, video
from emoflow.train import distributed, loop, optimizer, parallel, plots
from emoflow.train.state import TrainState
from experiments import comparison, individual, sources
from experiments import group as group_experiment
from experiments.workdir import load_config

# Table 7's row names of the cells.
MODEL_NAMES = {"tnvpf": "TNVPF", "rnn": "FeC + RNN", "lstm": "FeC + LSTM"}


def curriculum(config) -> list[tuple[int, int]]:
  """config.clip.curriculum checked: (num_frames, until_step) pairs, steps rising to num_steps."""
  phases = [(int(t), int(until)) for t, until in config.clip.curriculum]
  ends = [until for _, until in phases]
  if not phases or ends != sorted(ends) or ends[-1] != config.num_steps or min(
      t for t, _ in phases) < 1:
    raise ValueError(f"clip.curriculum must be (num_frames >= 1, until_step) pairs with rising "
                     f"steps ending at num_steps={config.num_steps}, got {config.clip.curriculum}")
  return phases


def _train_batches(config, source, start: int):
  """Batches start .. num_steps-1, each phase of the curriculum with its own window length."""
  phases, begin = [], 0
  for num_frames, until in curriculum(config):
    if until > start:
      phases.append(loaders.train_clip_batches(
          source, batch_size=config.batch_size, num_frames=num_frames,
          frame_stride=config.clip.frame_stride, max_groups=config.model.max_groups,
          max_faces=config.model.max_faces, seed=config.seed, num_steps=until,
          start_step=max(start, begin), read_threads=config.data.read_threads,
          workers=config.data.workers))
    begin = until
  return itertools.chain(*phases)


def trained_group_flow(config, num_features: int) -> dict:
  """The NVPF params of the FeC run config.model.group_flow_from, checked to fit this model's
  group flow and to have read the same EmoNet's features; one-line errors otherwise."""
  workdir = config.model.group_flow_from
  run = load_config(workdir, "group")
  if run.model.fusion != "fec" or (run.model.flow_units, run.model.flow_width) != (
      config.model.group_units, config.model.group_width):
    raise ValueError(
        f"model.group_flow_from: {workdir} is a {run.model.fusion} run with a flow of "
        f"{run.model.flow_units} units x {run.model.flow_width} filters; this model's group flow "
        f"needs a fec run of {config.model.group_units} x {config.model.group_width}")
  if os.path.abspath(run.features.emonet_workdir) != os.path.abspath(
      config.features.emonet_workdir):
    raise ValueError(f"model.group_flow_from: {workdir} was trained on the features of "
                     f"{run.features.emonet_workdir}, not of {config.features.emonet_workdir}")
  fusion = group.make_fusion(run.model)
  state, _ = individual.restore_best(
      run, workdir, parallel.make_data_mesh(),
      lambda: group_experiment.initial_state(run, fusion, num_features))
  return jax.device_get(state.params["flow"])


def initial_state(config, fusion, num_features: int) -> TrainState:
  """The temporal fusion over `num_features`-dim face embeddings, initialised from config.seed
  (train() then puts in the group flow of config.model.group_flow_from: with_trained_group_flow)."""
  m, g, n = num_features, config.model.max_groups, config.model.max_faces
  inputs = (jnp.zeros((1, 1, g, n, m), jnp.float32), jnp.ones((1, 1, g, n), bool),
            jnp.ones((1, 1, g), bool), jnp.ones((1, 1), bool))
  variables = jax.jit(lambda rng: fusion.init(rng, *inputs))(jax.random.key(config.seed))
  tx = optimizer.make_optimizer(config.optimizer, config.num_steps)
  if not fusion.train_group_flow:  # (a trained run keeps its optimizer state's layout otherwise)
    tx = optax.multi_transform({False: tx, True: optax.set_to_zero()}, fusion.frozen)
  return TrainState.create(variables, tx)


def with_trained_group_flow(config, state: TrainState, num_features: int) -> TrainState:
  """A fresh state whose group flow is config.model.group_flow_from's (if set): the optimizer
  starts over on the new params."""
  if not config.model.get("group_flow_from"):
    return state
  params = state.params
  params = {**params, "tnvpf": {**params["tnvpf"],
                                "group_flow": trained_group_flow(config, num_features)}}
  return TrainState.create({"params": params, **state.model_state}, state.tx)


def _evaluate_fn(config, fusion, mesh, builder, split: str):
  eval_source = loaders.split_source(builder, split)
  return video.make_evaluate(
      fusion, lambda: loaders.eval_clip_batches(
          eval_source, config.eval.batch_size, num_frames=config.eval.num_frames,
          frame_stride=config.clip.frame_stride, max_groups=config.model.max_groups,
          max_faces=config.model.max_faces),
      mesh, class_names=individual.class_names(config, builder, "label"))


def _num_features(builder) -> int:
  return builder.info.features["embeddings"].shape[-1]


def _features(config):
  if config.features.mode != "cached":
    raise ValueError(f"features.mode {config.features.mode!r}: the video level trains on cached "
                     "EmoNet features only (features.mode=cached)")
  return sources.features_builder(config)


def _finish(config, results: dict, workdir: str, builder) -> dict:
  """Draws the video ("mean" readout) and frame confusion matrices (paper Fig. 5) beside fit()'s
  confusion_matrix.png ("last"); adds the Table 7 model name."""
  names = individual.class_names(config, builder, "label")
  if distributed.is_main_process():
    for prefix, name in (("mean/", "confusion_matrix_mean"), ("frame/", "confusion_matrix_frames")):
      plots.plot_confusion(results[f"{prefix}confusion_matrix"], names,
                           os.path.join(workdir, "plots", f"{name}.png"),
                           title=f"{config.data.eval_split}, {prefix[:-1]}")
  return {**results, "model_name": MODEL_NAMES[config.model.cell],
          "row_name": MODEL_NAMES[config.model.cell]}


def train(config, workdir: str) -> dict:
  """Caches features if absent, trains with fit() (resuming), returns the final evaluation."""
  mesh = parallel.make_data_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  curriculum(config)
  fusion = video.make_fusion(config.model)
  builder = _features(config)
  train_source = loaders.split_source(builder, config.data.train_split)
  outcome = loop.fit(
      workdir=workdir, state=with_trained_group_flow(
          config, initial_state(config, fusion, _num_features(builder)), _num_features(builder)),
      train_step=video.make_train_step(fusion),
      train_batches=lambda start: _train_batches(config, train_source, start),
      evaluate=_evaluate_fn(config, fusion, mesh, builder, config.data.eval_split),
      num_steps=config.num_steps, seed=config.seed, mesh=mesh, log_every=config.log_every,
      eval_every=config.eval.every, keep_latest=config.checkpoint.keep_latest,
      best_metric=config.checkpoint.best_metric, best_mode=config.checkpoint.best_mode,
      class_names=individual.class_names(config, builder, "label"))
  return _finish(config, outcome["eval"], workdir, builder)


def evaluate(config, workdir: str) -> dict:
  """Evaluates the best checkpoint in `workdir` on `config.data.eval_split`."""
  mesh = parallel.make_data_mesh()
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  fusion = video.make_fusion(config.model)
  builder = _features(config)
  state, _ = individual.restore_best(
      config, workdir, mesh, lambda: initial_state(config, fusion, _num_features(builder)))
  results = _evaluate_fn(config, fusion, mesh, builder, config.data.eval_split)(state)
  return _finish(config, results, workdir, builder)


REFERENCE_LABEL = comparison.REFERENCES["video"].label


def table(runs: list[dict], ref: dict | None = None) -> list[str]:
  """Markdown lines of the paper's Table 7 (mAC with its interval and its paired difference to
  the reference run `ref`, accuracy per class), three rows per run's results (the video by its
  last frame, by the mean of its frames, the frames); then chance and what the intervals are."""
  readouts = (("", "video (last frame)"), ("mean/", "video (mean of frames)"), ("frame/", "frames"))
  lines = individual.accuracy_table(["model", "prediction"], [
      ([results["model_name"], readout], results, prefix)
      for results in runs for prefix, readout in readouts], ref, REFERENCE_LABEL)
  if any(comparison.readouts(r) for r in runs):
    lines += ["", comparison.footnote("videos", ref, f"mAC - {REFERENCE_LABEL}") +
              " Frames are resampled with their video: \"n in m\" is n frames in m videos."]
  return lines


def results_markdown(results: dict, title: str) -> str:
  """The paper's Table 7 format (`table`) for one run, against results["reference"]."""
  return "\n".join([f"## {title}", "", *table([results], results.get("reference"))]) + "\n"
