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
and reads the frames from `Train/NAME.mp4`. VGAF ships without these files:
for the videos that have none the builder writes them with MTCNN
(data_pipelines.detect_faces, at the frames it samples; it logs how long
that may take, once, and an interrupted run continues where it stopped),
into the manual directory, or with a one-line error naming the command that
writes them elsewhere when the manual directory cannot be written to.
"""

import dataclasses
import os

import tensorflow_datasets as tfds
from absl import logging

from data_pipelines import annotations
from data_pipelines.builders import gecv, manual, records

LAYOUT = ("Train/ and Val/ folders of NAME.mp4 clips, Train_labels.txt and Val_labels.txt "
          "(detections/Train/ and detections/Val/ of NAME.json face detections are written if "
          "absent)")

FRAMES_PER_SECOND = 2.0  # the clips config's frame sampling rate

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


def split_videos(root: str) -> dict[str, list[tuple]]:
  """Split -> (name, label, video path, detections path) of every labelled video, sorted by name;
  one-line errors off the layout or for a missing video (its detections may not exist yet)."""
  manual.require(root, "vgaf", LAYOUT, [name for pair in _SPLITS.values() for name in pair])
  splits = {}
  for split, (folder, labels_file) in _SPLITS.items():
    detections_dir = (manual.resolve(root, f"detections/{folder}")
                      or os.path.join(root, "detections", folder))
    videos_dir = manual.find(root, folder)
    videos = [(name, label, os.path.join(videos_dir, f"{name}.mp4"),
               os.path.join(detections_dir, f"{name}.json"))
              for name, label in sorted(read_labels(manual.find(root, labels_file)).items())]
    absent = [name for name, _, video_path, _ in videos if not os.path.isfile(video_path)]
    if absent:
      raise ValueError(f"vgaf: {len(absent)} of the {len(videos)} videos in {labels_file} have "
                       f"no {folder}/NAME.mp4 under {root} (first: {absent[0]})")
    splits[split] = videos
  return splits


def _videos(root: str, frames_per_second: float | None) -> dict[str, list[tuple]]:
  """split_videos, with the missing detections written first (sampling `frames_per_second`)."""
  splits = split_videos(root)
  if not all(os.path.isfile(v[3]) for videos in splits.values() for v in videos):
    from data_pipelines import detect_faces  # noqa: PLC0415 - it imports this module
    detect_faces.write_missing("vgaf", root, frames_per_second)
  return splits


@dataclasses.dataclass
class VgafConfig(tfds.core.BuilderConfig):
  """How many frames per second of each clip the records keep."""
  frames_per_second: float | None = FRAMES_PER_SECOND


class Vgaf(tfds.core.GeneratorBasedBuilder):
  """VGAF: web videos of groups labelled positive, neutral or negative."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "clips records from VGAF videos and per-video detections"}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  VGAF (EmotiW 2020) is licence-gated: request it from the EmotiW organisers
  and extract it into the manual directory so that it holds {LAYOUT}. The
  first build writes the detections files with MTCNN, or run
  `python -m data_pipelines.detect_faces MANUAL_DIR --dataset vgaf`
  (format: this module's docstring, data_pipelines/builders/vgaf.py).
  """
  BUILDER_CONFIGS = [VgafConfig(name="clips", description="clips sampled at 2 frames/s")]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=records.clips_features(), description=__doc__)

  def check_manual_dir(self, manual_dir: str) -> None:
    """A one-line ValueError unless `manual_dir` holds every labelled video and its detections.

    Writes the missing detections first (module docstring).
    data_pipelines.loaders.prepare runs it before TFDS starts building;
    _split_generators runs the same check (through _videos).
    """
    _videos(manual_dir, self.builder_config.frames_per_second)

  def _split_generators(self, dl_manager):
    videos = _videos(manual.directory(dl_manager), self.builder_config.frames_per_second)
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
