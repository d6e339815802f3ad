"""The group proposal network: anchors, box coding, proposals against numpy, the Faster R-CNN
loss's labelling and sampling against plain loops, and a tiny RPN that learns a box."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from test_detect import _reference_nms

from emoflow import metrics
from emoflow.tasks import proposals
from emoflow.train import optimizer
from emoflow.train.state import TrainState
from emoflow.vision import detect, rpn

SCALES, RATIOS = (8.0, 16.0), (0.5, 1.0, 2.0)


def test_anchors_count_order_areas_and_ratios():
  anchors = rpn.make_anchors((70, 100), SCALES, RATIOS, stride=32)
  rows, cols, k = 3, 4, 6  # ceil(70/32), ceil(100/32), 2 scales x 3 ratios
  assert anchors.shape == (rows * cols * k, 4) and anchors.dtype == np.float32
  grid = anchors.reshape(rows, cols, k, 4)
  np.testing.assert_array_equal(grid[1, 2, :, 0], 2.5 * 32)  # cx of column 2
  np.testing.assert_array_equal(grid[1, 2, :, 1], 1.5 * 32)  # cy of row 1
  w, h = grid[0, 0, :, 2], grid[0, 0, :, 3]
  np.testing.assert_allclose(np.sqrt(w * h), np.repeat(SCALES, 3), rtol=1e-6)
  np.testing.assert_allclose(h / w, np.tile(RATIOS, 2), rtol=1e-6)
  np.testing.assert_array_equal(grid[0, 0, :, 2:], grid[2, 3, :, 2:])


@pytest.mark.parametrize("size", [(64, 64), (90, 160), (33, 97)])
def test_network_outputs_line_up_with_the_anchors(size):
  model = rpn.RPN(num_anchors=6, width=0.125)
  images = jnp.zeros((2, *size, 3))
  variables = jax.jit(model.init)(jax.random.key(0), images)
  logits, offsets = jax.jit(model.apply)(variables, images)
  num = len(rpn.make_anchors(size, SCALES, RATIOS))
  assert logits.shape == (2, num, 2) and offsets.shape == (2, num, 4)
  trunk = variables["params"]["trunk"]
  assert sorted(trunk) == ["layer1_0", "layer1_1", "layer2_0", "layer2_1", "layer3_0", "layer3_1",
                           "layer4_0", "layer4_1", "stem"]
  assert "downsample" in trunk["layer2_0"] and "downsample" not in trunk["layer1_0"]


def test_full_width_trunk_is_resnet18():
  variables = jax.eval_shape(lambda: rpn.ResNet18Trunk().init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  out = jax.eval_shape(lambda v: rpn.ResNet18Trunk().apply(v, jnp.zeros((1, 224, 224, 3)),
                                                             train=False), variables)
  assert out.shape == (1, 7, 7, 512)
  convs = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(variables["params"])
              if "kernel" in jax.tree_util.keystr(path))
  assert convs == 11_166_912  # torchvision's resnet18 conv weights (its 11.69 M minus fc and BN)


@pytest.mark.parametrize("variances", [(1.0, 1.0), (0.1, 0.2)])
def test_encoding_round_trips(variances):
  rng = np.random.default_rng(0)
  anchors = rpn.make_anchors((96, 128), SCALES, RATIOS)
  centres = rng.uniform(0, 128, (len(anchors), 2))
  sizes = rng.uniform(2, 60, (len(anchors), 2))
  boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype(np.float32)
  offsets = detect.encode_boxes(boxes, anchors, variances)
  np.testing.assert_allclose(detect.decode_boxes(offsets, anchors, variances), boxes, atol=1e-3)
  # The R-CNN formula: dx = (x - xa) / (v0 wa), dw = log(w / wa) / v1.
  np.testing.assert_allclose(offsets[:, 0], (centres[:, 0] - anchors[:, 0]) / (variances[0] * anchors[:, 2]),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(offsets[:, 3], np.log(sizes[:, 1] / anchors[:, 3]) / variances[1],
                             rtol=1e-4, atol=1e-4)


def test_decode_clips_to_the_image_and_caps_the_size():
  anchors = np.float32([[10, 10, 8, 8]])
  boxes = rpn.decode(jnp.float32([[[0, 0, 100, 100]]]), anchors, (20, 30))
  np.testing.assert_array_equal(boxes, [[[0, 0, 30, 20]]])
  assert np.isfinite(boxes).all()


def _numpy_proposals(logits, offsets, anchors, size, score_threshold, nms_threshold, max_out,
                     min_size):
  """decode, clip, softmax, size filter and greedy NMS, written in numpy."""
  height, width = size
  dw = np.minimum(offsets[:, 2:], rpn.MAX_SIZE_DELTA)
  centre = anchors[:, :2] + offsets[:, :2] * anchors[:, 2:]
  wh = anchors[:, 2:] * np.exp(dw)
  boxes = np.clip(np.concatenate([centre - wh / 2, centre + wh / 2], 1), 0, [width, height] * 2)
  e = np.exp(logits - logits.max(1, keepdims=True))
  scores = e[:, 1] / e.sum(1)
  scores = np.where(np.all(boxes[:, 2:] - boxes[:, :2] >= min_size, 1), scores, 0)
  keep = _reference_nms(boxes.astype(np.float32), scores.astype(np.float32), nms_threshold,
                        score_threshold, max_out)
  return boxes[keep], scores[keep]


@pytest.mark.parametrize("seed", range(3))
def test_proposals_match_numpy(seed):
  rng = np.random.default_rng(seed)
  size = (96, 160)
  anchors = rpn.make_anchors(size, SCALES, RATIOS)
  logits = rng.normal(0, 2, (len(anchors), 2)).astype(np.float32)
  offsets = rng.normal(0, 0.5, (len(anchors), 4)).astype(np.float32)
  boxes, scores, valid = jax.jit(lambda lg, off: rpn.proposals(
      lg, off, anchors, size, score_threshold=0.3, nms_threshold=0.5, max_proposals=20,
      min_size=4.0))(logits, offsets)
  want_boxes, want_scores = _numpy_proposals(logits, offsets, anchors, size, 0.3, 0.5, 20, 4.0)
  n = len(want_boxes)
  assert valid.tolist() == [True] * n + [False] * (20 - n)
  np.testing.assert_allclose(boxes[:n], want_boxes, atol=1e-3)
  np.testing.assert_allclose(scores[:n], want_scores, atol=1e-5)
  assert not np.asarray(boxes[n:]).any()


def _reference_labels(gt, anchors, pos=0.7, neg=0.3):
  """Faster R-CNN's anchor labels by loops: 1, 0 or -1 per anchor, and its best group."""
  corners = np.concatenate([anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2], 1)
  iou = metrics.box_iou_matrix(gt, corners)  # [G, A]
  labels, index = [], []
  for a in range(len(anchors)):
    best = iou[:, a].max()
    label = 1 if best >= pos else 0 if best < neg else -1
    if any(iou[g, a] == iou[g].max() and iou[g].max() > 0 for g in range(len(gt))):
      label = 1
    labels.append(label)
    index.append(int(np.argmax(iou[:, a])))
  return np.array(labels), np.array(index)


