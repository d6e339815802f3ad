"""Impossible config values, found before any work: one line naming the key (`--config.KEY`).

Rules go by a field's name wherever it sits in the tree (so `emonet.batch_size`
of the quickstart is checked like `batch_size`): counts and sizes at least 1,
weights and rates at least 0 (learning rates and scales above 0), thresholds
in [0, 1], and names in their registries (priors, fusions, temporal cells,
group poolings, optimizers, schedules, detector trunks, dtypes; the
quickstart checks its own stage lists). Unknown keys and wrong types are
refused earlier, by the flag parser (experiments.configs.check_override_key
and ml_collections' typed fields).
"""

import jax.numpy as jnp

from emoflow.models import priors, tnvpf
from emoflow.tasks import group
from emoflow.train import optimizer
from emoflow.vision import retinaface

AT_LEAST_ONE = {"anchors_per_image", "batch_size", "every", "embed_dim", "feb_hidden",
                "flow_units", "flow_width", "frame_stride", "frame_width",
                "group_units", "group_width", "hidden", "k_max", "keep_latest", "log_every",
                "max_detections", "max_faces", "max_groups", "max_proposals", "num_classes",
                "num_frames", "num_steps", "read_threads"}
AT_LEAST_ZERO = {"warmup_steps", "workers", "video_index", "weight_decay", "clip_global_norm",
                 "ce_weight", "nll_weight", "box_weight", "min_size", "frame_units"}
ABOVE_ZERO = {"learning_rate", "input_scale", "depth", "width", "emonet_learning_rate_scale",
              "scales", "ratios", "prior_separation"}
FRACTIONS = {"score_threshold", "nms_threshold", "ap_score_threshold"}


def _names() -> dict:
  """Field name -> the names it may take."""
  return {"prior": priors.known(), "fusion": group.known(), "cell": tuple(sorted(tnvpf.CELLS)),
          "group_pooling": tuple(sorted(tnvpf.POOLINGS)), "prior_geometry": priors.GEOMETRIES,
          "frame_readout": tnvpf.FRAME_READOUTS,
          "prior_scaling": priors.SCALINGS,
          "schedule": ("cosine", "constant"), "best_mode": ("max", "min"),
          "trunk": tuple(sorted(retinaface.TRUNKS))}


def _leaves(node, prefix: str = ""):
  for key in node.keys():
    value = node[key]
    if hasattr(value, "keys"):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", key, value


def _problem(path: str, key: str, value, names: dict) -> str | None:
  """What is wrong with one field, or None."""
  numbers = value if isinstance(value, (tuple, list)) else (value,)
  if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
    numbers = None
  if key in AT_LEAST_ONE and numbers and min(numbers) < 1:
    return "must be at least 1"
  if key in AT_LEAST_ZERO and numbers and min(numbers) < 0:
    return "must be at least 0"
  if key in ABOVE_ZERO and numbers is not None and (not numbers or min(numbers) <= 0):
    return "must be above 0"
  if key in FRACTIONS and numbers and not all(0 <= v <= 1 for v in numbers):
    return "must lie in [0, 1]"
  if key in names and value not in names[key]:
    return f"unknown; known: {', '.join(names[key])}"
  if path.endswith("optimizer.name") and value not in optimizer.known():
    return f"unknown; known: {', '.join(optimizer.known())}"
  if key == "dtype":
    try:
      jnp.dtype(value)
    except TypeError:
      return "is not a dtype name (e.g. float32, bfloat16)"
  return None


def _prior_problem(config) -> str | None:
  """A model block's prior keys that make no prior together (fixed params it lacks)."""
  for path, key, value in _leaves(config):
    if key == "prior_fixed":
      block = config
      for part in path.split(".")[:-1]:
        block = block[part]
      try:
        group.make_prior(block)
      except ValueError as e:
        return f"--config.{path}={value!r}: {e}"
  return None


def check(config) -> None:
  """A one-line ValueError naming the first impossible field of `config` (module docstring)."""
  names = _names()
  for path, key, value in _leaves(config):
    problem = _problem(path, key, value, names)
    if problem:
      raise ValueError(f"--config.{path}={value!r}: {problem}")
  problem = _prior_problem(config)
  if problem:
    raise ValueError(problem)
