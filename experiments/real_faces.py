"""A model directory on real faces: each real photo's faces and emotions, and detection by face
size on a clip composed of them.

  python -m experiments.real_faces [--model=starter] [--out=runs/real_faces]

1. Every photo of data_pipelines.real_photos, as a still image (a one-frame
   video), through `emoflow predict`: the faces it finds, their emotions and
   the three most likely with probabilities.
2. The composed clip (data_pipelines.real_photos.compose_clip: their faces at
   30-200 px tall on a panning texture, 1280x720, 3 s at 10 fps) through
   `emoflow predict --quiet` in its own process, timed from process start to
   files written: recall and precision at IoU >= 0.5 by face height (greedy
   by detection score, each true face matched once,
   emoflow.metrics.match_detections), over the analysed frames. A detection
   counts in the height bin of the face it matched, else in its own box's.
   Counts with 95% bootstrap intervals (emoflow.bootstrap), resampling the
   pasted faces for recall and the analysed frames for precision.
3. OUT/aligned_faces.png: a contact sheet of every face found in the photos
   and in the clip's first frame, as the face model sees it (the 112x112
   crop on the alignment template, emoflow.vision.align), captioned with
   the emotion given: the landmarks' check by eye.

Prints markdown tables; a user mistake ends with one line and exit code 2.
"""

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
from absl import flags

from data_pipelines import real_photos
from emoflow import bootstrap, metrics
from emoflow.fileio import temporary_path
from emoflow.vision import align
from emoflow.vision import video as video_io
from experiments import command

FLAGS = flags.FLAGS
HEIGHT_BINS = (30, 45, 70, 120, 201)  # face height bins, px: [30, 45), [45, 70), ...


def _define_flags() -> None:
  flags.DEFINE_string("model", "starter", "model directory for emoflow predict, or `starter`")
  flags.DEFINE_string("out", "runs/real_faces", "directory for the photos, clip and predictions")


