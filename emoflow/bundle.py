"""A model directory: every stage's config and weights, what `emoflow predict --model DIR` reads.

    DIR/model.json       {"labels": {"emotions": the EmoNet's class names, "groups": [...]},
                          "preprocessing": {"channels": "RGB", "face_size", "alignment":
                                            the 5-point template} (emoflow.pipeline),
                          "emonet": {num_classes, embed_dim, width, depth} (or
                                     {"architecture": "mini_xception", ...}: the starter's),
                          "group": the group run's config.model (fusion, max_faces, ...),
                          "video": the video run's config.model, {"fusion":
                                   "mean_of_frames"} (no temporal model), or null,
                          "sampling_fps": frames per second the video model was trained on,
                          "detector": {trunk, dtype, input_scale, score_threshold,
                                       nms_threshold} of a trained RetinaFace, or
                                      {"name": "mtcnn", thresholds, ...}, if any,
                          "rpn": {width, dtype, scales, ratios, input_scale,
                                  score_threshold, nms_threshold, max_proposals,
                                  min_size, frame_size: [width, height] of its training
                                  frames, where known} of a trained group proposal
                                  network, if any,
                          "sources": {stage: {"workdir", "step"}}}
    DIR/weights.msgpack  {"emonet": Flax variables, "group": ..., "video": ..., "detector": ...,
                          "rpn": ...}

emoflow.starter writes one with nothing trained here (MTCNN, a FER2013
face-emotion model, the valence average of a group's faces).
Weights are Flax's msgpack serialisation of plain nested dicts of arrays, so
loading needs no model structure and no training code. `save` writes a new
directory next to the target and renames it into place, so a reader never
sees half a model (a replaced model is moved aside first, then removed).
"""

import dataclasses
import json
import os
import shutil
import tempfile

import ml_collections
from flax import serialization

CONFIG_FILE = "model.json"
WEIGHTS_FILE = "weights.msgpack"


@dataclasses.dataclass(frozen=True)
class Bundle:
  config: dict
  variables: dict  # stage -> Flax variables

  def model_config(self, stage: str) -> ml_collections.ConfigDict | None:
    """A stage's model config with attribute access (what the tasks' make_fusion read)."""
    block = self.config.get(stage)
    return None if block is None else ml_collections.ConfigDict(block)


def save(directory: str, config: dict, variables: dict) -> None:
  """Writes the bundle to `directory` (replacing one already there) by renames."""
  directory = os.path.abspath(directory)
  parent, name = os.path.split(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
  try:
    with open(os.path.join(staging, CONFIG_FILE), "w") as f:
      json.dump(config, f, indent=2, sort_keys=True)
    with open(os.path.join(staging, WEIGHTS_FILE), "wb") as f:
      f.write(serialization.msgpack_serialize(variables))
    os.chmod(staging, 0o777 & ~_umask())
    if os.path.isdir(directory):
      old = tempfile.mkdtemp(prefix=f".{name}.old.", dir=parent)
      os.replace(directory, old)
      os.replace(staging, directory)
      shutil.rmtree(old)
    else:
      os.replace(staging, directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def _umask() -> int:
  umask = os.umask(0)
  os.umask(umask)
  return umask


def load(directory: str) -> Bundle:
  """The bundle in `directory`; a one-line ValueError if it is not one."""
  paths = [os.path.join(directory, name) for name in (CONFIG_FILE, WEIGHTS_FILE)]
  missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
  if missing:
    raise ValueError(f"{directory} is not an emoflow model directory (no {', '.join(missing)}); "
                     "make one with `python -m experiments.export_model`")
  try:
    with open(paths[0]) as f:
      config = json.load(f)
    with open(paths[1], "rb") as f:
      variables = serialization.msgpack_restore(f.read())
  except (ValueError, OSError) as e:
    raise ValueError(f"{directory}: cannot read the model ({e})") from None
  for stage in ("emonet", "group"):
    if stage not in config or stage not in variables:
      raise ValueError(f"{directory}: the model lacks its {stage!r} stage")
  for stage in ("detector", "rpn"):
    if config.get(stage) is not None and stage not in variables:
      raise ValueError(f"{directory}: model.json names a {stage} but weights.msgpack lacks it")
  return Bundle(config, variables)
