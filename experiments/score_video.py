"""Score `emoflow predict`'s predictions.json against the video's annotation file.

  python -m experiments.score_video --predictions=OUT/predictions.json --annotations=VIDEO.json

What an analyst with ground truth (a SynthCrowd video, a GECV clip) asks of
a run, over the analysed frames (each is compared with the annotated frame
of the same index; frames without annotation are skipped and counted):
- detection: recall / precision at IoU >= 0.5, greedy by detection score
  with each face matched once (experiments.detection.score, the detector
  benchmark's rule), and AP; boxes are clipped to the frame on both sides and
  a box with less than 1 px inside it counts on neither (the detector
  training's rule: a face that has left the frame is no face);
- faces: emotion accuracy over the matched faces that carry an emotion;
- frames: accuracy of the frame labels (frames predicted "unknown" count as
  wrong); video: the label by the last frame and by the mean of the frames;
- tracks: per annotated track, the number of predicted track ids among its
  matched faces (1 = followed without a break), and the share of consecutive
  matched sightings of an annotated track that keep the same predicted id.

Prints one markdown table per part; a user mistake ends with one line on
stderr and exit code 2.
"""

import json

import numpy as np
from absl import flags

from data_pipelines import annotations
from emoflow import metrics
from emoflow.labels import GROUP_EMOTIONS
from experiments import command, detection

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("predictions", None, "predictions.json written by emoflow predict")
  flags.DEFINE_string("annotations", None, "the video's annotation JSON (data_pipelines.annotations)")


def _inside(boxes: np.ndarray, truth: annotations.Video) -> tuple[np.ndarray, np.ndarray]:
  """(boxes clipped to the frame, the indices of those keeping at least 1 x 1 px)."""
  clipped = np.clip(boxes, 0, [truth.width, truth.height, truth.width, truth.height])
  keep = np.flatnonzero(np.all(clipped[:, 2:] - clipped[:, :2] >= 1, axis=1))
  return clipped[keep], keep


def _boxes(boxes: list) -> np.ndarray:
  return np.asarray(boxes, np.float64).reshape(-1, 4)


def score(predicted: dict, truth: annotations.Video) -> dict:
  """Every number of the module docstring, from a predictions dict and an annotation."""
  annotated = {frame.index: frame for frame in truth.frames}
  det_frames, emotion_hits, frame_hits = [], [], []
  sightings: dict[int, list[int]] = {}  # annotated track -> predicted ids, in frame order
  skipped = 0
  for frame in predicted["frames"]:
    gt = annotated.get(frame["index"])
    if gt is None:
      skipped += 1
      continue
    boxes, shown = _inside(_boxes([f["box"] for f in frame["faces"]]), truth)
    scores = np.asarray([f["detection_score"] for f in frame["faces"]], np.float64)[shown]
    gt_boxes, seen = _inside(_boxes([f.box for f in gt.faces]), truth)
    det_frames.append((boxes, scores, gt_boxes))
    for d, g in enumerate(metrics.match_detections(boxes, scores, gt_boxes)):
      if g < 0:
        continue
      face, gt_face = frame["faces"][shown[d]], gt.faces[seen[g]]
      if gt_face.emotion is not None:
        emotion_hits.append(face["emotion"] == gt_face.emotion)
      if gt_face.track is not None and face.get("track") is not None:
        sightings.setdefault(gt_face.track, []).append(face["track"])
    if gt.label is not None:
      frame_hits.append(frame["label"] == gt.label)
  detected = detection.score(det_frames, score_threshold=0.0, size_buckets=())
  mean = lambda x: float(np.mean(x)) if len(x) else float("nan")
  ids_per_track = [len(set(ids)) for ids in sightings.values()]
  kept = [a == b for ids in sightings.values() for a, b in zip(ids, ids[1:])]
  mean_scores = predicted.get("scores_mean_of_frames")
  mean_label = (max(mean_scores, key=mean_scores.get) if mean_scores else "unknown")
  return {
      "frames": len(det_frames), "frames_skipped": skipped,
      "faces": detected["faces"], "detections": detected["detections"],
      "recall": detected["recall"], "precision": detected["precision"], "AP": detected["AP"],
      "emotion_faces": len(emotion_hits), "emotion_accuracy": mean(emotion_hits),
      "labelled_frames": len(frame_hits), "frame_accuracy": mean(frame_hits),
      "video_label": truth.label, "video_last": predicted["label"], "video_mean": mean_label,
      "annotated_tracks": len(sightings), "predicted_tracks": len(predicted.get("tracks", [])),
      "ids_per_track": mean(ids_per_track), "id_kept": mean(kept),
  }


def markdown(s: dict) -> str:
  """The score as markdown tables."""
  return "\n".join([
      f"{s['frames']} analysed frames scored ({s['frames_skipped']} without annotation)", "",
      "| faces | detections | recall @IoU 0.5 | precision | AP | emotion accuracy (matched) |",
      "|---|---|---|---|---|---|",
      f"| {s['faces']} | {s['detections']} | {s['recall']:.4f} | {s['precision']:.4f} | "
      f"{s['AP']:.4f} | {s['emotion_accuracy']:.4f} ({s['emotion_faces']} faces) |", "",
      "| frame accuracy | video label | predicted (last frame) | predicted (mean of frames) |",
      "|---|---|---|---|",
      f"| {s['frame_accuracy']:.4f} ({s['labelled_frames']} frames) | {s['video_label']} | "
      f"{s['video_last']} | {s['video_mean']} |", "",
      "| annotated tracks seen | predicted tracks | predicted ids per annotated track | "
      "id kept between sightings |", "|---|---|---|---|",
      f"| {s['annotated_tracks']} | {s['predicted_tracks']} | {s['ids_per_track']:.2f} | "
      f"{s['id_kept']:.4f} |", ""])


def load_predictions(path: str) -> dict:
  """predictions.json as a dict; a one-line ValueError if it is not one."""
  try:
    with open(path) as f:
      doc = json.load(f)
    missing = {key for frame in doc["frames"] for face in frame["faces"]
               for key in ("box", "detection_score", "emotion") if key not in face}
    if missing:
      raise KeyError(", ".join(sorted(missing)))
  except FileNotFoundError:
    raise FileNotFoundError(f"{path} does not exist") from None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: not an emoflow predictions file ({e})") from None
  if doc.get("label") not in (*GROUP_EMOTIONS, "unknown"):
    raise ValueError(f"{path}: not an emoflow predictions file (video label {doc.get('label')!r})")
  return doc


def main() -> None:
  for name in ("predictions", "annotations"):
    if not FLAGS[name].value:
      raise ValueError(f"--{name} is required")
  print(markdown(score(load_predictions(FLAGS.predictions), annotations.load(FLAGS.annotations))))


if __name__ == "__main__":
  _define_flags()
  command.run(main)
