"""Steady state compiles nothing new: ragged group sizes and group counts reuse the compiled steps.

Counts compilations through each jitted function's cache: training batches
whose groups hold different numbers of faces, frame batches with different
numbers of groups and of faces, must hit the programs already compiled (the
pipeline pads group counts to power-of-two buckets and runs faces in blocks
of a fixed size).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from emoflow import bundle, pipeline
from emoflow.labels import EMOTIONS
from emoflow.models import EmoNet
from emoflow.tasks import group as group_task
from emoflow.tasks import individual as individual_task
from emoflow.vision import align, detect
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


@pytest.mark.slow
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


def test_pipeline_face_stage_compiles_once_for_any_face_count_and_equals_one_call():
  emonet = EmoNet(num_classes=8, embed_dim=M, width=0.25, depth=0.5)
  variables = {"emonet": jax.jit(emonet.init)(jax.random.key(0), jnp.zeros((1, 112, 112, 3))),
               "group": {}}
  config = {"emonet": {"num_classes": 8, "embed_dim": M, "width": 0.25, "depth": 0.5},
            "group": {"fusion": group_task.VALENCE, "num_classes": 3, "max_faces": N},
            "video": None, "sampling_fps": None, "labels": pipeline.vocabulary(EMOTIONS),
            "preprocessing": pipeline.preprocessing()}
  pipe = pipeline.Pipeline(bundle.Bundle(config, jax.device_get(variables)), detector=None)
  # All faces in one call (its own jit: jax.jit(align.warp_faces) would share the pipeline's cache).
  one_call = jax.jit(lambda frames, frame_of, landmarks: individual_task.predict(
      emonet, variables["emonet"], align.warp_faces(frames, frame_of, landmarks)))
  rng = np.random.default_rng(2)
  frames = rng.integers(0, 256, (3, 96, 128, 3), dtype=np.uint8)
  slots, programs = 30, []
  for count in (1, 2 * pipeline.FACE_BLOCK + 7):
    valid = np.zeros((3, slots), bool)
    valid.reshape(-1)[rng.choice(3 * slots, count, replace=False)] = True
    centres = rng.uniform(30, 70, (3, slots, 1, 2))
    landmarks = (centres + np.asarray(align.ARCFACE_TEMPLATE) / 4).astype(np.float32)
    detections = detect.Detections(boxes=np.zeros((3, slots, 4), np.float32),
                                   landmarks=landmarks, scores=valid.astype(np.float32),
                                   valid=valid, dropped=np.zeros(3, np.int32))
    frame_of, slot, probs, embeddings = pipe._faces(frames, detections, count=2)  # frame 2: padding
    np.testing.assert_array_equal(frame_of, np.nonzero(valid[:2])[0])
    expected = one_call(frames, frame_of, landmarks[frame_of, slot])
    np.testing.assert_allclose(probs, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embeddings, expected[1], rtol=1e-5, atol=1e-5)
    # jax.jit(align.warp_faces) shares its cache with other pipelines in this process: count growth.
    programs.append((pipe._emonet._cache_size(), pipe._warp._cache_size()))
  assert programs[0][0] == 1 and programs[1] == programs[0]
