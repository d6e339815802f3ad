"""TFDS builder `vgaf`: EmotiW 2020 Video-level Group AFfect (VGAF) clips as clips records.

VGAF labels whole videos (positive, neutral, negative), not groups or frames.
Each sampled frame gets one group, all faces detected in it (group box: the
faces' enclosing box), labelled with the video label, and the frame label is
the video label too: a weak label, since the mood of a single frame may
differ. Frames are sampled as in data_pipelines.builders.gecv (nearest
detected frame to each of `frames_per_second` times per second); videos with
no face in any sampled frame are skipped, with a log line per split.

Labels files (`Train_labels.txt`, `Val_labels.txt`): a `Vid_name Label`
header, then one `NAME LABEL` line per video `NAME.mp4`, where 1 = positive,
2 = neutral, 3 = negative.

Faces come from one detections file per video,
`MANUAL_DIR/detections/{Train,Val}/NAME.json`, in the annotation format of
data_pipelines/annotations.py: the detected (or sampled) frames with their
faces (box + 5 landmarks; emotion and track null), and no groups. The
builder ignores its `video`, `label` and frame labels (the labels file is
authoritative; write "neutral" there, as the format requires a valid label)
and reads the frames from `Train/NAME.mp4`. emoflow's on-device face
detector, which writes these files, arrives with a later issue.
"""

import dataclasses
import os

import tensorflow_datasets as tfds
from absl import logging

from data_pipelines import annotations
from data_pipelines.builders import gecv, manual, records

LAYOUT = ("Train/ and Val/ folders of NAME.mp4 clips, Train_labels.txt and Val_labels.txt, "
          "and detections/Train/ and detections/Val/ holding NAME.json face detections")

# The labels files' numbers (checked against public VGAF loaders: 1 positive, 2 neutral, 3 negative).
LABELS = {"1": "positive", "2": "neutral", "3": "negative"}

# Split -> (video folder, labels file) as the distribution names them.
_SPLITS = {"train": ("Train", "Train_labels.txt"), "validation": ("Val", "Val_labels.txt")}


def read_labels(path: str) -> dict[str, str]:
  """A labels file as video name -> group label; one-line error naming a bad line."""
  labels = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      fields = line.split()
      if not fields or (number == 1 and fields[0].lower() == "vid_name"):
        continue
      if len(fields) != 2 or fields[1] not in LABELS:
        raise ValueError(f"{path}:{number}: expected 'NAME LABEL' with LABEL 1 (positive), "
                         f"2 (neutral) or 3 (negative), got {line.strip()!r}")
      labels[fields[0]] = LABELS[fields[1]]
  return labels


def labelled_video(detections_path: str, label: str) -> annotations.Video:
  """A detections file made into an annotated video: every frame one group of all faces, all `label`."""
  detected = annotations.load(detections_path)
  return dataclasses.replace(detected, label=label,
                             frames=[gecv.whole_frame_group(f, label) for f in detected.frames])


def _split_videos(root: str, folder: str, labels_file: str) -> list[tuple]:
  """(name, label, video path, detections path) of every video of a split; one-line errors."""
  detections_dir = manual.resolve(root, f"detections/{folder}")
  if detections_dir is None:
    raise ValueError(f"vgaf: {root}/detections/{folder}/ is missing: one NAME.json of detected "
                     f"faces per video of {folder}/, made by a face detector in the format "
                     "documented in data_pipelines/builders/vgaf.py")
  videos_dir = manual.find(root, folder)
  labels = read_labels(manual.find(root, labels_file))
  videos = [(name, label, os.path.join(videos_dir, f"{name}.mp4"),
             os.path.join(detections_dir, f"{name}.json")) for name, label in sorted(labels.items())]
  for column, where in ((2, f"{folder}/NAME.mp4"), (3, f"detections/{folder}/NAME.json")):
    absent = [v[0] for v in videos if not os.path.isfile(v[column])]
    if absent:
      raise ValueError(f"vgaf: {len(absent)} of the {len(videos)} videos in {labels_file} have "
                       f"no {where} under {root} (first: {absent[0]})")
  return videos


def _videos(root: str) -> dict[str, list[tuple]]:
  """Split -> _split_videos of it, once the folders and labels files are there; one-line errors."""
  manual.require(root, "vgaf", LAYOUT, [name for pair in _SPLITS.values() for name in pair])
  return {split: _split_videos(root, folder, labels_file)
          for split, (folder, labels_file) in _SPLITS.items()}


@dataclasses.dataclass
class VgafConfig(tfds.core.BuilderConfig):
  """How many frames per second of each clip the records keep."""
  frames_per_second: float | None = 2.0


class Vgaf(tfds.core.GeneratorBasedBuilder):
  """VGAF: web videos of groups labelled positive, neutral or negative."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "clips records from VGAF videos and per-video detections"}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  VGAF (EmotiW 2020) is licence-gated: request it from the EmotiW organisers
  and extract it into the manual directory so that it holds {LAYOUT}. Write
  the detections files in the format of this module's docstring
  (data_pipelines/builders/vgaf.py).
  """
  BUILDER_CONFIGS = [VgafConfig(name="clips", description="clips sampled at 2 frames/s")]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=records.clips_features(), description=__doc__)

  def check_manual_dir(self, manual_dir: str) -> None:
    """A one-line ValueError unless `manual_dir` holds every labelled video and its detections.

    data_pipelines.loaders.prepare runs it before TFDS starts building;
    _split_generators runs the same check (through _videos).
    """
    _videos(manual_dir)

  def _split_generators(self, dl_manager):
    videos = _videos(manual.directory(dl_manager))
    return {split: self._generate_examples(split_videos, split)
            for split, split_videos in videos.items()}

  def _generate_examples(self, videos: list[tuple], split: str):
    rate = self.builder_config.frames_per_second
    skipped = 0
    for name, label, video_path, detections_path in videos:
      video = labelled_video(detections_path, label)
      if not any(frame.faces for frame in gecv.sample_frames(video, rate)):
        skipped += 1
        continue
      yield from gecv.examples(video, video_path, "clips", f"vgaf/{split}/{name}", rate)
    if skipped:
      logging.warning("vgaf %s: skipped %d of %d videos with no detected face in a sampled frame",
                      split, skipped, len(videos))
