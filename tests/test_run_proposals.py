"""The group proposal level through the runner: a tiny RPN run scored against k-means, its export
into a model directory, and experiments.compare_groupings' scoring."""

import os

import jax
import numpy as np
import pytest
from assets.runner import run_experiment, train_then_eval
from test_pipeline import _save_bundle

from emoflow import bundle
from emoflow.train import parallel
from experiments import compare_groupings, export_model
from experiments.configs import rpn_gecv, rpn_synthcrowd


def test_score_frame_counts_found_right_and_face_weighted_hits():
  face_group = np.array([0, 0, 0, 1, 1, 2, -1])
  labels = np.array([2, 1, 0])
  predicted = np.array([0, 0, 1, 1, 1, 2, 2])  # group 0 split 2+1, group 1 with an extra face
  predicted_labels = np.array([2, 0, 0])
  counts = compare_groupings.score_frame(face_group, labels, predicted, predicted_labels)
  # Jaccard: {0,1} vs {0,1,2}: 2/3, found and right; {2,3,4} vs {3,4}: 2/3, found but wrong
  # (0 != 1); {5,6} vs {5}: 1/2, not found (> 0.5 is needed). Faces labelled right: 2 of group
  # 0, none of group 1, the one of group 2.
  assert counts == {"groups": 3, "found": 2, "right": 1, "faces": 6, "faces_right": 3}
  # Every face alone: only the one-face group 2 is found; a two-face group is at 1/2.
  apart = compare_groupings.score_frame(face_group, labels, np.arange(7), np.zeros(7, int))
  assert apart == {"groups": 3, "found": 1, "right": 1, "faces": 6, "faces_right": 1}


@pytest.mark.slow
def test_tiny_run_scores_rpn_and_kmeans_and_eval_reproduces_it(tmp_path, synthcrowd_dir):
  args = ["--config=rpn_synthcrowd:tiny", f"--workdir={tmp_path}/run",
          f"--config.data.data_dir={synthcrowd_dir}"]
  result = train_then_eval(*args)
  assert "| grouping | mAP@0.5 | mAP@[0.5:0.95] | recall | precision | boxes per frame |" in \
      result.stdout
  for name in ("results.md", "results.json", "metrics.csv", "plots/curves.png", "checkpoints/4"):
    assert os.path.exists(tmp_path / "run" / name), name

  block, state, step = export_model._rpn(str(tmp_path / "run"), parallel.make_data_mesh())
  assert step == 4 and block["scales"] == [8.0, 20.0, 50.0] and block["input_scale"] == 0.25
  assert block["frame_size"] == [640, 360]  # frames_tiny's frames, before input_scale
  _save_bundle(tmp_path / "model", with_video=False)
  model = bundle.load(str(tmp_path / "model"))
  bundle.save(str(tmp_path / "model"), {**model.config, "rpn": {**block, "score_threshold": 0.0}},
              {**model.variables, "rpn": jax.device_get(state.variables)})
  totals = compare_groupings.compare(str(tmp_path / "model"), "synthcrowd/frames_tiny",
                                     "validation", synthcrowd_dir, progress=False)
  assert list(totals) == ["annotated", "kmeans", "rpn"]
  assert len({t["groups"] for t in totals.values()}) == 1 and totals["rpn"]["groups"] > 0
  annotated = totals["annotated"]
  assert annotated["found"] == annotated["groups"]  # the annotation's groups find themselves
  for t in totals.values():
    assert 0 <= t["right"] <= t["found"] <= t["groups"] and t["faces_right"] <= t["faces"]
  assert "| rpn | " in compare_groupings.table(totals, "t")


@pytest.mark.parametrize("config,frame_size", [(rpn_synthcrowd.get_config(), [640, 360]),
                                                (rpn_synthcrowd.get_config("tiny"), [640, 360]),
                                                (rpn_gecv.get_config(), None)],
                         ids=["rpn_synthcrowd", "rpn_synthcrowd:tiny", "rpn_gecv"])
def test_export_records_the_training_frame_size_where_the_dataset_fixes_one(tmp_path, config,
                                                                             frame_size):
  # SynthCrowd's frames configs render every frame at their crowd's size; GECV's keep each
  # video's. The builder's config says so: nothing is built or read.
  config.data.data_dir = str(tmp_path / "tfds")
  assert export_model.training_frame_size(config) == frame_size
  assert not os.path.exists(tmp_path / "tfds" / config.data.name)


@pytest.mark.parametrize("config", ["rpn_gecv"])
def test_gecv_config_without_data_is_one_line(tmp_path, config):
  result = run_experiment(f"--config={config}", f"--workdir={tmp_path}/run",
                          f"--config.data.data_dir={tmp_path}/tfds")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "gecv" in lines[0], lines
