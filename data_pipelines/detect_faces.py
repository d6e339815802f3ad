"""The face detections that EmotiW GAF and VGAF ship without, written for their builders.

The `emotiw_gaf` and `vgaf` builders read each face's box and 5 landmarks
from files in the manual directory (formats in their docstrings); this module
writes them with an emoflow detector (MTCNN by default), and the builders run
it by themselves when the files are missing (`write_missing`).

- GAF: MANUAL_DIR/detections.json, every image of both splits, one at a time
  (an empty list for an image with no face), written once, at the end: an
  interrupted run leaves no file and starts over.
- VGAF: MANUAL_DIR/detections/{Train,Val}/NAME.json per labelled video, its
  faces at the frames the builder samples (`frames_per_second`, 2 by
  default), each file written when its video is done: a rerun skips the
  videos that have one, so an interrupted run continues where it stopped.

Command line:

  python -m data_pipelines.detect_faces MANUAL_DIR --dataset emotiw_gaf|vgaf
      [--detector mtcnn] [--max-faces K] [--out DIR] [--quiet]

--out DIR writes into DIR instead of MANUAL_DIR, for a download that cannot
be written to: DIR gets links to MANUAL_DIR's entries beside the detections,
so it is a complete manual directory to build from
(`--config.data.manual_dir=DIR`). A user mistake (a directory not in the
dataset's layout, a bad flag) ends with one line on stderr and exit code 2.
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np
import tqdm
from absl import logging

from data_pipelines import annotations
from data_pipelines.builders import emotiw_gaf, gecv, manual, vgaf
from emoflow.fileio import atomic_open
from emoflow.vision import detect
from emoflow.vision import video as vision_video

DATASETS = ("emotiw_gaf", "vgaf")
DETECTOR = "mtcnn"
MAX_FACES = 64  # a GAF image can show a few dozen people; beyond K, the lowest scores are dropped
BATCH_SIZE = 8  # video frames per detector call
# Frames go to the detector zero-padded (bottom, right: the faces keep their pixel coordinates)
# to multiples of this, and batches to BATCH_SIZE frames: a jitted detector compiles once per
# shape (MTCNN: ~15 s on 2 CPU cores), so GAF's many image sizes share a few padded ones.
SIZE_STEP = 256
# What the builders' log line quotes: MTCNN on 2 CPU cores, per ~512 x 512 image or frame.
SECONDS_PER_FRAME = 0.5


def _detect(detector: detect.Detector, frames: np.ndarray, batch: int) -> detect.Detections:
  """`detector` on `frames` [F, H, W, 3] padded to `batch` frames of SIZE_STEP multiples, as numpy
  arrays of the F frames' results."""
  count, height, width, _ = frames.shape
  padding = ((0, batch - count), (0, -height % SIZE_STEP), (0, -width % SIZE_STEP), (0, 0))
  found = detector(np.pad(frames, padding))
  return jax.tree.map(lambda x: np.asarray(x)[:count], found)


def faces_per_frame(found: detect.Detections) -> list[list[dict]]:
  """Each frame's valid faces as {"box", "landmarks"} dicts (pixels rounded to 0.01), best first."""
  boxes, landmarks, valid = found.boxes, found.landmarks, found.valid
  rounded = lambda x: np.round(x.astype(np.float64), 2).tolist()
  return [[{"box": rounded(b), "landmarks": rounded(lm)}
           for b, lm in zip(boxes[f][valid[f]], landmarks[f][valid[f]])]
          for f in range(len(valid))]


def _warn_dropped(dropped: int, frames: int, what: str) -> None:
  if dropped:
    logging.warning("%d faces beyond the detector's max_faces were left out of %d %s",
                    dropped, frames, what)


def gaf_images(manual_dir: str) -> list[tuple[str, str]]:
  """(path, detections.json key) of every image of both GAF splits; one-line error off the layout."""
  return [(path, key) for images, keys in emotiw_gaf.split_images(manual_dir).values()
          for (path, _), key in zip(images, keys)]


