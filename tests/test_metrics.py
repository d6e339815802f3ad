"""emoflow.metrics against sklearn on random and degenerate label sets."""

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
