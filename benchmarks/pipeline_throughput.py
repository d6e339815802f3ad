"""Video inference throughput per stage: frames/s and faces/s of `emoflow predict`'s pipeline.

Renders a SynthCrowd clip (default 1280x720, about 50 faces per frame, 4 s
at 10 fps) unless --video is given, runs emoflow.pipeline over every frame
(or at --fps, else the model's rate) once to compile, then twice with every
stage in line (the faster run gives the table: per stage (decode, detect,
align, EmoNet, group = k-means or --grouping rpn (the model directory's RPN
and the proposal rule), NVPF = group fusion, TNVPF) the seconds, frames/s
and faces/s, and the total) and twice as emoflow predict runs it, decode and
detection in a reader thread beside the other stages ("total, reader
thread"). Alternating with these runs it times the same face model
standalone: one jitted call per pipeline.FACE_BLOCK faces, as the pipeline
calls it, on device-resident faces (median of 3), and prints the ratio of
the two. Faces come from the
detector `emoflow predict` would pick with the same flags
(emoflow.cli.make_detector): by default the clip's annotation JSON
(detection then costs only the padding), or --detector retinaface (the
model directory's trained RetinaFace, or --retinaface-weights), mtcnn or
yunet --yunet-model F.onnx. Models: --model DIR (experiments.export_model)
or `starter`, else untrained models of the CPU configs' sizes (speed does
not depend on the weights). --predict also times whole `emoflow predict`
processes (process start to files written) with an empty compilation cache
(cold) and again with the cache it filled (warm).

  python benchmarks/pipeline_throughput.py [--model DIR|starter] [--video V.mp4]
      [--detector annotations|retinaface|mtcnn|yunet] [--retinaface-weights PTH]
      [--yunet-model ONNX] [--grouping kmeans|rpn] [--rpn-scale S] [--fps F]
      [--batch-frames 8] [--faces 45-55] [--size 1280x720] [--seconds 4] [--predict]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.synthcrowd import crowds, videos
from emoflow import bundle, cli, host_memory, pipeline, starter
from emoflow.labels import EMOTIONS
from emoflow.models import EmoNet
from emoflow.tasks import group as group_task
from emoflow.tasks import video as video_task
from emoflow.vision import video as video_io
from experiments.configs import nvpf_synthcrowd, tnvpf_synthcrowd


def untrained_bundle() -> tuple[dict, dict]:
  """(model.json, variables) of EmoNet (128-d) + the CPU configs' group and video models, randomly
  initialised."""
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
  return config, jax.device_get(variables)


def render_clip(directory: str, size: tuple[int, int], faces: tuple[int, int],
                seconds: float) -> str:
  crowd = crowds.CrowdDifficulty(size=size, num_faces=faces)
  spec = videos.VideoSpec(duration_s=(seconds, seconds), fps=(10, 10))
  videos.render_video(np.random.default_rng(0), directory, "clip", crowd, spec)
  return os.path.join(directory, "clip.mp4")


def standalone_faces_per_s(model: bundle.Bundle, faces: int, repeats: int = 3) -> float:
  """Faces/s of the model's face stage alone, FACE_BLOCK faces a jitted call, over `faces`
  faces' worth of calls (median of `repeats`)."""
  predict, _ = pipeline.face_model(model.config)
  predict = jax.jit(predict)
  block = jax.random.randint(jax.random.key(3), (pipeline.FACE_BLOCK, 112, 112, 3), 0, 256
                             ).astype(jnp.uint8)
  variables = jax.device_put(model.variables["emonet"])
  calls = max(1, -(-faces // pipeline.FACE_BLOCK))
  jax.block_until_ready(predict(variables, block))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready([predict(variables, block) for _ in range(calls)])
    times.append(time.perf_counter() - start)
  return calls * pipeline.FACE_BLOCK / statistics.median(times)


def predict_seconds(video: str, model_dir: str, args, cache: str, out: str) -> float:
  """Wall time of one `emoflow predict` process with the benchmark's flags, files included."""
  command = [sys.executable, "-m", "emoflow.cli", "predict", video, "--model", model_dir,
             "--out", out, "--quiet", "--compile-cache", cache, "--detector", args.detector,
             "--grouping", args.grouping, "--batch-frames", str(args.batch_frames)]
  for flag in ("fps", "rpn_scale", "retinaface_weights", "yunet_model", "detector_scale",
               "annotations"):
    if getattr(args, flag) is not None:
      command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
  start = time.perf_counter()
  subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model")
  parser.add_argument("--video")
  parser.add_argument("--detector", default="annotations",
                      choices=("annotations", "retinaface", "mtcnn", "yunet"))
  parser.add_argument("--annotations")
  parser.add_argument("--retinaface-weights")
  parser.add_argument("--detector-scale", type=float)
  parser.add_argument("--yunet-model")
  parser.add_argument("--max-faces", type=int, default=256)
  parser.add_argument("--grouping", default="kmeans", choices=pipeline.GROUPINGS)
  parser.add_argument("--rpn-scale", type=float)
  parser.add_argument("--fps", type=float, help="frames per second to analyse (default: the "
                      "model's sampling rate, as emoflow predict; every frame for the untrained)")
  parser.add_argument("--batch-frames", type=int, default=8)
  parser.add_argument("--faces", default="45-55", help="people per rendered frame, LOW-HIGH")
  parser.add_argument("--size", default="1280x720", help="rendered frame size, WxH")
  parser.add_argument("--seconds", type=float, default=4.0, help="rendered clip length")
  parser.add_argument("--predict", action="store_true",
                      help="also time whole `emoflow predict` processes, cold and warm")
  args = parser.parse_args()
  host_memory.keep_freed_memory()  # as emoflow's commands do
  with tempfile.TemporaryDirectory() as tmp:
    path = args.video or render_clip(tmp, tuple(map(int, args.size.split("x"))),
                                     tuple(map(int, args.faces.split("-"))), args.seconds)
    info = video_io.probe(path)
    model_dir = starter.resolve(args.model) if args.model else os.path.join(tmp, "model")
    if not args.model:
      bundle.save(model_dir, *untrained_bundle())
    model = bundle.load(model_dir)
    runner = pipeline.Pipeline(model, cli.make_detector(argparse.Namespace(**{**vars(args),
                                                                             "video": path}), model),
                               grouping=args.grouping, rpn_scale=args.rpn_scale)
    def timed_run(read_ahead: int) -> tuple[float, dict]:
      runner.timings.clear()
      start = time.perf_counter()
      doc = runner.run(path, sampling_fps=args.fps, batch_frames=args.batch_frames,
                       progress=False, read_ahead=read_ahead)
      return time.perf_counter() - start, doc

    timed_run(pipeline.READ_AHEAD)  # compiles every shape
    # Two rounds, alternating: in line (each stage alone on the cores: the stage table), the
    # standalone face model, and with the reader thread (the total as emoflow predict runs).
    rounds = []
    for _ in range(2):
      inline, doc = timed_run(0)
      stages = dict(runner.timings)
      frames, faces = len(doc["frames"]), sum(len(f["faces"]) for f in doc["frames"])
      rounds.append((inline, stages, standalone_faces_per_s(model, faces),
                     timed_run(pipeline.READ_AHEAD)[0]))
    total, stages, _, _ = min(rounds, key=lambda r: r[0])
    alone = max(r[2] for r in rounds)
    overlapped = min(r[3] for r in rounds)
    if args.predict:
      cache = os.path.join(tmp, "compile_cache")
      walls = [predict_seconds(path, model_dir, args, cache, os.path.join(tmp, f"out{k}"))
               for k in range(2)]
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), {os.cpu_count()} CPUs, jax "
        f"{jax.__version__}; {info.width}x{info.height}, {frames} frames, "
        f"{faces / max(frames, 1):.1f} faces/frame, detector {args.detector}, grouping "
        f"{args.grouping}, batch {args.batch_frames} frames, "
        f"{'model ' + args.model if args.model else 'untrained CPU-config models'}\n")
  print("| stage | seconds | frames/s | faces/s |")
  print("|---|---|---|---|")
  for stage in pipeline.STAGES + ("total", "total, reader thread"):
    seconds = {"total": total, "total, reader thread": overlapped}.get(stage,
                                                                       stages.get(stage, 0.0))
    rate = (lambda n: f"{n / seconds:,.1f}" if seconds > 0 else "-")
    print(f"| {stage} | {seconds:.3f} | {rate(frames)} | {rate(faces)} |")
  stage = stages.get("emonet", 0.0)
  inside = faces / stage if stage > 0 else float("nan")
  print(f"\nstages and total: in line, the faster of 2 runs; 'reader thread': decode and detection "
        f"{pipeline.READ_AHEAD} batches ahead in a thread, as emoflow predict runs (faster of 2)."
        f"\nface model: {inside:,.1f} faces/s in the pipeline, {alone:,.1f} standalone "
        f"({pipeline.FACE_BLOCK} faces a call, same run, faster of 2): ratio {inside / alone:.2f}")
  if args.predict:
    print(f"emoflow predict, process start to files written: cold {walls[0]:.1f} s "
          f"(empty compilation cache), warm {walls[1]:.1f} s")


if __name__ == "__main__":
  main()
