"""Data parallelism: one train step of every level on 1 device equals the same step on 8 CPU
devices (EmoNet; NVPF as FeC; TNVPF; RetinaFace; the RPN, its anchor sampling included), BatchNorm
over the global batch included.

Compared in float64: in float32 EmoNet's gradients at initialisation differ by
~1e-2 relative between any two summation orders (see STACK.md), which would
hide a real mismatch (e.g. BatchNorm over the local instead of the global
batch, or a mean over the local batch, which change the loss at the 1e-2 level).
"""

import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from emoflow.models import TNVPF, EmoNet, priors
from emoflow.tasks import detection, group, individual, proposals, video
from emoflow.train import optimizer, parallel
from emoflow.train.state import TrainState
from emoflow.vision import retinaface, rpn

B = 16  # two examples per device on 8 devices


def _emonet(rng):
  model = EmoNet(num_classes=8, embed_dim=32, width=0.25, depth=0.25, dtype=jnp.float64)
  batch = {"image": rng.integers(0, 256, (B, 112, 112, 3), dtype=np.uint8),
           "label": rng.integers(0, 8, B).astype(np.int32)}
  variables = jax.jit(lambda r, x: model.init(r, x, train=False))(
      jax.random.key(0), np.zeros((1, 112, 112, 3), np.float32))
  return individual.make_train_step(model, np.ones(8, np.float32)), variables, batch


def _nvpf(rng):
  fusion = group.make_fusion(ml_collections.ConfigDict({
      "fusion": "fec", "num_classes": 3, "flow_units": 2, "flow_width": 8,
      "prior": "learned_gaussian", "ce_weight": 0.5, "feb_hidden": 8}))
  mask = rng.random((B, 5)) < 0.6
  mask[:, 0] = True
  batch = {"embeddings": rng.normal(size=(B, 5, 6)) * mask[..., None], "mask": mask,
           "label": rng.integers(0, 3, B).astype(np.int32)}
  variables = jax.jit(fusion.init)(jax.random.key(0), jnp.zeros((1, 5, 6)), jnp.ones((1, 5), bool))
  return group.make_train_step(fusion), variables, batch


def _tnvpf(rng):
  fusion = video.TemporalFusion(
      TNVPF(cell="tnvpf", hidden=8, group_units=1, group_width=4, frame_units=1, frame_width=4,
            param_dtype=jnp.float64),
      priors.make("learned_gaussian", num_classes=3), nll_weight=0.1)
  t, g, n = 4, 3, 4
  frame_mask = np.arange(t)[None] < rng.integers(1, t + 1, B)[:, None]
  batch = {"embeddings": rng.normal(size=(B, t, g, n, 6)),
           "face_mask": rng.random((B, t, g, n)) < 0.7, "group_mask": rng.random((B, t, g)) < 0.7,
           "frame_mask": frame_mask,
           "frame_labels": np.where(frame_mask, rng.integers(0, 3, (B, t)), -1).astype(np.int32),
           "label": rng.integers(0, 3, B).astype(np.int32)}
  inputs = [batch[k][:1] for k in ("embeddings", "face_mask", "group_mask", "frame_mask")]
  variables = jax.jit(fusion.init)(jax.random.key(0), *inputs)
  return video.make_train_step(fusion), variables, batch


def _bright_boxes(rng, images, corners, sizes, square: bool):
  """Two boxes per image [B, 2, 4] (x0, y0, x1, y1), drawn as bright rectangles into `images`."""
  corners = rng.integers(*corners, (B, 2, 2)).astype(np.float32)
  boxes = np.concatenate([corners, corners + rng.integers(*sizes, (B, 2, 1 if square else 2))], -1)
  for i, j in np.ndindex(B, 2):
    x0, y0, x1, y1 = boxes[i, j].astype(int)
    images[i, y0:y1, x0:x1] = 200
  return boxes


def _retinaface(rng):
  model = retinaface.RetinaFace("mobilenet0.25", dtype=jnp.float64)
  images = rng.integers(0, 60, (B, 64, 64, 3), dtype=np.uint8)
  boxes = _bright_boxes(rng, images, (4, 30), (12, 30), square=True)  # where the faces are
  centre = (boxes[..., :2] + boxes[..., 2:]) / 2
  batch = {"image": images, "boxes": boxes, "valid": rng.random((B, 2)) < 0.8,
           "landmarks": np.repeat(centre[..., None, :], 5, -2).astype(np.float32),
           "has_landmarks": rng.random((B, 2)) < 0.5}
  batch["valid"][:, 0] = True
  variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
  return detection.make_train_step(model), variables, batch


