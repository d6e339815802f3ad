"""Gather trained runs into one model directory for `emoflow predict`.

  python -m experiments.export_model --emonet=RUN --group=RUN [--video=RUN] [--detector=RUN]
                                    [--rpn=RUN] --out=DIR

Takes each run's best checkpoint (else its latest): the EmoNet of an
individual run, the fusion of a group run (trained on cached features) and,
optionally, the temporal model of a video run and the RetinaFace of a
detection run (with its input scale and thresholds, so `emoflow predict` finds
faces with no download) and the group proposal network of a proposals run (for
`emoflow predict --grouping rpn`, with the size of the frames it trained on
where its dataset fixes one: SynthCrowd's, not GECV's), and writes
DIR/model.json + DIR/weights.msgpack (emoflow.bundle). The group and video
runs must read the same EmoNet's features (their features.emonet_workdir is
checked against --emonet). model.json also records the EmoNet's label
vocabulary (its dataset's class names) and the preprocessing (RGB, crop size,
alignment template), which `emoflow predict` checks against its own. A user
mistake ends with one line on stderr and exit code 2.
"""

import os

import jax
import ml_collections
from absl import flags

from data_pipelines import loaders
from emoflow import bundle, pipeline
from emoflow.tasks import group as group_task
from emoflow.tasks import video as video_task
from emoflow.train import parallel
from emoflow.train.state import TrainState
from experiments import (cache_features, command, detection, group, individual, proposals, sources,
                         video)
from experiments.workdir import load_config

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("emonet", None, "workdir of the individual (EmoNet) run")
  flags.DEFINE_string("group", None, "workdir of the group run (fusion on cached features)")
  flags.DEFINE_string("video", None, "workdir of the video run (optional)")
  flags.DEFINE_string("detector", None, "workdir of the detection (RetinaFace) run (optional)")
  flags.DEFINE_string("rpn", None, "workdir of the group proposals (RPN) run (optional)")
  flags.DEFINE_string("out", None, "the model directory to write")
  flags.DEFINE_bool("debug", False, "show tracebacks for user errors")


def _check_features(config, workdir: str, emonet_workdir: str) -> None:
  if config.features.mode != "cached":
    raise ValueError(f"{workdir} fine-tuned its own EmoNet (features.mode={config.features.mode});"
                     " export runs trained on cached features")
  if os.path.realpath(config.features.emonet_workdir) != os.path.realpath(emonet_workdir):
    raise ValueError(f"{workdir} was trained on the features of {config.features.emonet_workdir},"
                     f" not of {emonet_workdir}")


def _sampling_fps(config) -> float | None:
  """Frames per second of the windows the video model was trained on: the clips' sampling rate
  (their builder config's frames_per_second) over the frame stride; None if the data does not
  say."""
  clip_fps = getattr(sources.source_builder(config).builder_config, "frames_per_second", None)
  return clip_fps / config.clip.frame_stride if clip_fps else None


# A fusion level's task (make_fusion) and experiment (initial_state) modules.
_FUSION_LEVELS = {"group": (group_task, group), "video": (video_task, video)}


def _fusion_stage(workdir: str, task: str, emonet_workdir: str, embed_dim: int,
                  mesh) -> tuple[ml_collections.ConfigDict, TrainState, int]:
  """(run config, state, step) of a group or video run trained on emonet_workdir's features."""
  config = load_config(workdir, task)
  _check_features(config, workdir, emonet_workdir)
  task_module, experiment = _FUSION_LEVELS[task]
  fusion = task_module.make_fusion(config.model)
  state, step = individual.restore_best(
      config, workdir, mesh, lambda: experiment.initial_state(config, fusion, embed_dim))
  return config, state, step


def _restore(workdir: str, task: str, experiment, mesh) -> tuple:
  """(config, state, step) of a detection or proposals run, from its best checkpoint."""
  config = load_config(workdir, task)
  model = experiment.make_model(config)
  state, step = individual.restore_best(config, workdir, mesh,
                                        lambda: experiment.initial_state(config, model))
  return config, state, step


def _detector(workdir: str, mesh) -> tuple[dict, TrainState, int]:
  """(model.json block, state, step) of a detection run: how emoflow.pipeline rebuilds it."""
  config, state, step = _restore(workdir, "detection", detection, mesh)
  block = {"trunk": config.model.trunk, "dtype": config.model.dtype,
           "input_scale": config.data.input_scale,
           "score_threshold": config.eval.score_threshold,
           "nms_threshold": config.eval.nms_threshold}
  return block, state, step


