"""A tiny TFDS dataset of real groups and clips records, for the loader and feature-cache tests.

Rendered SynthCrowd faces are pasted side by side on a grey frame, annotated,
and turned into records by data_pipelines.builders.records — the path every
real builder takes. Sizes are chosen so loaders meet groups larger than a
small N_max, frames with more groups than a small G, frames without groups,
unknown labels, and clips shorter than T * stride.
"""

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import annotations
from data_pipelines.builders import records
from data_pipelines.synthcrowd.faces import render_face
from emoflow.labels import EMOTIONS, GROUP_EMOTIONS

NUM_RECORDS = {"groups": {"train": 18, "validation": 6}, "clips": {"train": 7, "validation": 3}}
_SPLIT_IDS = {"train": 0, "validation": 1}


def _frame(rng: np.random.Generator, index: int, group_sizes: list[int]):
  """(RGB image, annotations.Frame) with groups of the given sizes, faces side by side."""
  rendered = [render_face(rng, int(rng.integers(len(EMOTIONS))), int(rng.integers(14, 40)))
              for _ in range(sum(group_sizes))]
  height = max([f.image.shape[0] for f in rendered], default=16)
  image = np.full((height, sum(f.image.shape[1] for f in rendered) + 1, 3), 128, np.uint8)
  faces, x = [], 0
  for face in rendered:
    h, w = face.image.shape[:2]
    image[:h, x:x + w] = face.image
    offset = np.array([x, 0], np.float32)
    emotion = None if rng.random() < 0.2 else EMOTIONS[face.emotion]
    faces.append(annotations.Face(box=(face.box + np.tile(offset, 2)).tolist(),
                                  landmarks=(face.landmarks + offset).tolist(), emotion=emotion))
    x += w
  groups, start = [], 0
  for size in group_sizes:
    members = list(range(start, start + size))
    boxes = np.array([faces[i].box for i in members])
    groups.append(annotations.Group(box=[*boxes[:, :2].min(0), *boxes[:, 2:].max(0)],
                                    label=GROUP_EMOTIONS[int(rng.integers(3))], faces=members))
    start += size
  label = None if rng.random() < 0.25 else GROUP_EMOTIONS[int(rng.integers(3))]
  return image, annotations.Frame(index=index, label=label, faces=faces, groups=groups)


def group_records(split: str, frame: int) -> list[tuple[str, dict]]:
  """The two groups records (1 to 7 faces each) of frame `frame` of `split`."""
  rng = np.random.default_rng([_SPLIT_IDS[split], frame])
  image, annotated = _frame(rng, frame, [int(n) for n in rng.integers(1, 8, size=2)])
  return records.group_examples(image, annotated, f"tiny/{split}/{frame}")


def clip_record(split: str, index: int) -> dict:
  """One clip: 1 to 7 annotated frames, each with 0 to 3 groups of 1 to 4 faces."""
  rng = np.random.default_rng([10 + _SPLIT_IDS[split], index])
  num_frames = 1 + index % 7
  frame_numbers = np.sort(rng.choice(50, size=num_frames, replace=False))
  frames = [_frame(rng, int(t), [int(n) for n in rng.integers(1, 5, size=rng.integers(0, 4))])
            for t in frame_numbers]
  video = annotations.Video(video=f"{index}.mp4", fps=10.0, num_frames=50, width=64, height=64,
                            label=GROUP_EMOTIONS[index % 3])
  return records.clip_example(frames, video, f"tiny/{split}/{index}")


class TinyRecords(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Configs `groups` and `clips`: a few records of the canonical schemas."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="groups"), tfds.core.BuilderConfig(name="clips")]

  def _info(self) -> tfds.core.DatasetInfo:
    features = (records.groups_features() if self.builder_config.name == "groups"
                else records.clips_features())
    return self.dataset_info_from_configs(features=features)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, n)
            for split, n in NUM_RECORDS[self.builder_config.name].items()}

  def _generate_examples(self, split: str, count: int):
    if self.builder_config.name == "groups":
      for frame in range(count // 2):
        yield from group_records(split, frame)
    else:
      for index in range(count):
        yield index, clip_record(split, index)


def prepare(config: str, data_dir: str):
  """Builds config `groups` or `clips` under `data_dir` and returns its builder."""
  builder = TinyRecords(config=config, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return builder
