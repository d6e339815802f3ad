"""Video inference throughput per stage: frames/s and faces/s of `emoflow predict`'s pipeline.

Renders a SynthCrowd clip (default 1280x720, about 50 faces per frame, 4 s
at 10 fps) unless --video is given, runs emoflow.pipeline over every frame
once to compile, then again timed, and prints a table: per stage (decode,
detect, align, EmoNet, group = k-means or --grouping rpn (the model
directory's RPN and the proposal rule), NVPF = group fusion, TNVPF) the
seconds, frames/s and faces/s, and the total. Faces come from the detector
`emoflow predict` would pick with the same flags (emoflow.cli.make_detector):
by default the clip's annotation JSON (detection then costs only the
padding), or --detector retinaface (the model directory's trained RetinaFace,
or --retinaface-weights), or --detector yunet --yunet-model F.onnx.
Models: --model DIR (experiments.export_model), else untrained models of the
CPU configs' sizes (speed does not depend on the weights).

  python benchmarks/pipeline_throughput.py [--model DIR] [--video V.mp4]
      [--detector annotations|retinaface|yunet] [--retinaface-weights PTH] [--yunet-model ONNX]
      [--grouping kmeans|rpn] [--batch-frames 8] [--faces 45-55] [--size 1280x720] [--seconds 4]
"""

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.synthcrowd import crowds, videos
from emoflow import bundle, cli, host_memory, pipeline
from emoflow.labels import EMOTIONS
from emoflow.models import EmoNet
from emoflow.tasks import group as group_task
from emoflow.tasks import video as video_task
from emoflow.vision import video as video_io
from experiments.configs import nvpf_synthcrowd, tnvpf_synthcrowd


def untrained_bundle() -> bundle.Bundle:
  """EmoNet (128-d) + the CPU configs' group and video models, randomly initialised."""
  group_config = nvpf_synthcrowd.get_config().model
  video_config = tnvpf_synthcrowd.get_config().model
  m, n, g = 128, group_config.max_faces, video_config.max_groups
  variables = {
      "emonet": EmoNet(num_classes=8, embed_dim=m).init(jax.random.key(0),
                                                        jnp.zeros((1, 112, 112, 3))),
      "group": group_task.make_fusion(group_config).init(
          jax.random.key(1), jnp.zeros((1, n, m)), jnp.ones((1, n), bool)),
      "video": video_task.make_fusion(video_config).init(
          jax.random.key(2), jnp.zeros((1, 1, g, video_config.max_faces, m)),
          jnp.ones((1, 1, g, video_config.max_faces), bool), jnp.ones((1, 1, g), bool),
          jnp.ones((1, 1), bool))}
  config = {"emonet": {"num_classes": 8, "embed_dim": m}, "group": group_config.to_dict(),
            "video": video_config.to_dict(), "sampling_fps": None,
            "labels": pipeline.vocabulary(EMOTIONS), "preprocessing": pipeline.preprocessing()}
  return bundle.Bundle(config, jax.device_get(variables))


def render_clip(directory: str, size: tuple[int, int], faces: tuple[int, int],
                seconds: float) -> str:
  crowd = crowds.CrowdDifficulty(size=size, num_faces=faces)
  spec = videos.VideoSpec(duration_s=(seconds, seconds), fps=(10, 10))
  videos.render_video(np.random.default_rng(0), directory, "clip", crowd, spec)
  return os.path.join(directory, "clip.mp4")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model")
  parser.add_argument("--video")
  parser.add_argument("--detector", default="annotations",
                      choices=("annotations", "retinaface", "yunet"))
  parser.add_argument("--annotations")
  parser.add_argument("--retinaface-weights")
  parser.add_argument("--detector-scale", type=float)
  parser.add_argument("--yunet-model")
  parser.add_argument("--max-faces", type=int, default=256)
  parser.add_argument("--grouping", default="kmeans", choices=pipeline.GROUPINGS)
  parser.add_argument("--batch-frames", type=int, default=8)
  parser.add_argument("--faces", default="45-55", help="people per rendered frame, LOW-HIGH")
  parser.add_argument("--size", default="1280x720", help="rendered frame size, WxH")
  parser.add_argument("--seconds", type=float, default=4.0, help="rendered clip length")
  args = parser.parse_args()
  host_memory.keep_freed_memory()  # as emoflow's commands do
  with tempfile.TemporaryDirectory() as tmp:
    path = args.video or render_clip(tmp, tuple(map(int, args.size.split("x"))),
                                     tuple(map(int, args.faces.split("-"))), args.seconds)
    info = video_io.probe(path)
    model = bundle.load(args.model) if args.model else untrained_bundle()
    runner = pipeline.Pipeline(model, cli.make_detector(argparse.Namespace(**{**vars(args),
                                                                             "video": path}), model),
                               grouping=args.grouping)
    runner.run(path, sampling_fps=info.fps, batch_frames=args.batch_frames, progress=False)
    runner.timings.clear()  # the first run compiled every shape; time the second
    start = time.perf_counter()
    doc = runner.run(path, sampling_fps=info.fps, batch_frames=args.batch_frames, progress=False)
    total = time.perf_counter() - start
  frames = len(doc["frames"])
  faces = sum(len(f["faces"]) for f in doc["frames"])
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}; "
        f"{info.width}x{info.height}, {frames} frames, {faces / max(frames, 1):.1f} faces/frame, "
        f"detector {args.detector}, grouping {args.grouping}, batch {args.batch_frames} frames, "
        f"{'model ' + args.model if args.model else 'untrained CPU-config models'}\n")
  print("| stage | seconds | frames/s | faces/s |")
  print("|---|---|---|---|")
  for stage in pipeline.STAGES + ("total",):
    seconds = total if stage == "total" else runner.timings.get(stage, 0.0)
    rate = (lambda n: f"{n / seconds:,.1f}" if seconds > 0 else "-")
    print(f"| {stage} | {seconds:.3f} | {rate(frames)} | {rate(faces)} |")


if __name__ == "__main__":
  main()
