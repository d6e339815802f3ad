"""The detection level: greedy IoU-0.5 matching and AP by hand, and a tiny RetinaFace run through the runner."""

import os

import numpy as np
from assets.runner import run_experiment

from experiments import detection


def test_greedy_matching_goes_by_score_and_matches_each_face_once():
  gt = np.float32([[0, 0, 10, 10], [20, 0, 30, 10]])
  boxes = np.float32([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10], [50, 50, 60, 60]])
  scores = np.float32([0.6, 0.9, 0.8, 0.7])
  # The 0.9 box takes face 0 first; the 0.6 box then finds it taken: a false positive.
  assert detection.match_frame(boxes, scores, gt).tolist() == [-1, 0, 1, -1]
  assert detection.match_frame(boxes[:0], scores[:0], gt).tolist() == []
  assert detection.match_frame(boxes, scores, gt[:0]).tolist() == [-1] * 4


def test_score_counts_recall_precision_per_height_and_ap():
  gt = np.float32([[0, 0, 10, 10], [20, 0, 60, 40], [100, 0, 110, 12]])
  boxes = np.float32([[0, 0, 10, 10], [20, 0, 60, 40], [200, 0, 240, 40], [100, 0, 110, 12]])
  scores = np.float32([0.9, 0.8, 0.7, 0.3])  # the last one matches but is below 0.5
  results = detection.score([(boxes, scores, gt)], score_threshold=0.5,
                            size_buckets=((8, 16), (32, 64)))
  assert results["faces"] == 3 and results["detections"] == 3
  assert results["recall"] == 2 / 3 and results["precision"] == 2 / 3
  assert (results["recall@8-15"], results["faces@8-15"]) == (0.5, 2)
  assert (results["precision@32-63"], results["detections@32-63"]) == (0.5, 2)
  assert results["precision@8-15"] == 1.0
  # Ranked TP, TP, FP, TP: AP = 1/3 * 1 + 1/3 * 1 + 1/3 * 3/4.
  np.testing.assert_allclose(results["AP"], (1 + 1 + 0.75) / 3)


def test_tiny_run_reports_recall_and_precision_and_eval_reproduces_it(tmp_path):
  args = ["--config=retinaface_synthcrowd:tiny", f"--workdir={tmp_path}/run",
          f"--config.data.data_dir={tmp_path}/tfds"]
  result = run_experiment(*args)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| faces | detections | recall | precision | AP |" in result.stdout
  assert "| face height (px) | faces | recall | detections | precision |" in result.stdout
  for name in ("results.md", "metrics.csv", "plots/curves.png", "checkpoints/4"):
    assert os.path.exists(tmp_path / "run" / name), name
  evaluated = run_experiment(*args, "--mode=eval")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  trained, evaluated = ((tmp_path / "run" / name).read_text().splitlines()[2:]
                        for name in ("results.md", "results_validation.md"))
  assert trained == evaluated
