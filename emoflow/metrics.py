"""Metrics of the paper's tables: classification from integer labels and predictions, and
box detection (AP) from scored boxes against ground-truth boxes.

The paper's tables report mAC, UAR, macro F1 and per-class accuracy. Its
Tables 5-6 give mAC and UAR as different numbers, so mAC is read as the
EmotiW challenge accuracy: the fraction of all examples classified correctly
(sklearn's accuracy_score); UAR is the mean of the per-class recalls
(sklearn's balanced_accuracy_score) — the fair number on imbalanced data.
Classes absent from the labels are left out of the UAR mean, as sklearn does.

Detection AP is the PASCAL VOC / COCO rule: per frame, detections in
descending score each take the unmatched ground-truth box they overlap most
if that IoU reaches the threshold (so a box is found at most once); AP is the
area under the all-point interpolated precision/recall curve over all
frames; mAP@[0.5:0.95] is the mean AP over IoU thresholds 0.50, 0.55, ..., 0.95
(one class: mAP = AP).
"""

import numpy as np


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
  """Counts [num_classes, num_classes]: row = true class, column = predicted."""
  labels = np.asarray(labels, np.int64).ravel()
  predictions = np.asarray(predictions, np.int64).ravel()
  if labels.shape != predictions.shape:
    raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
  flat = labels * num_classes + predictions
  return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
  """Recall of each class; NaN where the class has no examples."""
  support = cm.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def macro_f1(cm: np.ndarray) -> float:
  """F1 averaged over classes present in labels or predictions (sklearn's macro F1)."""
  tp = np.diag(cm).astype(np.float64)
  support = cm.sum(axis=1)
  predicted = cm.sum(axis=0)
  present = (support + predicted) > 0
  denominator = support + predicted
  f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
  return float(f1[present].mean()) if present.any() else float("nan")


def classification_report(labels, predictions, num_classes: int) -> dict:
  """All scalar metrics plus the per-class accuracies and the confusion matrix."""
  cm = confusion_matrix(labels, predictions, num_classes)
  per_class = per_class_accuracy(cm)
  total = cm.sum()
  return {
      "mAC": float(np.trace(cm) / total) if total else float("nan"),
      "UAR": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan"),
      "F1": macro_f1(cm),
      "per_class_accuracy": per_class,
      "confusion_matrix": cm,
  }


def expected_calibration_error(probs, labels, num_bins: int = 15) -> float:
  """ECE: over equal-width bins of the top probability, the example-weighted mean gap between
  the bin's accuracy and its mean top probability (Guo et al. 2017)."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  confidence, predicted = probs.max(axis=-1), probs.argmax(axis=-1)
  bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
  correct = (predicted == labels).astype(np.float64)
  count = np.bincount(bins, minlength=num_bins)
  gap = np.abs(np.bincount(bins, correct, num_bins) - np.bincount(bins, confidence, num_bins))
  return float(gap.sum() / max(count.sum(), 1))


COCO_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU [len(a), len(b)] of boxes (x0, y0, x1, y1, continuous coordinates); 0 when the union is empty."""
  a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
  top_left = np.maximum(a[:, None, :2], b[None, :, :2])
  bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(bottom_right - top_left, 0, None), -1)
  area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), -1)
  union = area(a)[:, None] + area(b)[None] - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_detections(boxes, scores, gt, iou_threshold: float = 0.5) -> np.ndarray:
  """Greedy matching of one frame: the ground-truth index [D] each detection matched, -1 for none.

  Detections (boxes [D, 4], scores [D]) are taken in descending score (the
  earlier on ties); each takes the unmatched box of gt [G, 4] it overlaps
  most, if that IoU is >= iou_threshold.
  """
  matched = np.full(len(boxes), -1)
  if not len(boxes) or not len(gt):
    return matched
  iou = box_iou_matrix(boxes, gt)
  free = np.ones(len(gt), bool)
  for d in np.argsort(-np.asarray(scores), kind="stable"):
    candidates = np.where(free, iou[d], -1.0)
    best = int(np.argmax(candidates))
    if candidates[best] >= iou_threshold:
      matched[d], free[best] = best, False
  return matched


def average_precision(scores, true_positive, num_gt: int) -> float:
  """All-point interpolated AP of detections (scores, is-a-match) against num_gt boxes; NaN without boxes."""
  if num_gt == 0:
    return float("nan")
  order = np.argsort(-np.asarray(scores), kind="stable")
  tp = np.cumsum(np.asarray(true_positive, bool)[order])
  recall = np.concatenate([[0.0], tp / num_gt])
  precision = np.concatenate([[1.0], tp / np.arange(1, len(order) + 1)])
  precision = np.maximum.accumulate(precision[::-1])[::-1]
  return float(np.sum(np.diff(recall) * precision[1:]))


def detection_ap(frames, iou_thresholds=COCO_IOU_THRESHOLDS) -> dict:
  """AP at each IoU threshold of per-frame (boxes [D, 4], scores [D], gt [G, 4]): {threshold: AP}."""
  frames = list(frames)
  scores = np.concatenate([np.asarray(s, np.float64).reshape(-1) for _, s, _ in frames] or [[]])
  num_gt = sum(len(gt) for _, _, gt in frames)
  out = {}
  for threshold in iou_thresholds:
    hits = [match_detections(b, s, gt, threshold) >= 0 for b, s, gt in frames]
    out[threshold] = average_precision(scores, np.concatenate(hits or [[]]).astype(bool), num_gt)
  return out