def training_frame_size(config) -> list[int] | None:
  """[width, height] of the frames a proposals run trained on (before data.input_scale), where its
  dataset config fixes one: SynthCrowd's frames configs render every frame at their
  CrowdDifficulty's size. None where frames keep their sources' sizes (GECV's group_frames:
  each video's own), which no config says."""
  builder = loaders.make_builder(config.data.name, config.data.config, config.data.data_dir)
  crowd = getattr(builder.builder_config, "crowd", None)
  if getattr(builder.builder_config, "kind", None) != "frames" or crowd is None:
    return None
  return [int(crowd.size[0]), int(crowd.size[1])]


def _rpn(workdir: str, mesh) -> tuple[dict, TrainState, int]:
  """(model.json block, state, step) of a proposals run: how emoflow.pipeline rebuilds it; its
  "frame_size" (training_frame_size) only where the run's dataset fixes one."""
  config, state, step = _restore(workdir, "proposals", proposals, mesh)
  block = {"width": config.model.width, "dtype": config.model.dtype,
           "scales": list(config.model.scales), "ratios": list(config.model.ratios),
           "input_scale": config.data.input_scale,
           "score_threshold": config.eval.score_threshold,
           "nms_threshold": config.eval.nms_threshold,
           "max_proposals": config.eval.max_proposals, "min_size": config.eval.min_size}
  frame_size = training_frame_size(config)
  if frame_size is not None:
    block["frame_size"] = frame_size
  return block, state, step


def export(emonet_workdir: str, group_workdir: str, video_workdir: str | None, out: str,
           detector_workdir: str | None = None, rpn_workdir: str | None = None) -> dict:
  """Writes the model directory `out`; returns its model.json contents."""
  mesh = parallel.make_data_mesh()
  emonet_config = cache_features.run_config(emonet_workdir)
  _, emonet_state, emonet_step = individual.restore(emonet_config, emonet_workdir, mesh)
  embed_dim = emonet_config.model.embed_dim
  stages = {"emonet": (emonet_state, emonet_workdir, emonet_step)}

  group_config, state, step = _fusion_stage(group_workdir, "group", emonet_workdir, embed_dim,
                                            mesh)
  stages["group"] = (state, group_workdir, step)
  emonet_data = loaders.make_builder(emonet_config.data.name, emonet_config.data.config,
                                     emonet_config.data.data_dir)
  config = {"labels": pipeline.vocabulary(individual.class_names(emonet_config, emonet_data)),
            "preprocessing": pipeline.preprocessing(),
            "emonet": {"num_classes": emonet_config.model.num_classes, "embed_dim": embed_dim,
                       "width": emonet_config.model.get("width", 1.0),
                       "depth": emonet_config.model.get("depth", 1.0)},
            "group": group_config.model.to_dict(), "video": None, "sampling_fps": None}
  if video_workdir:
    video_config, state, step = _fusion_stage(video_workdir, "video", emonet_workdir, embed_dim,
                                              mesh)
    stages["video"] = (state, video_workdir, step)
    config["video"] = video_config.model.to_dict()
    config["sampling_fps"] = _sampling_fps(video_config)
  if detector_workdir:
    config["detector"], state, step = _detector(detector_workdir, mesh)
    stages["detector"] = (state, detector_workdir, step)
  if rpn_workdir:
    config["rpn"], state, step = _rpn(rpn_workdir, mesh)
    stages["rpn"] = (state, rpn_workdir, step)
  variables = {name: jax.device_get(state.variables) for name, (state, _, _) in stages.items()}
  config["sources"] = {name: {"workdir": os.path.abspath(workdir), "step": step}
                       for name, (_, workdir, step) in stages.items()}
  bundle.save(out, config, variables)
  return config


def main() -> None:
  for name in ("emonet", "group", "out"):
    if not FLAGS[name].value:
      raise ValueError(f"--{name} is required")
  config = export(FLAGS.emonet, FLAGS.group, FLAGS.video, FLAGS.out, FLAGS.detector, FLAGS.rpn)
  steps = ", ".join(f"{name} step {source['step']}" for name, source in config["sources"].items())
  print(f"wrote {FLAGS.out} ({steps})")


if __name__ == "__main__":
  _define_flags()
  command.run(main)