def write_gaf_detections(manual_dir: str, detector: detect.Detector, out: str | None = None,
                         progress: bool = True) -> str:
  """Detects the faces of every GAF image, one at a time, and writes detections.json into `out`
  (default `manual_dir`), atomically at the end; returns its path."""
  images = gaf_images(manual_dir)
  detections, dropped = {}, 0
  for path, key in tqdm.tqdm(images, desc="emotiw_gaf faces", unit="image", disable=not progress):
    found = _detect(detector, manual.read_rgb(path)[None], 1)
    (detections[key],) = faces_per_frame(found)
    dropped += int(found.dropped.sum())
  _warn_dropped(dropped, len(images), "images")
  path = os.path.join(out or manual_dir, emotiw_gaf.DETECTIONS)
  with atomic_open(path) as f:
    json.dump(detections, f, separators=(",", ":"))
  return path


def vgaf_jobs(manual_dir: str, out: str | None = None) -> list[tuple[str, str]]:
  """(video path, detections path under `out`, default `manual_dir`) of every labelled VGAF video."""
  return [(video_path, os.path.join(out or manual_dir, os.path.relpath(detections, manual_dir)))
          for videos in vgaf.split_videos(manual_dir).values()
          for _, _, video_path, detections in videos]


def detect_video(path: str, detector: detect.Detector, frames_per_second: float | None,
                 batch_size: int = BATCH_SIZE) -> tuple[annotations.Video, int]:
  """(detections, faces dropped beyond max_faces) of the frames of a video that a builder
  sampling `frames_per_second` decodes.

  The frames are those gecv.sample_frames picks when every frame is a
  candidate; the builder then picks exactly these among the written ones.
  """
  info = vision_video.probe(path)
  if info.fps <= 0 or info.num_frames <= 0:
    raise ValueError(f"{path}: its header gives no frame rate or frame count")
  every = annotations.Video(video=os.path.basename(path), fps=info.fps, num_frames=info.num_frames,
                            width=info.width, height=info.height, label="neutral",
                            frames=[annotations.Frame(index=i) for i in range(info.num_frames)])
  wanted = [frame.index for frame in gecv.sample_frames(every, frames_per_second)]
  frames, dropped = [], 0
  for indices, batch in vision_video.read_batches(path, wanted, batch_size):
    found = _detect(detector, batch, batch_size)
    frames += [annotations.Frame(index=int(i), faces=[annotations.Face(**face) for face in faces])
               for i, faces in zip(indices, faces_per_frame(found))]
    dropped += int(found.dropped.sum())
  every.frames = frames
  return every, dropped


def write_vgaf_detections(manual_dir: str, detector: detect.Detector,
                          frames_per_second: float | None = vgaf.FRAMES_PER_SECOND,
                          out: str | None = None,
                          batch_size: int = BATCH_SIZE, progress: bool = True) -> int:
  """Writes detections/{Train,Val}/NAME.json under `out` (default `manual_dir`) for every labelled
  VGAF video that has none yet, each atomically as it is done; returns how many it wrote."""
  jobs = [(video, json_path) for video, json_path in vgaf_jobs(manual_dir, out)
          if not os.path.isfile(json_path)]
  dropped = 0
  for video, json_path in tqdm.tqdm(jobs, desc="vgaf faces", unit="video", disable=not progress):
    detected, lost = detect_video(video, detector, frames_per_second, batch_size)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    annotations.save(detected, json_path)
    dropped += lost
  _warn_dropped(dropped, len(jobs), "videos")
  return len(jobs)


def _writable(directory: str) -> bool:
  """Whether files can be made in `directory`, or in its nearest existing parent (made on demand)."""
  directory = os.path.abspath(directory)
  while not os.path.isdir(directory):
    directory = os.path.dirname(directory)
  return os.access(directory, os.W_OK)


