"""TFDS builder `synthcrowd`: procedural SynthCrowd records, ArrayRecord, no TensorFlow.

Four kinds of config, each in sizes tiny (tests), small (the CPU
demonstration) and full, and groups/clips also in `quick` (the quickstart's,
rendered in under a minute each on 2 cores):
- `faces*`: aligned 112x112 faces with one of the 8 emotions, rendered by
  data_pipelines.synthcrowd.faces and aligned by emoflow.vision.align — the
  same 5-point path real data takes. num_examples counts faces.
- `groups*`: crowd frames from data_pipelines.synthcrowd.crowds, cut into
  group records (records.groups_features). num_examples counts frames; each
  frame gives one record per group.
- `clips*`: crowd videos from data_pipelines.synthcrowd.videos, written as
  mp4 + annotation JSON under DATA_DIR/downloads/synthcrowd/CONFIG/SPLIT/
  (the GECV layout) and ingested by the gecv builder's own code into clips
  records (records.clips_features). num_examples counts videos.
- `frames*`: whole crowd frames (JPEG, quality 95) with every face's box and
  5 landmarks and every group's box and label (records.frames_features), to
  train and score the face detector (RetinaFace) and the group proposal
  network (RPN). num_examples counts frames.
Every example is a pure function of (config seed, split, index), so a
dataset is reproducible from its name.
"""

import dataclasses
import multiprocessing
import os
from concurrent import futures

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders import gecv, records
from data_pipelines.synthcrowd import crowds, videos
from data_pipelines.synthcrowd import faces as synth_faces
from emoflow.labels import EMOTIONS
from emoflow.vision import align

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass
class SynthcrowdConfig(tfds.core.BuilderConfig):
  """What is rendered (kind), how many per split, and how: seed, face sizes, crowd, video."""
  kind: str = "faces"
  num_examples: dict = dataclasses.field(default_factory=dict)
  face_px_range: tuple = (8, 120)
  seed: int = 0
  crowd: crowds.CrowdDifficulty = crowds.CrowdDifficulty()
  video: videos.VideoSpec = videos.VideoSpec()
  frames_per_second: float = 2.0  # clips: frames kept per second of video


# Configs that moved on alone keep the other configs' rendered data valid: the frames configs
# (their records gained groups) and the small groups and clips configs (larger evaluation
# splits, sized for the paired intervals of the results tables).
FRAMES_VERSION = tfds.core.Version("1.3.0")
EVAL_SIZED_VERSION = tfds.core.Version("1.4.0")
_EVAL_SIZED = ("groups_small", "clips_small")


def _config(kind: str, size: str, counts: tuple, **kwargs) -> SynthcrowdConfig:
  name = kind if size == "full" else f"{kind}_{size}"
  if kind == "frames":
    kwargs["version"] = FRAMES_VERSION
  if name in _EVAL_SIZED:
    kwargs["version"] = EVAL_SIZED_VERSION
  unit = {"faces": "aligned faces", "groups": "crowd frames cut into groups",
          "clips": "crowd videos", "frames": "crowd frames with face boxes"}[kind]
  return SynthcrowdConfig(
      name=name, kind=kind,
      description=f"{unit}: {counts[0]}/{counts[1]}/{counts[2]} train/validation/test",
      num_examples=dict(zip(("train", "validation", "test"), counts)), **kwargs)


_SMALL_CROWD = crowds.CrowdDifficulty(num_faces=(2, 40))
_TINY_CROWD = crowds.CrowdDifficulty(num_faces=(2, 16), num_groups=(1, 3))
_SMALL_VIDEO = videos.VideoSpec(duration_s=(10.0, 12.0), fps=(5, 6))
_TINY_VIDEO = videos.VideoSpec(duration_s=(2.0, 3.0), fps=(5, 6))
_QUICK_VIDEO = videos.VideoSpec(duration_s=(6.0, 8.0), fps=(5, 6))


def render_aligned_face(seed: int, split: str, index: int, face_px_range=(8, 120)) -> dict:
  """One faces example: render with its own RNG stream, align to the ArcFace template."""
  rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
  emotion = index % len(EMOTIONS)  # balanced classes; loaders shuffle
  face_px = synth_faces.sample_face_px(rng, *face_px_range)
  face = synth_faces.render_face(rng, emotion, face_px)
  key = f"synthcrowd/{split}/{index:07d}"
  return {
      "image": align.align_face(face.image, face.landmarks),
      "emotion": emotion,
      "face_px": np.int32(face.face_px),
      "source": key,
  }


def render_group_records(seed: int, split: str, index: int,
                         crowd: crowds.CrowdDifficulty) -> list[tuple[str, dict]]:
  """The groups examples of one rendered crowd frame, keyed synthcrowd/SPLIT/INDEX/gK."""
  image, frame = crowds.render_crowd(np.random.default_rng([seed, _SPLIT_IDS[split], index]), crowd)
  return records.group_examples(image, frame, f"synthcrowd/{split}/{index:07d}")


def render_frame_record(seed: int, split: str, index: int,
                        crowd: crowds.CrowdDifficulty) -> list[tuple[str, dict]]:
  """The frames example of crowd frame INDEX (the same frame the groups configs cut), keyed synthcrowd/SPLIT/INDEX."""
  image, frame = crowds.render_crowd(np.random.default_rng([seed, _SPLIT_IDS[split], index]), crowd)
  key = f"synthcrowd/{split}/{index:07d}"
  return [(key, records.frame_example(image, frame, key))]