def _rpn(rng):
  model = rpn.RPN(num_anchors=6, width=0.125, dtype=jnp.float64)
  images = rng.integers(0, 60, (B, 64, 64, 3), dtype=np.uint8)
  boxes = _bright_boxes(rng, images, (0, 30), (10, 34), square=False)  # where the groups are
  batch = {"image": images, "group_boxes": boxes, "group_valid": rng.random((B, 2)) < 0.8}
  batch["group_valid"][:, 0] = True
  variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
  return proposals.make_train_step(model, scales=(16.0, 32.0), ratios=(0.5, 1.0, 2.0),
                                   per_image=32), variables, batch


LEVELS = {"emonet": _emonet, "nvpf": _nvpf, "tnvpf": _tnvpf, "retinaface": _retinaface,
          "rpn": _rpn}


def _one_step(level: str, devices):
  train_step, variables, batch = LEVELS[level](np.random.default_rng(0))
  to64 = lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x
  variables = jax.tree.map(to64, variables)
  batch = jax.tree.map(lambda x: to64(np.asarray(x)), batch)
  cfg = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-3, warmup_steps=0))
  state = TrainState.create(variables, optimizer.make_optimizer(cfg, 10))
  mesh = parallel.make_data_mesh(devices)
  step = parallel.jit_train_step(train_step, mesh)
  state, metrics = step(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh),
                        jax.random.key(1))
  return jax.device_get(state), jax.device_get(metrics)


def _both_steps(level: str) -> dict:
  """The metrics and state leaves (with their paths) of one step on 1 and on 8 devices, float64."""
  one_state, one_metrics = _one_step(level, jax.devices()[:1])
  eight_state, eight_metrics = _one_step(level, jax.devices())
  return {"one_metrics": one_metrics, "eight_metrics": eight_metrics,
          "one_leaves": [(jax.tree_util.keystr(path), leaf)
                         for path, leaf in jax.tree_util.tree_leaves_with_path(one_state)],
          "eight_leaves": jax.tree.leaves(eight_state)}


def _steps_compiled_as_the_commands_compile(level: str, tmp_path) -> dict:
  """_both_steps(level) in a child process at XLA's default optimisation level, as emoflow's
  commands compile: the suite compiles at level 0 (conftest), where the steps' float32 parts may
  round an ulp apart on 1 and 8 devices."""
  out = tmp_path / "steps.pkl"
  flags = os.environ["XLA_FLAGS"].replace("--xla_backend_optimization_level=0", "")
  child = subprocess.run([sys.executable, __file__, level, str(out)], capture_output=True,
                         text=True, env={**os.environ, "XLA_FLAGS": flags, "JAX_ENABLE_X64": "1"})
  assert child.returncode == 0, child.stderr[-2000:]
  with open(out, "rb") as f:
    return pickle.load(f)


@pytest.mark.slow
@pytest.mark.parametrize("level", sorted(LEVELS))
def test_eight_devices_match_one(level, tmp_path):
  steps = _steps_compiled_as_the_commands_compile(level, tmp_path)
  one_metrics, eight_metrics = steps["one_metrics"], steps["eight_metrics"]
  assert np.isfinite(one_metrics["loss"])
  for key, value in one_metrics.items():
    np.testing.assert_allclose(eight_metrics[key], value, rtol=1e-8, err_msg=key)
  assert len(steps["one_leaves"]) == len(steps["eight_leaves"])
  for (path, a), b in zip(steps["one_leaves"], steps["eight_leaves"]):
    # Not exact: the face features are float32 by design (group.face_features), and XLA's
    # vectorised float32 rsqrt may round an ulp differently at another per-device shape.
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9, err_msg=path)


def test_batch_must_divide_over_devices():
  mesh = parallel.make_data_mesh()
  try:
    parallel.check_batch_size(12, mesh)
  except ValueError as e:
    assert "not divisible by the 8 devices" in str(e)
  else:
    raise AssertionError("12 over 8 devices must be refused")


if __name__ == "__main__":  # the child of _steps_compiled_as_the_commands_compile
  assert len(jax.devices()) == 8 and jax.config.jax_enable_x64, "needs 8 CPU devices and float64"
  with open(sys.argv[2], "wb") as f:
    pickle.dump(_both_steps(sys.argv[1]), f)