def write_missing(dataset: str, manual_dir: str,
                  frames_per_second: float | None = vgaf.FRAMES_PER_SECOND) -> None:
  """What a builder runs when detections are missing: MTCNN's, written into `manual_dir`.

  Logs what it does and about how long it takes; a one-line error naming the
  command with --out when `manual_dir` cannot be written to.
  """
  if dataset == "emotiw_gaf":
    count, unit, where = len(gaf_images(manual_dir)), "images", [manual_dir]
  else:
    missing = [json_path for _, json_path in vgaf_jobs(manual_dir)
               if not os.path.isfile(json_path)]
    count, unit, where = len(missing), "videos", sorted({os.path.dirname(p) for p in missing})
  if not all(map(_writable, where)):
    raise ValueError(f"{dataset}: {manual_dir} has no face detections and cannot be written to: "
                     f"run `python -m data_pipelines.detect_faces {manual_dir} --dataset {dataset} "
                     "--out DIR` and build from DIR (--config.data.manual_dir=DIR)")
  frames = "image" if dataset == "emotiw_gaf" else f"frame ({frames_per_second} per second of video)"
  logging.warning("%s: %s has no face detections for %d %s: detecting them with %s and writing "
                  "them there, once (on 2 CPU cores about %.1f s per %s plus ~15 s of compiling "
                  "per new frame size; less on a GPU; the progress bar shows the time left)",
                  dataset, manual_dir, count, unit, DETECTOR.upper(),
                  SECONDS_PER_FRAME, frames)
  detector = detect.make(DETECTOR, max_faces=MAX_FACES)
  if dataset == "emotiw_gaf":
    write_gaf_detections(manual_dir, detector)
  else:
    write_vgaf_detections(manual_dir, detector, frames_per_second)


def link_manual_dir(manual_dir: str, out: str) -> None:
  """Makes `out` a manual directory: symbolic links to `manual_dir`'s entries but its detections."""
  os.makedirs(out, exist_ok=True)
  for name in sorted(os.listdir(manual_dir)):
    link = os.path.join(out, name)
    if name.lower() not in ("detections", emotiw_gaf.DETECTIONS) and not os.path.lexists(link):
      os.symlink(os.path.abspath(os.path.join(manual_dir, name)), link)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The command line's arguments (module docstring)."""
  parser.add_argument("manual_dir", help="the dataset's manual directory, in its official layout")
  parser.add_argument("--dataset", required=True, choices=DATASETS)
  parser.add_argument("--detector", default=DETECTOR, choices=(DETECTOR,))
  parser.add_argument("--max-faces", type=int, default=MAX_FACES,
                      help=f"faces kept per image or frame, best scores first (default {MAX_FACES})")
  parser.add_argument("--out", help="write here instead, beside links to MANUAL_DIR's files "
                      "(for a read-only download; build from this directory then)")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> None:
  """Runs the command add_arguments parsed; a user mistake raises a one-line ValueError."""
  if args.max_faces < 1:
    raise ValueError(f"--max-faces must be at least 1, got {args.max_faces}")
  manual_dir, out = args.manual_dir, args.out or args.manual_dir
  count = len(gaf_images(manual_dir) if args.dataset == "emotiw_gaf" else vgaf_jobs(manual_dir))
  if not _writable(out):
    raise ValueError(f"{out} cannot be written to; write the detections elsewhere with --out DIR")
  if args.out:
    link_manual_dir(manual_dir, out)
  detector = detect.make(args.detector, max_faces=args.max_faces)
  start = time.monotonic()
  if args.dataset == "emotiw_gaf":
    path = write_gaf_detections(manual_dir, detector, out, progress=not args.quiet)
    done = f"{path}: the faces of {count} images"
  else:
    written = write_vgaf_detections(manual_dir, detector, vgaf.FRAMES_PER_SECOND, out,
                                    progress=not args.quiet)
    done = (f"{os.path.join(out, 'detections')}: the faces of {written} videos "
            f"({count - written} of {count} had theirs already)")
  print(f"{done}, in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
  _parser = argparse.ArgumentParser(prog="python -m data_pipelines.detect_faces",
                                    description=__doc__.splitlines()[0])
  add_arguments(_parser)
  try:
    main(_parser.parse_args())
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
