"""The annotation file of one crowd video: faces, groups and labels per frame.

One JSON file beside each video (`NAME.mp4` + `NAME.json`) is the on-disk
layout the `gecv` builder reads; SynthCrowd videos are written in the same
layout, so one ingestion path serves both. Schema (coordinates in video
pixels, x0 y0 x1 y1 boxes, landmarks in emoflow.vision.align order: left eye,
right eye, nose tip, left and right mouth corner):

    {"video": "NAME.mp4", "fps": 10.0, "num_frames": 150,
     "width": 640, "height": 360, "label": "positive",
     "frames": [{"index": 0, "label": "positive",
                 "faces": [{"box": [x0, y0, x1, y1],
                            "landmarks": [[x, y], ... 5 points],
                            "emotion": "happy" | null, "track": 3 | null}],
                 "groups": [{"box": [x0, y0, x1, y1], "label": "negative",
                             "faces": [0, 2, 5]}]}]}

`frames` lists the annotated frames in ascending `index` (not necessarily
every frame); `groups[].faces` index that frame's `faces`; `track` names the
same person across frames. Labels are emoflow.labels names.
"""

import dataclasses
import json

from emoflow.fileio import atomic_open
from emoflow.labels import EMOTIONS, GROUP_EMOTIONS


@dataclasses.dataclass
class Face:
  box: list  # [x0, y0, x1, y1]
  landmarks: list  # [[x, y]] * 5
  emotion: str | None = None
  track: int | None = None


@dataclasses.dataclass
class Group:
  box: list  # [x0, y0, x1, y1]
  label: str
  faces: list  # indices into the frame's faces


@dataclasses.dataclass
class Frame:
  index: int
  label: str | None = None
  faces: list = dataclasses.field(default_factory=list)  # [Face]
  groups: list = dataclasses.field(default_factory=list)  # [Group]


@dataclasses.dataclass
class Video:
  video: str  # file name, relative to the annotation file
  fps: float
  num_frames: int
  width: int
  height: int
  label: str
  frames: list = dataclasses.field(default_factory=list)  # [Frame]


def to_json(video: Video) -> str:
  return json.dumps(dataclasses.asdict(video), separators=(",", ":"))


def save(video: Video, path: str) -> None:
  """Writes the annotation file atomically (no half-written JSON after a kill)."""
  validate(video, path)
  with atomic_open(path) as f:
    f.write(to_json(video))


def load(path: str) -> Video:
  """Reads and validates one annotation file; a one-line ValueError names the file and the problem."""
  try:
    with open(path) as f:
      raw = json.load(f)
    frames = [Frame(index=fr["index"], label=fr.get("label"),
                    faces=[Face(**face) for face in fr.get("faces", [])],
                    groups=[Group(**group) for group in fr.get("groups", [])])
              for fr in raw.pop("frames", [])]
    video = Video(**raw, frames=frames)
  except (OSError, json.JSONDecodeError, TypeError, KeyError) as e:
    raise ValueError(f"{path}: not a readable video annotation file ({e})") from None
  validate(video, path)
  return video


def _check(condition: bool, path: str, message: str) -> None:
  if not condition:
    raise ValueError(f"{path}: {message}")


def validate(video: Video, path: str = "<annotation>") -> None:
  """Checks labels, box/landmark shapes, face indices and frame order."""
  _check(video.label in GROUP_EMOTIONS, path, f"video label {video.label!r} is not one of {GROUP_EMOTIONS}")
  _check(video.fps > 0 and video.num_frames > 0, path, "fps and num_frames must be positive")
  last = -1
  for frame in video.frames:
    where = f"frame {frame.index}"
    _check(last < frame.index < video.num_frames, path,
           f"{where}: frames must be in ascending order within [0, {video.num_frames})")
    last = frame.index
    _check(frame.label is None or frame.label in GROUP_EMOTIONS, path,
           f"{where}: label {frame.label!r} is not one of {GROUP_EMOTIONS}")
    for face in frame.faces:
      _check(len(face.box) == 4, path, f"{where}: a face box needs 4 numbers")
      _check(len(face.landmarks) == 5 and all(len(p) == 2 for p in face.landmarks), path,
             f"{where}: face landmarks must be 5 (x, y) points")
      _check(face.emotion is None or face.emotion in EMOTIONS, path,
             f"{where}: emotion {face.emotion!r} is not one of {EMOTIONS}")
    for group in frame.groups:
      _check(group.label in GROUP_EMOTIONS, path,
             f"{where}: group label {group.label!r} is not one of {GROUP_EMOTIONS}")
      _check(len(group.box) == 4, path, f"{where}: a group box needs 4 numbers")
      _check(all(0 <= i < len(frame.faces) for i in group.faces), path,
             f"{where}: a group names a face index outside the frame's {len(frame.faces)} faces")
