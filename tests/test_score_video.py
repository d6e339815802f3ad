"""experiments.score_video: predictions scored against an annotation, on a case worked by hand."""

import dataclasses
import json
import subprocess
import sys

import pytest
from assets.runner import ROOT

from data_pipelines import annotations
from data_pipelines.annotations import Face, Frame, Video
from experiments import score_video

LANDMARKS = [[0, 0]] * 5


def _truth() -> Video:
  a0, b, c = ([0, 0, 10, 10], "happy", 0), ([50, 50, 60, 60], "sad", 1), ([95, 95, 110, 110], None, 2)
  a1, gone = ([1, 0, 11, 10], "happy", 0), ([120, 10, 130, 20], "sad", 3)  # gone: out of frame
  faces = lambda *rows: [Face(box, LANDMARKS, emotion, track) for box, emotion, track in rows]
  return Video("v.mp4", 5.0, 10, 100, 100, "negative",
               [Frame(0, "positive", faces(a0, b, c)), Frame(1, "negative", faces(a1, gone, b))])


def _face(box, emotion, score, track) -> dict:
  return {"box": box, "emotion": emotion, "detection_score": score, "track": track}


def _predictions() -> dict:
  frames = [
      {"index": 0, "label": "positive", "faces": [
          _face([0, 0, 10, 10], "happy", 0.9, 0), _face([50, 50, 60, 60], "angry", 0.8, 1),
          _face([95, 95, 100, 100], "neutral", 0.7, 2)]},  # matches c only once c is clipped
      {"index": 1, "label": "positive", "faces": [
          _face([1, 0, 11, 10], "happy", 0.9, 0), _face([50, 50, 60, 60], "sad", 0.6, 5),
          _face([30, 30, 40, 40], "sad", 0.5, 9),  # b changes id; a false detection
          _face([120, 10, 130, 20], "sad", 0.99, 3)]},  # out of the frame: counts on neither side
      {"index": 7, "label": "unknown", "faces": []}]  # no annotation: skipped
  return {"label": "positive", "frames": frames, "tracks": [{"track": k} for k in (0, 1, 2, 3, 5, 9)],
          "scores_mean_of_frames": {"positive": 0.2, "negative": 0.5, "neutral": 0.3}}


def test_scores_match_the_hand_count():
  s = score_video.score(_predictions(), _truth())
  assert (s["frames"], s["frames_skipped"], s["faces"], s["detections"]) == (2, 1, 5, 6)
  assert s["recall"] == 1.0 and s["precision"] == pytest.approx(5 / 6)
  assert s["AP"] == pytest.approx(1.0)  # the false detection has the lowest score
  assert s["emotion_faces"] == 4 and s["emotion_accuracy"] == 0.75  # c carries no emotion
  assert s["labelled_frames"] == 2 and s["frame_accuracy"] == 0.5
  assert (s["video_label"], s["video_last"], s["video_mean"]) == ("negative", "positive",
                                                                   "negative")
  assert s["annotated_tracks"] == 3 and s["predicted_tracks"] == 6
  assert s["ids_per_track"] == pytest.approx(4 / 3)  # track 1 seen as ids 1 and 5
  assert s["id_kept"] == 0.5  # track 0 kept its id, track 1 did not


@pytest.mark.slow
def test_command_prints_tables_and_mistakes_are_one_line(tmp_path):
  predictions, truth = tmp_path / "predictions.json", tmp_path / "v.json"
  predictions.write_text(json.dumps(_predictions()))
  truth.write_text(json.dumps(dataclasses.asdict(_truth())))
  assert annotations.load(str(truth)) == _truth()

  def run(*args):
    return subprocess.run([sys.executable, "-m", "experiments.score_video", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)

  result = run(f"--predictions={predictions}", f"--annotations={truth}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| 5 | 6 | 1.0000 | 0.8333 | 1.0000 | 0.7500 (4 faces) |" in result.stdout
  (tmp_path / "bad.json").write_text(json.dumps({"label": "positive", "frames": [
      {"index": 0, "faces": [{"box": [0, 0, 1, 1]}]}]}))
  cases = {(f"--predictions={tmp_path}/none.json", f"--annotations={truth}"):
               f"error: {tmp_path}/none.json does not exist",
           (f"--predictions={tmp_path}/bad.json", f"--annotations={truth}"):
               f"error: {tmp_path}/bad.json: not an emoflow predictions file "
               "('detection_score, emotion')",
           (f"--predictions={predictions}",): "error: --annotations is required"}
  for args, message in cases.items():
    result = run(*args)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [message], args
