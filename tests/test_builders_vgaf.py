"""The vgaf builder on a fake VGAF manual directory: real mp4s, labels files, detections."""

import logging
import shutil

import numpy as np
import pytest

import fake_datasets
from data_pipelines import loaders
from data_pipelines.builders import vgaf
from emoflow.labels import GROUP_EMOTIONS

LABELS = {"Train": {"2_1": 1, "2_2": 3, "2_3": 2, "2_4": 1}, "Val": {"5_1": 2}}


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("vgaf_manual"))
  fake_datasets.vgaf(root, np.random.default_rng(0), LABELS, faceless={"2_4"})
  return root


def test_labels_file_numbers_map_to_group_emotions(tmp_path):
  path = tmp_path / "Train_labels.txt"
  path.write_text("Vid_name Label\n1_1 1\n1_2 2\n1_3 3\n")
  assert vgaf.read_labels(str(path)) == {"1_1": "positive", "1_2": "neutral", "1_3": "negative"}
  path.write_text("Vid_name Label\n1_1 4\n")
  with pytest.raises(ValueError, match=r"Train_labels.txt:2: expected 'NAME LABEL'.*got '1_1 4'$"):
    vgaf.read_labels(str(path))


def test_clips_carry_the_video_label_on_every_frame_and_group(manual_dir, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    builder = loaders.prepare("vgaf", "clips", str(tmp_path), manual_dir)
  assert builder.info.file_format.value == "array_record"
  assert "vgaf train: skipped 1 of 4 videos with no detected face" in caplog.text
  clips = fake_datasets.records_by_source(builder, "train")
  expected = {"vgaf/train/2_1": "positive", "vgaf/train/2_2": "negative", "vgaf/train/2_3": "neutral"}
  assert {source: int(clip["label"]) for source, clip in clips.items()} == {
      source: GROUP_EMOTIONS.index(label) for source, label in expected.items()}
  for clip in clips.values():
    label = int(clip["label"])
    assert clip["frame_indices"].tolist() == [0, 4, 10, 14]  # detections every 2nd frame, 2/s
    assert clip["frame_labels"].tolist() == [label] * 4 and clip["group_labels"].tolist() == [label] * 4
    assert clip["group_frame"].tolist() == [0, 1, 2, 3]
    assert clip["face_group"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert len(clip["faces"]) == 12 and clip["faces"][0].shape == (112, 112, 3)
    assert clip["fps"] == 10.0
  (val,) = fake_datasets.records_by_source(builder, "validation").values()
  assert val["label"] == GROUP_EMOTIONS.index("neutral")


def test_missing_videos_and_broken_detections_are_one_line_errors(manual_dir, tmp_path):
  # Missing detections are written by the builder: tests/test_detect_faces.py.
  copy = tmp_path / "manual"
  shutil.copytree(manual_dir, copy, ignore=shutil.ignore_patterns("2_2.mp4"))
  message = fake_datasets.build_error("vgaf", "clips", str(tmp_path / "tfds"), str(copy))
  assert "1 of the 4 videos in Train_labels.txt have no Train/NAME.mp4" in message
  assert "(first: 2_2)" in message
  shutil.copy(f"{manual_dir}/Train/2_2.mp4", copy / "Train")
  (copy / "detections" / "Train" / "2_1.json").write_text("{}")
  message = fake_datasets.build_error("vgaf", "clips", str(tmp_path / "tfds"), str(copy))
  assert message.startswith(f"{copy}/detections/Train/2_1.json: not a readable video annotation")


def test_missing_or_incomplete_manual_dir_is_a_one_line_error(tmp_path):
  missing = fake_datasets.build_error("vgaf", "clips", str(tmp_path / "tfds"),
                                      str(tmp_path / "nowhere"))
  assert "does not exist" in missing and "Train_labels.txt and Val_labels.txt" in missing
  (tmp_path / "manual" / "Train").mkdir(parents=True)
  (tmp_path / "manual" / "Train_labels.txt").write_text("Vid_name Label\n")
  incomplete = fake_datasets.build_error("vgaf", "clips", str(tmp_path / "tfds"),
                                         str(tmp_path / "manual"))
  assert "lacks Val, Val_labels.txt;" in incomplete


def test_prepare_checks_the_manual_dir_before_tfds_prints_or_writes(manual_dir, tmp_path, capsys):
  data_dir, copy = tmp_path / "tfds", tmp_path / "manual"
  shutil.copytree(manual_dir, copy, ignore=shutil.ignore_patterns("2_3.mp4"))
  for manual, problem in ((None, "manual directory .* does not exist"),
                          (copy, "1 of the 4 videos in Train_labels.txt have no Train/NAME.mp4")):
    with pytest.raises(ValueError, match=f"^vgaf: .*{problem}") as error:
      loaders.prepare("vgaf", "clips", str(data_dir), manual and str(manual))
    assert "\n" not in str(error.value)
  assert capsys.readouterr().out == ""
  assert not data_dir.exists()  # not even the default manual directory, data_dir/manual/vgaf