def test_anchor_labels_match_a_loop():
  anchors = rpn.make_anchors((96, 128), (16.0, 40.0), RATIOS)
  gt = np.float32([[10, 10, 50, 40], [60, 50, 120, 90], [100, 5, 110, 12]])
  padded = np.concatenate([gt, np.float32([[0, 0, 128, 96]])])  # a padding row, ignored
  index, label = jax.jit(proposals.label_anchors)(padded, np.array([True] * 3 + [False]), anchors)
  want_labels, want_index = _reference_labels(gt.astype(np.float64), anchors.astype(np.float64))
  np.testing.assert_array_equal(label, want_labels)
  positive = want_labels == 1
  np.testing.assert_array_equal(np.asarray(index)[positive], want_index[positive])
  assert set(np.asarray(index)[positive]) == {0, 1, 2}  # every group, even the 10x7 one, has one


def test_sampling_draws_at_most_half_positives_and_fills_with_negatives():
  label = np.array([1] * 10 + [-1] * 5 + [0] * 300)
  pos, neg = proposals.sample_anchors(jnp.asarray(label), jax.random.key(0), per_image=16)
  assert int(pos.sum()) == 8 and int(neg.sum()) == 8
  assert np.all(label[np.asarray(pos)] == 1) and np.all(label[np.asarray(neg)] == 0)
  pos, neg = proposals.sample_anchors(jnp.asarray(label), jax.random.key(0), per_image=256)
  assert int(pos.sum()) == 10 and int(neg.sum()) == 246
  other, _ = proposals.sample_anchors(jnp.asarray(label), jax.random.key(1), per_image=16)
  assert int(other.sum()) == 8 and not np.array_equal(other, proposals.sample_anchors(
      jnp.asarray(label), jax.random.key(0), per_image=16)[0])


