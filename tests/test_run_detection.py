"""The detection level: greedy IoU-0.5 matching and AP by hand, and a tiny RetinaFace run through the runner."""

import argparse
import os

import jax
import numpy as np
import pytest
from assets.runner import train_then_eval

from emoflow import bundle, cli, metrics
from emoflow.train import parallel
from emoflow.vision import detect
from experiments import detection, export_model
from experiments.workdir import load_config


def test_greedy_matching_goes_by_score_and_matches_each_face_once():
  gt = np.float32([[0, 0, 10, 10], [20, 0, 30, 10]])
  boxes = np.float32([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10], [50, 50, 60, 60]])
  scores = np.float32([0.6, 0.9, 0.8, 0.7])
  # The 0.9 box takes face 0 first; the 0.6 box then finds it taken: a false positive.
  assert metrics.match_detections(boxes, scores, gt).tolist() == [-1, 0, 1, -1]
  assert metrics.match_detections(boxes[:0], scores[:0], gt).tolist() == []
  assert metrics.match_detections(boxes, scores, gt[:0]).tolist() == [-1] * 4


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


@pytest.mark.slow
def test_tiny_run_reports_recall_and_precision_and_eval_reproduces_it(tmp_path, synthcrowd_dir):
  args = ["--config=retinaface_synthcrowd:tiny", f"--workdir={tmp_path}/run",
          f"--config.data.data_dir={synthcrowd_dir}"]
  result = train_then_eval(*args)
  assert "| faces | detections | recall | precision | AP |" in result.stdout
  assert "| face height (px) | faces | recall | detections | precision |" in result.stdout
  for name in ("results.md", "metrics.csv", "plots/curves.png", "checkpoints/4"):
    assert os.path.exists(tmp_path / "run" / name), name
  _check_bundled_detector(str(tmp_path / "run"), str(tmp_path / "model"))


def _check_bundled_detector(workdir: str, model_dir: str) -> None:
  """export_model's detector stage, read back by `emoflow predict`, detects as the run evaluated."""
  block, state, step = export_model._detector(workdir, parallel.make_data_mesh())
  assert step == 4 and block == {"trunk": "mobilenet0.25", "dtype": "float32",
                                 "input_scale": 0.25, "score_threshold": 0.5,
                                 "nms_threshold": 0.4}
  variables = jax.device_get(state.variables)
  # Threshold 0 so every slot fills: a 4-step network scores few faces above the run's 0.5.
  block = {**block, "score_threshold": 0.0}
  bundle.save(model_dir, {"emonet": {}, "group": {}, "detector": block},
              {"emonet": {}, "group": {}, "detector": variables})
  args = argparse.Namespace(video="v.mp4", annotations=None, detector="auto", max_faces=16,
                            model=model_dir, detector_scale=None)
  from_bundle = cli.make_detector(args, bundle.load(model_dir))
  reference = detect.RetinaFaceDetector(detection.make_model(load_config(
      workdir, "detection")), variables, score_threshold=0.0, max_faces=16, input_scale=0.25)
  frames = np.random.default_rng(0).integers(0, 256, (2, 96, 160, 3), np.uint8)
  got, want = jax.device_get(from_bundle(frames)), jax.device_get(reference(frames))
  assert got.valid.all()
  np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
  np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
