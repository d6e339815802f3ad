"""The emotiw_gaf builder on a fake GAF manual directory with mixed-case folder names."""

import json
import logging
import shutil

import cv2
import numpy as np
import pytest

import fake_datasets
from data_pipelines import loaders
from emoflow.labels import GROUP_EMOTIONS

# (split folder, class folder) -> faces per image; spellings differ on purpose.
IMAGES = {
    ("Train", "Positive"): [2, 1], ("Train", "negative"): [3], ("Train", "NEUTRAL"): [1, 0],
    ("Validation", "positive"): [1], ("Validation", "Negative"): [2], ("Validation", "neutral"): [0, 1],
}


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("gaf_manual"))
  return root, fake_datasets.gaf(root, np.random.default_rng(0), IMAGES)


def test_groups_per_image_labelled_by_folder_and_faceless_images_skipped(manual_dir, tmp_path, caplog):
  root, detections = manual_dir
  with caplog.at_level(logging.WARNING):
    builder = loaders.prepare("emotiw_gaf", "groups", str(tmp_path), root)
  assert builder.info.file_format.value == "array_record"
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 4, "validation": 3}
  assert "emotiw_gaf train: skipped 1 of 5 images with no detected face" in caplog.text
  assert "emotiw_gaf validation: skipped 1 of 4 images with no detected face" in caplog.text
  for split in ("train", "validation"):
    for source, record in fake_datasets.records_by_source(builder, split).items():
      relative = source.removeprefix("emotiw_gaf/").removesuffix("/g0")
      folder = relative.split("/")[1].lower()
      assert record["label"] == GROUP_EMOTIONS.index(folder)
      boxes = np.array([face["box"] for face in detections[relative]], np.float32)
      assert len(record["faces"]) == len(boxes) and record["faces"][0].shape == (112, 112, 3)
      np.testing.assert_allclose(record["group_box"], [*boxes[:, :2].min(0), *boxes[:, 2:].max(0)])
      assert record["face_emotions"].tolist() == [-1] * len(boxes)  # GAF has no individual labels


def test_stale_detections_file_says_which_file_and_how_to_redo_it(manual_dir, tmp_path):
  # A missing detections.json is written by the builder: tests/test_detect_faces.py.
  root, detections = manual_dir
  copy = tmp_path / "manual"
  shutil.copytree(root, copy, ignore=shutil.ignore_patterns("detections.json"))
  stale = dict(list(detections.items())[1:])
  (copy / "detections.json").write_text(json.dumps(stale))
  message = fake_datasets.build_error("emotiw_gaf", "groups", str(tmp_path / "tfds"), str(copy))
  assert "has no entry for 1 of the 5 train images" in message and "rerun the detector" in message


def test_missing_or_incomplete_manual_dir_is_a_one_line_error(tmp_path):
  missing = fake_datasets.build_error("emotiw_gaf", "groups", str(tmp_path / "tfds"),
                                      str(tmp_path / "nowhere"))
  assert "does not exist" in missing and "Positive/, Negative/ and Neutral/" in missing
  for label in ("Positive", "Negative", "Neutral"):
    (tmp_path / "manual" / "Train" / label).mkdir(parents=True)
  (tmp_path / "manual" / "Val" / "Positive").mkdir(parents=True)
  incomplete = fake_datasets.build_error("emotiw_gaf", "groups", str(tmp_path / "tfds"),
                                         str(tmp_path / "manual"))
  assert "lacks val|validation/negative, val|validation/neutral;" in incomplete


def test_prepare_checks_the_manual_dir_before_tfds_prints_or_writes(manual_dir, tmp_path, capsys):
  data_dir, copy = tmp_path / "tfds", tmp_path / "manual"
  shutil.copytree(manual_dir[0], copy)
  (copy / "detections.json").write_text("{}")
  for manual, problem in ((None, "manual directory .* does not exist"),
                          (copy, "detections.json has no entry for 5 of the 5 train images")):
    with pytest.raises(ValueError, match=f"^emotiw_gaf: .*{problem}") as error:
      loaders.prepare("emotiw_gaf", "groups", str(data_dir), manual and str(manual))
    assert "\n" not in str(error.value)
  assert capsys.readouterr().out == ""
  assert not data_dir.exists()  # not even the default manual directory, data_dir/manual/emotiw_gaf


@pytest.mark.parametrize("damage", ["corrupt", "grey-scale", "4-channel"])
def test_odd_or_broken_images_in_the_manual_dir(tmp_path, damage):
  root = str(tmp_path / "manual")
  fake_datasets.gaf(root, np.random.default_rng(1), IMAGES)
  path = tmp_path / "manual" / "Train" / "Positive" / "img_001.jpg"  # its one face
  image = cv2.imread(str(path))
  if damage == "corrupt":
    path.write_bytes(path.read_bytes()[:100])
  elif damage == "grey-scale":
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
  else:
    path = path.with_suffix(".png")  # detections.json names the .jpg: keep that name, PNG inside
    cv2.imwrite(str(path), np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], -1))
    path.rename(path.with_suffix(".jpg"))
  if damage == "corrupt":
    with pytest.raises(ValueError, match=r"img_001\.jpg: cannot read as an image"):
      loaders.prepare("emotiw_gaf", "groups", str(tmp_path / "tfds"), root)
    return
  builder = loaders.prepare("emotiw_gaf", "groups", str(tmp_path / "tfds"), root)
  records = fake_datasets.records_by_source(builder, "train")
  assert all(r["faces"][0].shape == (112, 112, 3) for r in records.values())
  assert len(records) == 4  # as with the undamaged images
