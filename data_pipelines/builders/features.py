"""TFDS builder `emonet_features`: a dataset's records with each face replaced by EmoNet's outputs.

Group and clip models see a face only through a frozen EmoNet's embedding
(and its logits, for score averaging), so computing those once turns every
later epoch of NVPF / TNVPF training from a CNN pass per face into a read.
The cache holds every split of a faces, groups or clips dataset in the source
order (record i of a split is source record i), with `image` or `faces`
replaced by `embeddings` float32 [.., M] and `logits` float32 [.., C]; every
other field is copied as it is. data_pipelines.loaders reads both kinds.

The config name is the source's name and config plus the checkpoint's step
and a digest of its variables, so caches of different checkpoints never
collide; metadata.json says which run and checkpoint made it. TFDS writes
into an incomplete directory and renames it when complete. Read a cache with
`loaders.split_source(tfds.builder_from_directory(DIR), split)`.
"""

import re
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.builders.records import FACE_SIDE

# faces [K, 112, 112, 3] uint8 -> (embeddings [K, M], logits [K, C]), K > 0
EmbedFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def config_name(source_info, step: int, digest: str) -> str:
  """`<source name>_<config>_v<version>_step<step>_<digest[:12]>`, with TFDS-safe characters
  only: a source rendered again at another version (other splits) gets a cache of its own."""
  parts = [source_info.name, source_info.config_name, f"v{source_info.version}", f"step{step}",
           digest[:12]]
  return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(p for p in parts if p))


def _payload(features) -> str:
  """The source field holding face pixels: `image` (faces records) or `faces` (groups, clips)."""
  for key in ("image", "faces"):
    if key in features:
      return key
  raise ValueError(f"records with fields {', '.join(features)} hold no faces to cache")


class EmonetFeatures(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The records of `source` with EmoNet embeddings and logits in place of face pixels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "embeddings and logits of faces, groups and clips records"}

  def __init__(self, *, source, embed: EmbedFn, embed_dim: int, num_classes: int, step: int,
               digest: str, metadata: dict, data_dir: str, faces_per_call: int = 1024):
    self._source, self._embed, self._faces_per_call = source, embed, faces_per_call
    self._dims = {"embeddings": embed_dim, "logits": num_classes}
    self._metadata = {**metadata, "source": source.info.full_name, "step": step, "digest": digest}
    name = config_name(source.info, step, digest)
    super().__init__(config=tfds.core.BuilderConfig(name=name, description=f"EmoNet outputs on "
                                                    f"{source.info.full_name}"),
                     data_dir=data_dir, file_format="array_record")

  def _info(self) -> tfds.core.DatasetInfo:
    features = self._source.info.features
    payload = _payload(features)
    per_face = () if payload == "image" else (None,)
    out = {key: feature for key, feature in features.items() if key != payload}
    for key, dim in self._dims.items():
      out[key] = tfds.features.Tensor(shape=(*per_face, dim), dtype=np.float32,
                                      encoding=tfds.features.Encoding.BYTES)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(out), disable_shuffling=True,  # keep source order
        metadata=tfds.core.MetadataDict(self._metadata), description=__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self._source.info.splits}

  def _generate_examples(self, split: str):
    """Source records in order, EmoNet run on about `faces_per_call` faces at a time."""
    source = self._source.as_data_source(split=split)
    payload = _payload(self._source.info.features)
    pending, count = [], 0
    for index in range(len(source)):
      record = source[index]
      faces = (record["image"][None] if payload == "image" else
               np.stack(record["faces"]) if record["faces"] else
               np.zeros((0, FACE_SIDE, FACE_SIDE, 3), np.uint8))
      pending.append((index, record, faces))
      count += len(faces)
      if count >= self._faces_per_call or index == len(source) - 1:
        yield from self._replace_faces(pending, payload)
        pending, count = [], 0

  def _replace_faces(self, pending: list, payload: str):
    faces = np.concatenate([faces for _, _, faces in pending])
    if len(faces):
      outputs = [np.asarray(x, np.float32) for x in self._embed(faces)]
    else:
      outputs = [np.zeros((0, dim), np.float32) for dim in self._dims.values()]
    ends = np.cumsum([len(faces) for _, _, faces in pending])[:-1]
    per_record = zip(*(np.split(x, ends) for x in outputs))
    for (index, record, _), values in zip(pending, per_record):
      example = {key: value for key, value in record.items() if key != payload}
      for key, value in zip(self._dims, values):
        example[key] = value[0] if payload == "image" else value
      yield index, example
