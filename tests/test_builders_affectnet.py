"""The affectnet builder on fake manual directories in both official layouts."""

import csv
import logging
import os

import numpy as np
import pytest

import fake_datasets
from data_pipelines import loaders
from data_pipelines.builders import affectnet, manual
from emoflow.labels import AFFECTNET_EXPRESSIONS
from emoflow.vision import align

CODES = {"train": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1], "validation": [7, 10, 3]}


@pytest.fixture(scope="module")
def csv_layout(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("affectnet_csv"))
  faces = fake_datasets.affectnet_csv(root, np.random.default_rng(0), CODES)
  # A row whose landmarks are missing, as some rows of the real lists are: skipped.
  with open(os.path.join(root, "Manually_Annotated_file_lists", "validation.csv"), "a",
            newline="") as f:
    csv.writer(f).writerow(["100/broken.jpg", 1, 1, 50, 50, "", 1, 0.0, 0.0])
  return root, faces


def test_five_points_averages_eyes_and_picks_nose_and_mouth_corners():
  points = np.stack([np.arange(68), 100 + np.arange(68)], 1)
  expected = [[38.5, 138.5], [44.5, 144.5], [30, 130], [48, 148], [54, 154]]
  np.testing.assert_allclose(affectnet.five_points(points), expected)
  five = np.array([[30, 40], [60, 41], [45, 60], [33, 75], [58, 76]], np.float32)
  np.testing.assert_allclose(affectnet.five_points(fake_datasets.landmarks68(five)), five, atol=1e-5)


@pytest.mark.parametrize("config, kept", [("classes8", 8), ("classes7", 7)])
def test_csv_layout_keeps_expression_codes_below_the_class_count(csv_layout, tmp_path, caplog,
                                                                config, kept):
  root, faces = csv_layout
  with caplog.at_level(logging.WARNING):
    builder = loaders.prepare("affectnet", config, str(tmp_path), root)
  assert "affectnet validation: skipped 1 faces with unusable annotations" in caplog.text
  assert builder.info.file_format.value == "array_record"
  assert builder.info.features["emotion"].names == list(AFFECTNET_EXPRESSIONS[:kept])
  for split, written in faces.items():
    records = fake_datasets.records_by_source(builder, split)
    expected = {f"affectnet/{path}": (code, face) for path, code, face in written if code < kept}
    assert sorted(records) == sorted(expected)
    for source, (code, face) in expected.items():
      record = records[source]
      assert record["emotion"] == code and record["image"].shape == (112, 112, 3)
      assert record["face_px"] == round(face.box[3] - face.box[1])


def test_csv_layout_aligns_with_the_mapped_landmarks(csv_layout, tmp_path):
  root, faces = csv_layout
  builder = loaders.prepare("affectnet", "classes8", str(tmp_path), root)
  records = fake_datasets.records_by_source(builder, "train")
  path, _, face = faces["train"][1]
  original = manual.read_rgb(os.path.join(root, "Manually_Annotated_Images", path))
  expected = align.align_face(original, np.array(face.landmarks, np.float32))
  assert np.abs(records[f"affectnet/{path}"]["image"].astype(int) - expected).mean() < 1.0


def test_npy_layout_reads_string_codes_and_uses_the_crop_height(tmp_path):
  root = str(tmp_path / "manual")
  faces = fake_datasets.affectnet_sets(root, np.random.default_rng(1), CODES)
  builder = loaders.prepare("affectnet", "classes7", str(tmp_path / "tfds"), root)
  for split, written in faces.items():
    records = fake_datasets.records_by_source(builder, split)
    folder = "train_set" if split == "train" else "val_set"
    expected = {f"affectnet/{folder}/{name}": code for name, code, _ in written if code < 7}
    assert {source: int(r["emotion"]) for source, r in records.items()} == expected
    assert all(r["face_px"] == 104 for r in records.values())


def test_missing_or_incomplete_manual_dir_is_a_one_line_error(tmp_path):
  missing = fake_datasets.build_error("affectnet", "classes7", str(tmp_path / "tfds"),
                                      str(tmp_path / "nowhere"))
  assert "does not exist" in missing and "Manually_Annotated_file_lists/training.csv" in missing
  (tmp_path / "manual" / "Manually_Annotated_Images").mkdir(parents=True)
  incomplete = fake_datasets.build_error("affectnet", "classes7", str(tmp_path / "tfds"),
                                         str(tmp_path / "manual"))
  assert ("lacks Manually_Annotated_file_lists/training.csv, "
          "Manually_Annotated_file_lists/validation.csv;") in incomplete
  assert "train_set/ and val_set/" in incomplete


def test_prepare_checks_the_manual_dir_before_tfds_prints_or_writes(tmp_path, capsys):
  data_dir = tmp_path / "tfds"
  (tmp_path / "manual" / "Manually_Annotated_Images").mkdir(parents=True)
  for manual_dir, problem in ((None, "does not exist"), (tmp_path / "manual", "lacks")):
    with pytest.raises(ValueError, match=f"^affectnet: manual directory .* {problem}") as error:
      loaders.prepare("affectnet", "classes7", str(data_dir), manual_dir and str(manual_dir))
    assert "\n" not in str(error.value)
  assert capsys.readouterr().out == ""
  assert not data_dir.exists()  # not even the default manual directory, data_dir/manual/affectnet