def _clip_name(index: int) -> str:
  return f"clip_{index:07d}"


def rendered_video(data_dir: str, config_name: str, split: str, index: int) -> str:
  """Where a built clips config keeps video INDEX of SPLIT (the mp4; its annotation JSON beside
  it), under TFDS's default download directory DATA_DIR/downloads."""
  return os.path.join(os.path.expanduser(data_dir), "downloads", "synthcrowd", config_name, split,
                      _clip_name(index) + ".mp4")


def render_clip_record(seed: int, split: str, index: int, directory: str,
                       crowd: crowds.CrowdDifficulty, spec: videos.VideoSpec,
                       frames_per_second: float) -> list[tuple[str, dict]]:
  """Renders video INDEX into `directory` (mp4 + JSON), then ingests it as the gecv builder does."""
  name = _clip_name(index)
  videos.render_video(np.random.default_rng([seed, _SPLIT_IDS[split], index]), directory, name,
                      crowd, spec)
  return list(gecv.video_examples(os.path.join(directory, name + ".json"), "clips",
                                  frames_per_second, source_prefix=f"synthcrowd/{split}"))


def _render_chunk(job) -> list[tuple[str, dict]]:
  kind, seed, split, start, stop, args = job
  if kind == "faces":
    return [(i, render_aligned_face(seed, split, i, *args)) for i in range(start, stop)]
  render = {"groups": render_group_records, "frames": render_frame_record,
            "clips": render_clip_record}[kind]
  return [pair for i in range(start, stop) for pair in render(seed, split, i, *args)]


class Synthcrowd(tfds.core.GeneratorBasedBuilder):
  """SynthCrowd: procedural faces, crowd frames and crowd videos with GECV-shaped labels."""

  VERSION = tfds.core.Version("1.2.0")  # frames configs: FRAMES_VERSION
  RELEASE_NOTES = {"1.0.0": "faces configs", "1.1.0": "groups and clips configs",
                   "1.2.0": "frames configs", "1.3.0": "frames records carry their groups",
                   "1.4.0": "groups_small and clips_small: larger splits (paired intervals)"}
  BUILDER_CONFIGS = [
      _config("faces", "tiny", (512, 128, 128)),
      _config("faces", "small", (12000, 1600, 1600)),
      _config("faces", "full", (200000, 10000, 10000)),
      _config("groups", "tiny", (24, 8, 8), crowd=_TINY_CROWD),
      _config("groups", "quick", (600, 150, 50), crowd=_SMALL_CROWD),
      # ~6,000 validation and test groups: FeC - FeA known to about +-0.8 points (paired);
      # ~24,000 training groups: on 6,000, FeC overfits within 1,200 steps (the config's study).
      _config("groups", "small", (8000, 2000, 2000), crowd=_SMALL_CROWD),
      _config("groups", "full", (40000, 4000, 4000)),
      _config("clips", "tiny", (4, 2, 2), crowd=_TINY_CROWD, video=_TINY_VIDEO),
      _config("clips", "quick", (64, 32, 4), crowd=_SMALL_CROWD, video=_QUICK_VIDEO),
      # 800 validation videos: TNVPF - FeC + RNN known to about +-3-4 points (paired).
      _config("clips", "small", (256, 800, 800), crowd=_SMALL_CROWD, video=_SMALL_VIDEO),
      _config("clips", "full", (600, 100, 100)),
      _config("frames", "tiny", (64, 16, 16), crowd=_TINY_CROWD),
      _config("frames", "small", (1500, 300, 300), crowd=_SMALL_CROWD),
      _config("frames", "full", (20000, 2000, 2000)),
  ]
  DEFAULT_CONFIG_NAME = "faces_small"

  def _info(self) -> tfds.core.DatasetInfo:
    features = records.FEATURES[self.builder_config.kind]()
    return self.dataset_info_from_configs(
        features=features,
        supervised_keys=("image", "emotion") if self.builder_config.kind == "faces" else None,
        description=__doc__)

  def _split_generators(self, dl_manager):
    config = self.builder_config
    video_dir = os.path.join(dl_manager.download_dir, "synthcrowd", config.name)
    return {split: self._generate_examples(split, n, os.path.join(video_dir, split))
            for split, n in config.num_examples.items()}

  def _generate_examples(self, split: str, count: int, video_dir: str):
    config = self.builder_config
    args = {"faces": (tuple(config.face_px_range),), "groups": (config.crowd,),
            "frames": (config.crowd,),
            "clips": (video_dir, config.crowd, config.video, config.frames_per_second)}[config.kind]
    chunk = {"faces": 256, "groups": 16, "frames": 16, "clips": 1}[config.kind]
    jobs = [(config.kind, config.seed, split, start, min(start + chunk, count), args)
            for start in range(0, count, chunk)]
    # Spawned workers: forking a process that already runs JAX's threads is unsafe.
    workers = max(1, min(os.cpu_count() or 1, len(jobs)))
    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      for examples in pool.map(_render_chunk, jobs):
        yield from examples
