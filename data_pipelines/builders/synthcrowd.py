"""TFDS builder `synthcrowd`: procedural SynthCrowd records, ArrayRecord, no TensorFlow.

Config `faces*`: aligned 112x112 faces with one of the 8 emotions, rendered by
data_pipelines.synthcrowd.faces and aligned by emoflow.vision.align — the same
5-point path real data takes. Every example is a pure function of
(config seed, split, index), so a dataset is reproducible from its name.
Configs differ only in size: faces_tiny (tests), faces_small (the CPU
demonstration), faces (full).
"""

import dataclasses
import multiprocessing
import os
from concurrent import futures

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders import records
from data_pipelines.synthcrowd import faces as synth_faces
from emoflow.labels import EMOTIONS
from emoflow.vision import align

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass
class SynthcrowdConfig(tfds.core.BuilderConfig):
  """Split sizes, the face height range in pixels, and the generator seed."""
  num_examples: dict = dataclasses.field(default_factory=dict)
  face_px_range: tuple = (8, 120)
  seed: int = 0


def _faces_config(name: str, train: int, validation: int, test: int) -> SynthcrowdConfig:
  return SynthcrowdConfig(
      name=name,
      description=f"aligned faces, 8 emotions: {train}/{validation}/{test} train/validation/test",
      num_examples={"train": train, "validation": validation, "test": test})


def render_aligned_face(seed: int, split: str, index: int, face_px_range=(8, 120)) -> dict:
  """One faces example: render with its own RNG stream, align to the ArcFace template."""
  rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
  emotion = index % len(EMOTIONS)  # balanced classes; loaders shuffle
  face_px = synth_faces.sample_face_px(rng, *face_px_range)
  face = synth_faces.render_face(rng, emotion, face_px)
  return {
      "image": align.align_face(face.image, face.landmarks),
      "emotion": emotion,
      "face_px": np.int32(face.face_px),
      "source": f"synthcrowd/{split}/{index:07d}",
  }


def _render_chunk(args) -> list[dict]:
  seed, split, start, stop, face_px_range = args
  return [render_aligned_face(seed, split, i, face_px_range) for i in range(start, stop)]


class Synthcrowd(tfds.core.GeneratorBasedBuilder):
  """SynthCrowd: procedural faces and crowds with GECV-shaped labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "faces configs"}
  BUILDER_CONFIGS = [
      _faces_config("faces_tiny", 512, 128, 128),
      _faces_config("faces_small", 12000, 1600, 1600),
      _faces_config("faces", 200000, 10000, 10000),
  ]
  DEFAULT_CONFIG_NAME = "faces_small"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=records.faces_features(),
        supervised_keys=("image", "emotion"),
        description=__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is rendered
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.num_examples.items()}

  def _generate_examples(self, split: str, count: int):
    config = self.builder_config
    chunk = 256
    jobs = [(config.seed, split, start, min(start + chunk, count), tuple(config.face_px_range))
            for start in range(0, count, chunk)]
    # Spawned workers: forking a process that already runs JAX's threads is unsafe.
    workers = max(1, min(os.cpu_count() or 1, len(jobs)))
    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      for (_, _, start, _, _), examples in zip(jobs, pool.map(_render_chunk, jobs)):
        for offset, example in enumerate(examples):
          yield start + offset, example
