"""emoflow.metrics against sklearn on random and degenerate label sets, and detection AP against a plain VOC loop."""

import numpy as np
import pytest
from sklearn import metrics as skm

from emoflow import metrics


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_classes", [2, 3, 8])
def test_matches_sklearn(seed, num_classes):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, 300))
  labels = rng.integers(0, num_classes, n)
  # Skewed predictions, often right, so that every metric is away from chance.
  predictions = np.where(rng.random(n) < 0.6, labels, rng.integers(0, num_classes, n))
  report = metrics.classification_report(labels, predictions, num_classes)
  classes = list(range(num_classes))
  np.testing.assert_array_equal(
      report["confusion_matrix"], skm.confusion_matrix(labels, predictions, labels=classes))
  assert report["mAC"] == pytest.approx(skm.accuracy_score(labels, predictions))
  assert report["UAR"] == pytest.approx(skm.balanced_accuracy_score(labels, predictions))
  assert report["F1"] == pytest.approx(skm.f1_score(labels, predictions, average="macro"))
  recall = skm.recall_score(labels, predictions, labels=classes, average=None, zero_division=np.nan)
  np.testing.assert_allclose(report["per_class_accuracy"], recall, equal_nan=True)


def test_missing_class_is_nan_and_left_out_of_uar():
  report = metrics.classification_report([0, 0, 1], [0, 1, 1], num_classes=3)
  assert np.isnan(report["per_class_accuracy"][2])
  assert report["UAR"] == pytest.approx(0.75)


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match="differ in shape"):
    metrics.confusion_matrix([0, 1], [0], 2)


def test_expected_calibration_error_matches_a_loop_over_bins():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(3), size=500)
  labels = rng.integers(0, 3, size=500)
  total = 0.0
  for b in range(10):  # bin b holds top probabilities in (b/10, (b+1)/10]
    lo, hi = b / 10, (b + 1) / 10
    inside = [i for i in range(500) if lo < probs[i].max() <= hi]
    if inside:
      accuracy = np.mean([probs[i].argmax() == labels[i] for i in inside])
      confidence = np.mean([probs[i].max() for i in inside])
      total += len(inside) / 500 * abs(accuracy - confidence)
  assert metrics.expected_calibration_error(probs, labels, num_bins=10) == pytest.approx(total)
  perfect = np.eye(3)[labels]
  assert metrics.expected_calibration_error(perfect, labels) == 0.0


# --- detection AP ---------------------------------------------------------------------------


def test_box_iou_matrix_on_known_boxes():
  a = np.array([[-5, -5, 5, 5], [95, 95, 105, 105]])
  b = np.array([[0, -5, 10, 5], [-5, -5, 5, 5], [0, 0, 0, 0]])
  np.testing.assert_allclose(metrics.box_iou_matrix(a, b), [[1 / 3, 1, 0], [0, 0, 0]])
  assert metrics.box_iou_matrix(a[:0], b).shape == (0, 3)


def _reference_ap(frames, iou_threshold):
  """VOC's rule written out: global ranking, per-frame 'taken' flags, precision envelope by loop."""
  ranked = sorted(((float(s), f, d) for f, (_, scores, _) in enumerate(frames)
                   for d, s in enumerate(scores)), key=lambda t: -t[0])
  taken = [np.zeros(len(gt), bool) for *_, gt in frames]
  hits = []
  for _, f, d in ranked:
    boxes, _, gt = frames[f]
    best, best_iou = -1, -1.0
    for g in range(len(gt)):
      x0, y0 = max(boxes[d][0], gt[g][0]), max(boxes[d][1], gt[g][1])
      x1, y1 = min(boxes[d][2], gt[g][2]), min(boxes[d][3], gt[g][3])
      inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
      area = lambda b: (b[2] - b[0]) * (b[3] - b[1])
      iou = inter / (area(boxes[d]) + area(gt[g]) - inter)
      if not taken[f][g] and iou > best_iou:
        best, best_iou = g, iou
    hit = best >= 0 and best_iou >= iou_threshold
    if hit:
      taken[f][best] = True
    hits.append(hit)
  num_gt = sum(len(gt) for *_, gt in frames)
  recalls, precisions, tp = [0.0], [], 0
  for k, hit in enumerate(hits, start=1):
    tp += hit
    recalls.append(tp / num_gt)
    precisions.append(tp / k)
  ap = 0.0
  for k in range(len(hits)):
    ap += (recalls[k + 1] - recalls[k]) * max(precisions[k:])
  return ap


def _random_frames(rng, num_frames):
  frames = []
  for _ in range(num_frames):
    gt = rng.uniform(0, 80, (rng.integers(0, 5), 2))
    gt = np.concatenate([gt, gt + rng.uniform(5, 20, gt.shape)], 1)
    near = gt[rng.integers(0, len(gt), rng.integers(0, 6))] + rng.normal(0, 2, (1, 4)) if len(gt) \
        else np.zeros((0, 4))
    noise = rng.uniform(0, 80, (rng.integers(0, 3), 2))
    noise = np.concatenate([noise, noise + 10], 1)
    boxes = np.concatenate([near.reshape(-1, 4), noise])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    frames.append((boxes, rng.uniform(0, 1, len(boxes)), gt))
  return frames


@pytest.mark.parametrize("seed", range(3))
def test_detection_ap_matches_a_plain_voc_loop(seed):
  frames = _random_frames(np.random.default_rng(seed), 12)
  got = metrics.detection_ap(frames)
  assert list(got) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
  for threshold, ap in got.items():
    np.testing.assert_allclose(ap, _reference_ap(frames, threshold), atol=1e-12,
                               err_msg=f"IoU {threshold}")


def test_detection_ap_on_known_cases():
  gt = np.float64([[0, 0, 10, 10], [20, 0, 30, 10]])
  perfect = [(gt, np.float64([0.9, 0.8]), gt)]
  assert set(metrics.detection_ap(perfect).values()) == {1.0}
  # One box exact, the other shifted to IoU 0.6 (12 / 20 overlap area / union): found up to 0.6.
  shifted = np.float64([[0, 0, 10, 10], [22.5, 0, 32.5, 10]])
  iou = metrics.box_iou_matrix(shifted[1:], gt[1:])[0, 0]
  np.testing.assert_allclose(iou, 0.6)
  ap = metrics.detection_ap([(shifted, np.float64([0.9, 0.8]), gt)])
  assert [ap[t] for t in (0.5, 0.55, 0.6)] == [1.0, 1.0, 1.0]
  assert [ap[t] for t in (0.65, 0.7, 0.95)] == [0.5, 0.5, 0.5]
  np.testing.assert_allclose(np.mean(list(ap.values())), (3 * 1.0 + 7 * 0.5) / 10)
  # A false positive ranked first halves the precision at the first recall step.
  fp_first = [(np.concatenate([[[50, 50, 60, 60]], gt]), np.float64([0.95, 0.9, 0.8]), gt)]
  np.testing.assert_allclose(metrics.detection_ap(fp_first, (0.5,))[0.5], 2 / 3)
  assert np.isnan(metrics.detection_ap([(gt, np.float64([1, 1]), gt[:0])], (0.5,))[0.5])
  assert metrics.detection_ap([(gt[:0], np.float64([]), gt)], (0.5,))[0.5] == 0.0
