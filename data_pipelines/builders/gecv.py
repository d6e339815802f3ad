"""TFDS builder `gecv` and the ingestion of annotated crowd videos (ArrayRecord, no TensorFlow).

Reads videos in the layout of data_pipelines.annotations (`NAME.mp4` beside
`NAME.json`). The functions here are public because every source in that
layout (SynthCrowd videos too) and every source reduced to it (VGAF with its
detections) ingests through them:

- annotated_videos(directory): the annotation files of one split folder.
- sample_frames(video, frames_per_second): the annotated frames to use.
- examples(video, video_path, kind, source, ...): the records of one video.
- video_examples(json_path, kind, ...): the same, from an annotation file.
- whole_frame_group(frame, label): one group of all of a frame's faces.

Frame sampling: for each sampling time k / frames_per_second within the video,
the annotated frame nearest in time is taken (ties: the earlier one), each
frame at most once; frames_per_second=None takes every annotated frame.
Frames are decoded sequentially, only up to the last one needed.

Configs (the paper's three GECV datasets):
- single_img: faces records, one per face with a known emotion and a box at
  least `min_face_px` (100, as the paper) tall.
- group_img: groups records, one per annotated group of every sampled frame.
- group_vid: clips records, one per video, from its sampled frames.
- group_frames: frames records (whole frames with face and group boxes), one
  per sampled frame: the RPN's training data (the paper's GECV-GroupImg).
"""

import dataclasses
import math
import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import annotations
from data_pipelines.builders import manual, records
from emoflow.vision import video as vision_video

LAYOUT = "train/ and val/ (and optionally test/) folders of NAME.mp4 + NAME.json annotation files"

_SPLIT_FOLDERS = {"train": "train", "validation": "val", "test": "test"}


def annotated_videos(directory: str) -> list[str]:
  """The annotation files (`*.json`) directly in `directory`, sorted by name."""
  return [os.path.join(directory, name) for name in sorted(os.listdir(directory))
          if name.lower().endswith(".json")]


def sample_frames(video: annotations.Video, frames_per_second: float | None) -> list:
  """The annotated frames nearest to each sampling time, in order, each once (module docstring)."""
  if frames_per_second is None or not video.frames:
    return list(video.frames)
  annotated = np.array([frame.index for frame in video.frames], np.float64)
  # Sampling times in frame units; the epsilon keeps k / rate == duration out.
  count = math.ceil(video.num_frames * frames_per_second / video.fps - 1e-9)
  targets = np.arange(count) * video.fps / frames_per_second
  picked = []
  for target in targets:
    nearest = int(np.argmin(np.abs(annotated - target)))  # first minimum: the earlier frame
    if not picked or picked[-1] != nearest:  # targets ascend, so repeats are adjacent
      picked.append(nearest)
  return [video.frames[k] for k in picked]


def whole_frame_group(frame: annotations.Frame, label: str) -> annotations.Frame:
  """`frame` labelled `label` with one group of all its faces, boxed by their enclosing box.

  For sources that label a whole image or video rather than groups (GAF,
  VGAF); a frame without faces gets no group.
  """
  boxes = np.array([face.box for face in frame.faces], np.float32).reshape(-1, 4)
  groups = []
  if len(boxes):
    box = np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])
    groups = [annotations.Group(box=box.tolist(), label=label, faces=list(range(len(boxes))))]
  return dataclasses.replace(frame, label=label, groups=groups)


KINDS = ("faces", "groups", "clips", "frames")  # the records.FEATURES kinds made from annotated videos