def predict(video: str, out: str, model: str) -> float:
  """`emoflow predict` on `video` in a new process; its wall time in seconds."""
  start = time.perf_counter()
  result = subprocess.run([sys.executable, "-m", "emoflow.cli", "predict", video, "--model", model,
                           "--out", out, "--quiet"], capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if result.returncode:
    raise ValueError(f"emoflow predict {video} failed: {result.stderr.strip().splitlines()[-1]}")
  return seconds


def _faces(out: str, name: str) -> list[dict]:
  with open(os.path.join(out, name, "predictions.json")) as f:
    return json.load(f)["frames"][0]["faces"]


def photo_table(out: str, model: str) -> str:
  """Each photo's faces: box, emotion and the three most likely emotions."""
  rows = ["| photo | faces found | face box (x0 y0 x1 y1) | emotion | top three (probability) |",
          "|---|---|---|---|---|"]
  for name in real_photos.FACE_BOXES:
    path = os.path.join(out, f"{name}.png")
    cv2.imwrite(path, cv2.cvtColor(real_photos.load(name), cv2.COLOR_RGB2BGR))
    predict(path, os.path.join(out, name), model)
    faces = _faces(out, name)
    for face in faces or [{"box": [], "emotion": "-", "scores": {}}]:
      top = sorted(face["scores"].items(), key=lambda kv: -kv[1])[:3]
      rows.append(f"| {name} | {len(faces)} | {' '.join(f'{v:.0f}' for v in face['box'])} | "
                  f"{face['emotion']} | {', '.join(f'{k} {v:.2f}' for k, v in top)} |")
  return "\n".join(rows)


def _bin(height: float) -> int:
  return int(np.clip(np.searchsorted(HEIGHT_BINS, height, side="right") - 1, 0,
                     len(HEIGHT_BINS) - 2))


def detection_by_height(doc: dict, truth: list[list[dict]]) -> list[dict]:
  """Per height bin (HEIGHT_BINS): "by_face" {pasted face: [frames found, frames present]},
  "by_frame" {frame: [true detections, detections]}, and their totals: true faces, found,
  detections, true detections. A pasted face is its slot in the truth lists (the same in
  every frame); faces and frames are the clusters the intervals resample."""
  bins = [{"by_face": {}, "by_frame": {}} for _ in HEIGHT_BINS[:-1]]
  for frame in doc["frames"]:
    gt = truth[frame["index"]]
    boxes = np.asarray([face["box"] for face in frame["faces"]], np.float64).reshape(-1, 4)
    matched = metrics.match_detections(boxes, [face["detection_score"] for face in frame["faces"]],
                                       np.asarray([face["box"] for face in gt]).reshape(-1, 4))
    for i, face in enumerate(gt):
      bins[_bin(face["height"])]["by_face"].setdefault(i, [0, 0])[1] += 1
    for box, m in zip(boxes, matched):
      counts = bins[_bin(gt[m]["height"] if m >= 0 else box[3] - box[1])]["by_frame"].setdefault(
          frame["index"], [0, 0])
      counts[0] += int(m >= 0)
      counts[1] += 1
      if m >= 0:
        bins[_bin(gt[m]["height"])]["by_face"][m][0] += 1
  return [_with_totals(b) for b in bins]


def _with_totals(b: dict) -> dict:
  """A bin with its totals: found, faces (by_face), true, detections (by_frame)."""
  (b["found"], b["faces"]), (b["true"], b["detections"]) = (
      np.sum(list(b[key].values()) or [[0, 0]], axis=0).tolist() for key in ("by_face", "by_frame"))
  return b


def _ratio(counts: dict) -> str:
  """sum of hits / sum of totals over clusters {id: [hits, total]}, with its bootstrap interval."""
  if not counts:
    return "-"
  hits, totals = np.asarray(list(counts.values()), np.float64).T
  r = bootstrap.accuracy(hits, totals)
  return f"{r.estimate:.3f} ({r.low:.3f}-{r.high:.3f})"


def clip_table(out: str, model: str) -> str:
  """Detection by face height on the composed clip, and the run's wall time."""
  video = os.path.join(out, "composed.mp4")
  truth = real_photos.compose_clip(video)
  seconds = predict(video, os.path.join(out, "composed"), model)
  with open(os.path.join(out, "composed", "predictions.json")) as f:
    doc = json.load(f)
  rows = [f"composed clip: {doc['width']}x{doc['height']}, {doc['num_frames']} frames, "
          f"{len(doc['frames'])} analysed at {doc['sampled_fps']} fps, "
          f"{len(truth[0])} faces a frame; video label {doc['label']}; emoflow predict "
          f"{seconds:.1f} s wall (process start to files written). Intervals: 95% bootstrap "
          "over the pasted faces (recall) and over the analysed frames (precision)", "",
          "| face height (px) | pasted faces | true faces | found | recall @IoU 0.5 (95% CI) | "
          "detections | precision (95% CI) |", "|---|---|---|---|---|---|---|"]
  bins = detection_by_height(doc, truth)
  every = {"by_face": {}, "by_frame": {}}
  for b in bins:
    every["by_face"].update(b["by_face"])  # each pasted face is in one bin
    for t, (hits, total) in b["by_frame"].items():
      counts = every["by_frame"].setdefault(t, [0, 0])
      counts[0], counts[1] = counts[0] + hits, counts[1] + total
  labels = [f"{lo}-{hi - 1}" for lo, hi in zip(HEIGHT_BINS, HEIGHT_BINS[1:])]
  for label, b in [*zip(labels, bins), ("all", _with_totals(every))]:
    rows.append(f"| {label} | {len(b['by_face'])} | {b['faces']} | {b['found']} | "
                f"{_ratio(b['by_face'])} | {b['detections']} | {_ratio(b['by_frame'])} |")
  return "\n".join(rows)


def contact_sheet(out: str, columns: int = 8) -> str:
  """OUT/aligned_faces.png (module docstring); returns its path."""
  images = {name: real_photos.load(name) for name in real_photos.FACE_BOXES}
  _, images["composed"] = next(video_io.read_batches(os.path.join(out, "composed.mp4"), [0], 1))
  images["composed"] = images["composed"][0]
  tiles = []
  for name, image in images.items():
    for face in _faces(out, name):
      tile = align.align_face(image, np.asarray(face["landmarks"], np.float32))
      tile = cv2.cvtColor(tile, cv2.COLOR_RGB2BGR)
      cv2.putText(tile, face["emotion"], (3, 108), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255))
      tiles.append(tile)
  tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
  rows = [np.concatenate(tiles[i:i + columns], 1) for i in range(0, len(tiles), columns)]
  path = os.path.join(out, "aligned_faces.png")
  tmp = temporary_path(path, suffix=".png")
  cv2.imwrite(tmp, np.concatenate(rows, 0))
  os.replace(tmp, path)
  return path


def main() -> None:
  os.makedirs(FLAGS.out, exist_ok=True)
  print(photo_table(FLAGS.out, FLAGS.model), "", clip_table(FLAGS.out, FLAGS.model), "",
        f"aligned faces: {contact_sheet(FLAGS.out)}", sep="\n")


if __name__ == "__main__":
  _define_flags()
  command.run(main)