def test_loss_is_cross_entropy_and_smooth_l1_over_the_sampled_anchors():
  rng = np.random.default_rng(0)
  size = (64, 96)
  anchors = rpn.make_anchors(size, (16.0, 40.0), RATIOS)
  logits = rng.normal(size=(1, len(anchors), 2)).astype(np.float32)
  offsets = rng.normal(0, 0.3, (1, len(anchors), 4)).astype(np.float32)
  gt, valid = np.float32([[[10, 10, 50, 40], [0, 0, 0, 0]]]), np.array([[True, False]])
  terms = jax.jit(proposals.rpn_loss)(logits, offsets, anchors, gt, valid, jax.random.key(3))
  _, label = jax.jit(proposals.label_anchors)(gt[0], valid[0], anchors)
  pos, neg = jax.jit(proposals.sample_anchors)(label, jax.random.split(jax.random.key(3), 1)[0])
  pos, neg = np.asarray(pos), np.asarray(neg)
  n = pos.sum() + neg.sum()
  log_p = logits[0] - np.log(np.exp(logits[0]).sum(1, keepdims=True))
  cls = -(log_p[pos, 1].sum() + log_p[neg, 0].sum()) / n
  target = np.asarray(detect.encode_boxes(np.broadcast_to(gt[0, 0], (pos.sum(), 4)), anchors[pos]))
  diff = np.abs(offsets[0, pos] - target)
  beta = 1 / 9
  box = np.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta).sum() / n
  np.testing.assert_allclose(terms["cls"], cls, rtol=1e-5)
  np.testing.assert_allclose(terms["box"], box, rtol=1e-5)
  np.testing.assert_allclose(terms["loss"], cls + box, rtol=1e-5)


@pytest.mark.slow
def test_a_tiny_rpn_learns_to_propose_a_box():
  """A few dozen Adam steps on one image with one bright group: its best proposal finds it."""
  size, box = (64, 64), np.float32([16, 20, 44, 52])
  image = np.zeros((1, *size, 3), np.uint8)
  image[0, 20:52, 16:44] = 255
  model = rpn.RPN(num_anchors=6, width=0.125)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, *size, 3)))
  config = ml_collections.ConfigDict({"name": "adam", "learning_rate": 3e-3,
                                      "schedule": "constant"})
  state = TrainState.create(variables, optimizer.make_optimizer(config, 60))
  step = jax.jit(proposals.make_train_step(model, scales=(16.0, 32.0), ratios=RATIOS))
  batch = {"image": image, "group_boxes": box[None, None], "group_valid": np.ones((1, 1), bool)}
  for i in range(60):
    state, terms = step(state, batch, jax.random.key(i))
  proposer = rpn.GroupProposer(model, state.variables, scales=(16.0, 32.0), ratios=RATIOS,
                               score_threshold=0.0, max_proposals=4)
  boxes, scores, valid = proposer(image)
  assert valid[0, 0] and scores[0, 0] > 0.5, (scores, terms)
  assert metrics.box_iou_matrix(boxes[0, :1], box[None])[0, 0] > 0.5, boxes[0, 0]


def test_proposer_returns_frame_pixels_at_any_input_scale():
  model = rpn.RPN(num_anchors=6, width=0.125)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  frames = np.random.default_rng(0).integers(0, 256, (2, 96, 160, 3), np.uint8)
  full = rpn.GroupProposer(model, variables, scales=SCALES, ratios=RATIOS, score_threshold=0.0,
                           max_proposals=8)
  half = rpn.GroupProposer(model, variables, scales=(4.0, 8.0), ratios=RATIOS, input_scale=0.5,
                           score_threshold=0.0, max_proposals=8)
  for proposer in (full, half):
    boxes, scores, valid = proposer(frames)
    assert boxes.shape == (2, 8, 4) and valid.all()
    assert float(boxes[..., 2].max()) <= 160 and float(boxes[..., 3].max()) <= 96
  # Anchors of half the size on frames of half the size: the same boxes, scaled back by 2.
  small = jax.image.resize(jnp.asarray(frames, jnp.float32), (2, 48, 80, 3), "linear")
  reference = rpn.GroupProposer(model, variables, scales=(4.0, 8.0), ratios=RATIOS,
                                score_threshold=0.0, max_proposals=8)
  want, _, _ = reference._propose(variables, small)
  got, _, _ = half(frames)
  np.testing.assert_allclose(got, 2 * np.asarray(want), atol=1e-3)
  with pytest.raises(ValueError, match="anchors per cell"):
    rpn.GroupProposer(model, variables, scales=(8.0,), ratios=RATIOS)


def test_frame_scale_meets_the_training_frames_short_side():
  block = {"input_scale": 1.0, "frame_size": [640, 360]}
  assert rpn.frame_scale(block, 720, 1280) == pytest.approx(0.5)
  assert rpn.frame_scale(block, 1280, 720) == pytest.approx(0.5)  # portrait: the short side
  assert rpn.frame_scale(block, 180, 320) == pytest.approx(2.0)
  assert rpn.frame_scale({**block, "input_scale": 0.5}, 720, 1280) == pytest.approx(0.25)
  assert rpn.frame_scale({"input_scale": 0.75}, 720, 1280) == 0.75  # no frame_size recorded
