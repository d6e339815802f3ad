"""Steady state compiles nothing new: ragged group sizes and group counts reuse the compiled steps.

Counts compilations through each jitted function's cache: training batches
whose groups hold different numbers of faces, and frame batches with
different numbers of groups, must hit the programs already
compiled (the pipeline pads group counts to power-of-two buckets).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from emoflow import bundle, pipeline
from emoflow.labels import EMOTIONS
from emoflow.models import EmoNet
from emoflow.tasks import group as group_task
from emoflow.train.state import TrainState

M, N = 16, 4
GROUP_MODEL = {"fusion": "fec", "num_classes": 3, "max_faces": N, "flow_units": 2, "flow_width": 4,
               "prior": "class_gaussian", "ce_weight": 1.0, "feb_hidden": 8}


def _group_batch(rng: np.random.Generator, batch: int) -> dict:
  sizes = rng.integers(1, N + 1, batch)
  mask = np.arange(N)[None] < sizes[:, None]
  return {"embeddings": (rng.normal(size=(batch, N, M)) * mask[..., None]).astype(np.float32),
          "mask": mask, "label": rng.integers(0, 3, batch).astype(np.int32)}


def test_group_train_step_compiles_once_for_any_group_sizes():
  fusion = group_task.make_fusion(ml_collections.ConfigDict(GROUP_MODEL))
  variables = fusion.init(jax.random.key(0), jnp.zeros((1, N, M)), jnp.ones((1, N), bool))
  state = TrainState.create(variables, optax.adam(1e-3))
  step = jax.jit(group_task.make_train_step(fusion))
  rng = np.random.default_rng(0)
  seen_sizes = set()
  for i in range(5):
    batch = _group_batch(rng, 8)
    seen_sizes |= set(batch["mask"].sum(1).tolist())
    state, metrics = step(state, batch, jax.random.key(i))
    assert np.isfinite(float(metrics["loss"]))
  assert seen_sizes == set(range(1, N + 1))  # every group size went through
  assert step._cache_size() == 1


def _frame(rng: np.random.Generator, index: int, num_faces: int, num_groups: int):
  """A FrameResult after the per-face stages: random embeddings, faces dealt to groups."""
  ids = rng.integers(0, num_groups, num_faces)
  ids[:num_groups] = np.arange(num_groups)  # every group has a face
  boxes = np.sort(rng.uniform(0, 100, (num_faces, 4)), axis=-1)
  return pipeline.FrameResult(
      index=index, boxes=boxes, landmarks=np.zeros((num_faces, 5, 2)),
      detection_scores=np.ones(num_faces), face_probs=np.full((num_faces, 8), 1 / 8),
      embeddings=rng.normal(size=(num_faces, M)).astype(np.float32), face_group=ids,
      group_boxes=np.zeros((num_groups, 4)), group_probs=None,
      group_slots=[np.flatnonzero(ids == g).tolist() for g in range(num_groups)])


def test_pipeline_group_stage_compiles_once_per_group_count_bucket():
  emonet = EmoNet(num_classes=8, embed_dim=M, width=0.25, depth=0.5)
  fusion = group_task.make_fusion(ml_collections.ConfigDict(GROUP_MODEL))
  variables = {"emonet": emonet.init(jax.random.key(0), jnp.zeros((1, 112, 112, 3))),
               "group": fusion.init(jax.random.key(1), jnp.zeros((1, N, M)),
                                    jnp.ones((1, N), bool))}
  config = {"emonet": {"num_classes": 8, "embed_dim": M, "width": 0.25, "depth": 0.5},
            "group": GROUP_MODEL, "video": None, "sampling_fps": 2.0,
            "labels": pipeline.vocabulary(EMOTIONS), "preprocessing": pipeline.preprocessing()}
  pipe = pipeline.Pipeline(bundle.Bundle(config, jax.device_get(variables)), detector=None)
  rng = np.random.default_rng(1)
  # Batches of 2 frames, 1-3 groups of 3-8 faces each: one bucket (16 groups), one compile.
  for step in range(6):
    frames = [_frame(rng, 2 * step + k, int(rng.integers(3, 9)), int(rng.integers(1, 4)))
              for k in range(2)]
    results = pipe.fuse_groups(frames)
    for r in results:
      assert r.group_probs.shape == (len(r.group_slots), 3)
      np.testing.assert_allclose(r.group_probs.sum(-1), 1.0, rtol=1e-5)
  assert pipe._group._cache_size() == 1
  # 20 groups need the next bucket (32): exactly one more program.
  pipe.fuse_groups([_frame(rng, 99, 40, 20)])
  assert pipe._group._cache_size() == 2
