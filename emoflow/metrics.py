"""Classification metrics of the paper's tables, from integer labels and predictions.

The paper's tables report mAC, UAR, macro F1 and per-class accuracy. Its
Tables 5-6 give mAC and UAR as different numbers, so mAC is read as the
EmotiW challenge accuracy: the fraction of all examples classified correctly
(sklearn's accuracy_score); UAR is the mean of the per-class recalls
(sklearn's balanced_accuracy_score) — the fair number on imbalanced data.
Classes absent from the labels are left out of the UAR mean, as sklearn does.
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