def examples(video: annotations.Video, video_path: str, kind: str, source: str,
             frames_per_second: float | None = 2.0, min_face_px: int = 1):
  """Yields (key, record) of `kind` (faces | groups | clips | frames) for one video; keys start with `source`."""
  if kind not in KINDS:
    raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(KINDS)}")
  frames = {frame.index: frame for frame in sample_frames(video, frames_per_second)}
  if not frames:
    return
  decoded = ((image, frames[index])
             for index, image in vision_video.read_frames(video_path, frames))
  if kind == "clips":
    yield source, records.clip_example(list(decoded), video, source)
    return
  for image, frame in decoded:
    frame_source = f"{source}/{frame.index:06d}"
    if kind == "faces":
      yield from records.face_examples(image, frame, frame_source, min_face_px)
    elif kind == "frames":
      yield frame_source, records.frame_example(image, frame, frame_source)
    else:
      yield from records.group_examples(image, frame, frame_source)


def video_examples(json_path: str, kind: str, frames_per_second: float | None = 2.0,
                   min_face_px: int = 1, source_prefix: str = "gecv"):
  """examples() of the video an annotation file describes; source = source_prefix/NAME."""
  video = annotations.load(json_path)
  name = os.path.splitext(os.path.basename(json_path))[0]
  video_path = os.path.join(os.path.dirname(json_path), video.video)
  yield from examples(video, video_path, kind, f"{source_prefix}/{name}", frames_per_second,
                      min_face_px)


@dataclasses.dataclass
class GecvConfig(tfds.core.BuilderConfig):
  """The record kind, the frame sampling rate and (faces) the smallest face kept."""
  kind: str = "faces"
  frames_per_second: float | None = 2.0
  min_face_px: int = 1


class Gecv(tfds.core.GeneratorBasedBuilder):
  """GECV: crowd videos annotated with faces, individual emotions and emotion groups."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "single_img, group_img and group_vid from annotated videos",
                   "1.1.0": "group_frames: whole frames with face and group boxes (RPN)"}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put the annotated videos in the manual directory as
  MANUAL_DIR/train/NAME.mp4 + NAME.json, MANUAL_DIR/val/..., and optionally
  MANUAL_DIR/test/... ({LAYOUT}). Each NAME.json is an annotation file in the
  format documented in data_pipelines/annotations.py (faces with boxes and 5
  landmarks, individual emotions, groups with labels, per annotated frame).
  """
  BUILDER_CONFIGS = [
      GecvConfig(name="single_img", kind="faces", min_face_px=100,
                 description="faces with a known emotion, >= 100 px, from frames sampled at 2/s"),
      GecvConfig(name="group_img", kind="groups",
                 description="every annotated group of frames sampled at 2/s"),
      GecvConfig(name="group_vid", kind="clips",
                 description="one clip per video from frames sampled at 2/s"),
      GecvConfig(name="group_frames", kind="frames",
                 description="whole frames sampled at 2/s with face and group boxes (RPN)"),
  ]
  DEFAULT_CONFIG_NAME = "group_img"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=records.FEATURES[self.builder_config.kind](),
                                          description=__doc__)

  def check_manual_dir(self, manual_dir: str) -> None:
    """A one-line ValueError unless `manual_dir` holds train/ and val/, each split with videos.

    data_pipelines.loaders.prepare runs it before TFDS starts building, and
    _split_generators before reading anything.
    """
    manual.require(manual_dir, "gecv", LAYOUT, ["train", "val"])
    for folder in _SPLIT_FOLDERS.values():
      directory = manual.find(manual_dir, folder)
      if directory is not None and not annotated_videos(directory):
        raise manual.missing_error(manual_dir, "gecv", [f"{folder}/*.json"], LAYOUT)

  def _split_generators(self, dl_manager):
    root = manual.directory(dl_manager)
    self.check_manual_dir(root)
    splits = {}
    for split, folder in _SPLIT_FOLDERS.items():
      directory = manual.find(root, folder)
      if directory is not None:  # only test may be absent: check_manual_dir checked the others
        splits[split] = self._generate_examples(annotated_videos(directory), split)
    return splits

  def _generate_examples(self, paths: list[str], split: str):
    config = self.builder_config
    for path in paths:
      yield from video_examples(path, config.kind, config.frames_per_second, config.min_face_px,
                                f"gecv/{split}")
