"""Tests of RetinaFace's training loss (encoding, matching, hard negatives) and its train step."""

import jax
import numpy as np
import optax
import pytest

from emoflow.tasks import detection
from emoflow.train.state import TrainState
from emoflow.vision import detect, retinaface


def test_encode_inverts_decode():
  rng = np.random.default_rng(0)
  anchors = detect.make_anchors((48, 80))
  loc = rng.normal(0, 1, (2, len(anchors), 4)).astype(np.float32)
  landm = rng.normal(0, 1, (2, len(anchors), 10)).astype(np.float32)
  boxes, landmarks = detect.decode(loc, landm, anchors)
  loc_back, landm_back = jax.jit(detection.encode)(boxes, landmarks, anchors)
  np.testing.assert_allclose(loc_back, loc, atol=2e-4)
  np.testing.assert_allclose(landm_back, landm, atol=2e-4)


def _iou_matrix(a, b):
  top_left = np.maximum(a[:, None, :2], b[None, :, :2])
  bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(bottom_right - top_left, 0, None), -1)
  area = lambda x: np.prod(x[:, 2:] - x[:, :2], -1)
  return inter / (area(a)[:, None] + area(b)[None] - inter)


def _reference_match(gt_boxes, gt_valid, anchors, threshold=0.35, floor=0.2):
  """The public box_utils.match, as its loops do it, on the valid faces only."""
  corners = np.concatenate([anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2], 1)
  faces = np.flatnonzero(gt_valid)
  positive = np.zeros(len(anchors), bool)
  if not len(faces):
    return np.zeros(len(anchors), int), positive
  overlaps = _iou_matrix(gt_boxes[faces].astype(np.float64), corners.astype(np.float64))
  best_prior_overlap, best_prior = overlaps.max(1), overlaps.argmax(1)
  best_truth_overlap, best_truth = overlaps.max(0), overlaps.argmax(0)
  for j in range(len(faces)):
    if best_prior_overlap[j] >= floor:
      best_truth_overlap[best_prior[j]] = 2
      best_truth[best_prior[j]] = j
  return faces[best_truth], best_truth_overlap >= threshold


def _random_faces(rng, num, size, image):
  centres = rng.uniform(0, image, (num, 2))
  sizes = rng.uniform(size[0], size[1], (num, 2))
  return np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_match_follows_the_public_loops(seed):
  rng = np.random.default_rng(seed)
  anchors = detect.make_anchors((64, 96))
  gt_boxes = _random_faces(rng, 6, (6, 50), 80)
  gt_boxes[1] = gt_boxes[0] + 1  # two faces that may want the same best anchor
  gt_valid = rng.uniform(size=6) < 0.8
  gt_valid[0] = gt_valid[1] = True
  index, positive = jax.jit(detection.match)(gt_boxes, gt_valid, anchors)
  ref_index, ref_positive = _reference_match(gt_boxes, gt_valid, anchors)
  np.testing.assert_array_equal(positive, ref_positive)
  np.testing.assert_array_equal(np.asarray(index)[ref_positive], ref_index[ref_positive])


def test_match_makes_a_face_best_anchor_positive_below_the_threshold():
  anchors = detect.make_anchors((64, 64))
  # [0, 0, 8, 8]: best IoU 0.25 (the 16-px anchor at (4, 4)); [40, 40, 46, 46]: best 36/256 < 0.2.
  gt_boxes = np.array([[0, 0, 8, 8], [40, 40, 46, 46], [0, 0, 0, 0]], np.float32)
  gt_valid = np.array([True, True, False])
  index, positive = jax.jit(detection.match)(gt_boxes, gt_valid, anchors)
  claimed = np.asarray(index)[np.asarray(positive)]
  np.testing.assert_array_equal(claimed, [0])
  best = np.flatnonzero(positive)[0]
  np.testing.assert_allclose(anchors[best], [4, 4, 16, 16])
  _, ref_positive = _reference_match(gt_boxes, gt_valid, anchors)
  np.testing.assert_array_equal(positive, ref_positive)


def test_match_without_faces_has_no_positives():
  _, positive = jax.jit(detection.match)(np.zeros((3, 4), np.float32), np.zeros(3, bool),
                                         detect.make_anchors((64, 64)))
  assert not np.any(positive)


@pytest.mark.parametrize("num_pos", [0, 3, 40])
def test_hard_negatives_take_the_worst_min_of_ratio_and_negatives(num_pos):
  rng = np.random.default_rng(num_pos)
  num = 200
  loss = rng.integers(0, 20, num).astype(np.float32)  # ties too
  positive = np.zeros(num, bool)
  positive[rng.choice(num, num_pos, replace=False)] = True
  negative = np.asarray(jax.jit(detection.hard_negatives)(loss, positive))
  assert negative.sum() == min(7 * num_pos, num - num_pos)
  assert not np.any(negative & positive)
  if 0 < negative.sum() < num - num_pos:
    assert loss[negative].min() >= loss[~negative & ~positive].max()


def _tiny_batch():
  """Two 64x64 frames: bright squares as faces (landmarks on the second frame's face only)."""
  images = np.full((2, 64, 64, 3), 40, np.uint8)
  boxes = np.zeros((2, 3, 4), np.float32)
  boxes[0, :2] = [[8, 8, 28, 28], [36, 30, 60, 54]]
  boxes[1, 0] = [20, 16, 44, 40]
  for f, i in [(0, 0), (0, 1), (1, 0)]:
    x0, y0, x1, y1 = boxes[f, i].astype(int)
    images[f, y0:y1, x0:x1] = 220
  landmarks = (boxes[..., None, :2] + (boxes[..., None, 2:] - boxes[..., None, :2])
               * np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]))
  valid = np.array([[True, True, False], [True, False, False]])
  return {"image": images, "boxes": boxes, "landmarks": landmarks.astype(np.float32),
          "valid": valid, "has_landmarks": np.array([[False, False, False], [True, False, False]])}


@pytest.mark.slow
def test_train_step_lowers_the_loss_on_a_tiny_batch():
  model = retinaface.RetinaFace("mobilenet0.25")
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3), np.float32))
  state = jax.jit(lambda v: TrainState.create(v, optax.adam(1e-3)))(variables)
  step = jax.jit(detection.make_train_step(model))
  batch = _tiny_batch()
  losses = []
  for _ in range(6):
    new_state, metrics = step(state, batch, jax.random.PRNGKey(1))
    losses.append(float(metrics["loss"]))
    assert metrics["positives"] > 0 and np.isfinite(losses[-1])
    state = new_state
  assert losses[-1] < losses[0]
  assert int(state.step) == 6
  stats = jax.tree.leaves(state.model_state["batch_stats"])
  initial = jax.tree.leaves(variables["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(stats, initial))
