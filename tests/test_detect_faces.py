"""data_pipelines.detect_faces: GAF and VGAF detections from a detector, and the builders on them."""

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from assets.runner import run_experiment

import fake_datasets
from data_pipelines import annotations, detect_faces, loaders, real_photos
from data_pipelines.builders import manual
from emoflow import metrics
from emoflow.labels import GROUP_EMOTIONS
from emoflow.vision import detect
from emoflow.vision import video as vision_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (split folder, class folder) -> faces per image, as tests/test_builders_gaf.py.
GAF_IMAGES = {
    ("Train", "Positive"): [2, 1], ("Train", "negative"): [3], ("Train", "NEUTRAL"): [1, 0],
    ("Validation", "positive"): [1], ("Validation", "Negative"): [2], ("Validation", "neutral"): [0, 1],
}
VGAF_LABELS = {"Train": {"2_1": 1, "2_2": 3, "2_3": 2}, "Val": {"5_1": 2}}


class FakeDetector:
  """Faces looked up by a frame's pixels (none for an unknown frame); records each call's shape."""

  def __init__(self, faces_of, max_faces: int = 64, fail_after: int | None = None):
    self.faces_of = faces_of  # frame -> [{"box", "landmarks"}]
    self.max_faces = max_faces
    self.fail_after = fail_after
    self.calls = []

  def __call__(self, frames: np.ndarray, indices=None) -> detect.Detections:
    if self.fail_after is not None and len(self.calls) == self.fail_after:
      raise RuntimeError("detector interrupted")
    self.calls.append(frames.shape)
    faces = [self.faces_of(frame) for frame in frames]
    return detect.Detections.from_lists(
        [(np.array([f["box"] for f in fs], np.float32).reshape(-1, 4),
          np.array([f["landmarks"] for f in fs], np.float32).reshape(-1, 5, 2),
          np.linspace(1, 0.5, len(fs))) for fs in faces], self.max_faces)


def _rounded(faces: list) -> list:
  return [{"box": np.round(np.float32(f["box"]).astype(np.float64), 2).tolist(),
           "landmarks": np.round(np.float32(f["landmarks"]).astype(np.float64), 2).tolist()}
          for f in faces]


def _gaf(root: str) -> tuple[dict, FakeDetector]:
  """A GAF manual dir without detections.json (one image twice as large), its true faces and a
  fake detector that finds them."""
  truth = fake_datasets.gaf(root, np.random.default_rng(0), GAF_IMAGES)
  os.remove(os.path.join(root, "detections.json"))
  big = os.path.join(root, "Train", "negative", "img_000.jpg")
  fake_datasets.write_image(big, np.repeat(np.repeat(manual.read_rgb(big), 2, 0), 2, 1))
  truth["Train/negative/img_000.jpg"] = [
      {"box": (np.float32(f["box"]) * 2).tolist(), "landmarks": (np.float32(f["landmarks"]) * 2).tolist()}
      for f in truth["Train/negative/img_000.jpg"]]
  by_pixels = {_padded(manual.read_rgb(os.path.join(root, key))).tobytes(): faces
               for key, faces in truth.items()}
  return truth, FakeDetector(lambda frame: by_pixels.get(frame.tobytes(), []))


def _padded(image: np.ndarray) -> np.ndarray:
  """An image as the detector sees it: zero-padded to multiples of 256 px."""
  height, width, _ = image.shape
  return np.pad(image, ((0, -height % 256), (0, -width % 256), (0, 0)))


def test_gaf_detections_file_then_the_builder_builds_from_it(tmp_path):
  root = str(tmp_path / "manual")
  truth, detector = _gaf(root)
  path = detect_faces.write_gaf_detections(root, detector, progress=False)
  assert path == os.path.join(root, "detections.json")
  with open(path) as f:
    written = json.load(f)
  assert written == {key: _rounded(faces) for key, faces in truth.items()}
  assert written["Train/NEUTRAL/img_001.jpg"] == [] and written["Validation/neutral/img_000.jpg"] == []
  # One at a time, by split, class (positive, negative, neutral) and name, padded to 256 px steps.
  assert detector.calls == [(1, 256, 256, 3)] * 2 + [(1, 256, 512, 3)] + [(1, 256, 256, 3)] * 6
  builder = loaders.prepare("emotiw_gaf", "groups", str(tmp_path / "tfds"), root)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 4, "validation": 3}
  for source, record in fake_datasets.records_by_source(builder, "train").items():
    relative = source.removeprefix("emotiw_gaf/").removesuffix("/g0")
    assert record["label"] == GROUP_EMOTIONS.index(relative.split("/")[1].lower())
    assert len(record["faces"]) == len(truth[relative])


def _vgaf(root: str) -> tuple[list, FakeDetector]:
  """A VGAF manual dir without detections: 2_1 at 25 fps (30 frames), 2_3 blank, the rest 10 fps
  (20 frames); the faces a fake detector finds in every frame but the blank ones, and it."""
  rng = np.random.default_rng(0)
  crowd = None
  for folder, videos in VGAF_LABELS.items():
    with open(os.path.join(root, f"{folder}_labels.txt"), "w") as f:
      f.write("Vid_name Label\n" + "".join(f"{name} {number}\n" for name, number in videos.items()))
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    for name in videos:
      path = os.path.join(root, folder, f"{name}.mp4")
      if name == "2_3":
        with vision_video.write_video(path, 10.0, (320, 240)) as write:
          for _ in range(20):
            write(np.full((240, 320, 3), 128, np.uint8))
        continue
      fps, count = (25.0, 30) if name == "2_1" else (10.0, 20)
      faces = fake_datasets.crowd_video(path, rng, fps, count)
      crowd = crowd or [{"box": face.box, "landmarks": face.landmarks} for face in faces]
  return crowd, FakeDetector(lambda frame: crowd if frame[:240, :320].std() > 5 else [])


def test_vgaf_detections_at_the_builders_frames_then_the_builder_builds(tmp_path, caplog):
  root = str(tmp_path / "manual")
  os.makedirs(root)
  crowd, detector = _vgaf(root)
  assert detect_faces.write_vgaf_detections(root, detector, progress=False) == 4
  expected_frames = {"2_1": [0, 12, 25], "2_2": [0, 5, 10, 15], "2_3": [0, 5, 10, 15],
                     "5_1": [0, 5, 10, 15]}  # 2 frames/s: 12.5 -> 12 (the builder's tie rule)
  for folder, videos in VGAF_LABELS.items():
    for name in videos:
      video = annotations.load(os.path.join(root, "detections", folder, f"{name}.json"))
      assert [frame.index for frame in video.frames] == expected_frames[name]
      assert (video.video, video.label, video.width, video.height) == (f"{name}.mp4", "neutral",
                                                                        320, 240)
      assert (video.fps, video.num_frames) == ((25.0, 30) if name == "2_1" else (10.0, 20))
      for frame in video.frames:
        assert frame.label is None and frame.groups == []
        assert [dataclass_face(face) for face in frame.faces] == _rounded(
            [] if name == "2_3" else crowd)
  with caplog.at_level(logging.WARNING):
    builder = loaders.prepare("vgaf", "clips", str(tmp_path / "tfds"), root)
  assert "vgaf train: skipped 1 of 3 videos with no detected face" in caplog.text
  clips = fake_datasets.records_by_source(builder, "train")
  assert sorted(clips) == ["vgaf/train/2_1", "vgaf/train/2_2"]
  assert clips["vgaf/train/2_1"]["frame_indices"].tolist() == [0, 12, 25]
  assert clips["vgaf/train/2_2"]["frame_indices"].tolist() == [0, 5, 10, 15]
  assert int(clips["vgaf/train/2_2"]["label"]) == GROUP_EMOTIONS.index("negative")
  assert len(clips["vgaf/train/2_2"]["faces"]) == 12


def dataclass_face(face: annotations.Face) -> dict:
  assert face.emotion is None and face.track is None
  return {"box": face.box, "landmarks": face.landmarks}


def _leftovers(directory) -> list[str]:
  """Temporary files (atomic_open's hidden names) anywhere below `directory`."""
  return [name for _, _, names in os.walk(directory) for name in names if name.startswith(".")]


def test_an_interrupted_vgaf_run_keeps_finished_videos_and_resumes(tmp_path):
  root = str(tmp_path / "manual")
  os.makedirs(root)
  _, detector = _vgaf(root)
  detector.fail_after = 1  # one call per video: 4 frames or fewer, padded to a batch of 8
  with pytest.raises(RuntimeError, match="interrupted"):
    detect_faces.write_vgaf_detections(root, detector, progress=False)
  done = sorted(os.listdir(os.path.join(root, "detections", "Train")))
  assert done == ["2_1.json"] and not _leftovers(root)
  before = os.path.getmtime(os.path.join(root, "detections", "Train", "2_1.json"))
  detector.fail_after, detector.calls = None, []
  assert detect_faces.write_vgaf_detections(root, detector, progress=False) == 3
  assert detector.calls == [(8, 256, 512, 3)] * 3  # 2_1 is not read again
  assert os.path.getmtime(os.path.join(root, "detections", "Train", "2_1.json")) == before
  assert detect_faces.write_vgaf_detections(root, detector, progress=False) == 0


def test_an_interrupted_gaf_run_leaves_no_file(tmp_path):
  root = str(tmp_path / "manual")
  _, detector = _gaf(root)
  detector.fail_after = 3
  with pytest.raises(RuntimeError, match="interrupted"):
    detect_faces.write_gaf_detections(root, detector, progress=False)
  assert manual.find(root, "detections.json") is None and not _leftovers(root)


def _args(manual_dir, dataset="emotiw_gaf", *extra) -> argparse.Namespace:
  parser = argparse.ArgumentParser()
  detect_faces.add_arguments(parser)
  return parser.parse_args([str(manual_dir), "--dataset", dataset, "--quiet", *extra])


@pytest.fixture
def fake_mtcnn(monkeypatch):
  """Registers a fake `mtcnn` in emoflow.vision.detect; set .detector to the FakeDetector to use."""
  made = argparse.Namespace(detector=None, kwargs=[])

  def make(**kwargs):
    made.kwargs.append(kwargs)
    return made.detector
  monkeypatch.setitem(detect._REGISTRY, "mtcnn", make)
  return made


def test_the_builders_detect_missing_faces_themselves(tmp_path, fake_mtcnn, caplog):
  gaf_root, vgaf_root = str(tmp_path / "gaf"), str(tmp_path / "vgaf")
  os.makedirs(vgaf_root)
  truth, fake_mtcnn.detector = _gaf(gaf_root)
  caplog.set_level(logging.WARNING)
  builder = loaders.prepare("emotiw_gaf", "groups", str(tmp_path / "tfds"), gaf_root)
  assert (f"emotiw_gaf: {gaf_root} has no face detections for 9 images: detecting them with "
          "MTCNN and writing them there, once") in caplog.text
  assert builder.info.splits["train"].num_examples == 4
  with open(os.path.join(gaf_root, "detections.json")) as f:
    assert json.load(f) == {key: _rounded(faces) for key, faces in truth.items()}
  _, fake_mtcnn.detector = _vgaf(vgaf_root)
  shutil.copytree(os.path.join(vgaf_root, "Train"), os.path.join(vgaf_root, "detections", "Train"),
                  ignore=shutil.ignore_patterns("*.mp4"))  # an empty detections/Train/
  builder = fake_datasets.build("vgaf", "clips", str(tmp_path / "tfds"), vgaf_root)  # no check first
  assert f"vgaf: {vgaf_root} has no face detections for 4 videos" in caplog.text
  assert builder.info.splits["train"].num_examples == 2
  assert fake_mtcnn.kwargs == [{"max_faces": detect_faces.MAX_FACES}] * 2


def test_a_read_only_manual_dir_names_the_command_and_out_makes_a_buildable_copy(
    tmp_path, fake_mtcnn, monkeypatch, capsys):
  root, out = str(tmp_path / "manual"), str(tmp_path / "writable")
  truth, fake_mtcnn.detector = _gaf(root)
  access = os.access
  monkeypatch.setattr(os, "access", lambda path, mode: not str(path).startswith(root)
                      and access(path, mode))
  message = fake_datasets.build_error("emotiw_gaf", "groups", str(tmp_path / "tfds"), root)
  assert message == (f"emotiw_gaf: {root} has no face detections and cannot be written to: run "
                     f"`python -m data_pipelines.detect_faces {root} --dataset emotiw_gaf --out "
                     "DIR` and build from DIR (--config.data.manual_dir=DIR)")
  with pytest.raises(ValueError, match=f"^{root} cannot be written to; .* with --out DIR$"):
    detect_faces.main(_args(root))
  capsys.readouterr()
  detect_faces.main(_args(root, "emotiw_gaf", "--out", out, "--max-faces", "2"))
  assert capsys.readouterr().out.startswith(f"{out}/detections.json: the faces of 9 images, in ")
  assert fake_mtcnn.kwargs == [{"max_faces": 2}]
  assert sorted(os.listdir(out)) == ["Train", "Validation", "detections.json"]
  assert os.path.islink(os.path.join(out, "Train")) and manual.find(root, "detections.json") is None
  builder = loaders.prepare("emotiw_gaf", "groups", str(tmp_path / "tfds"), out)
  records = fake_datasets.records_by_source(builder, "train")
  assert {source: len(r["faces"]) for source, r in records.items()} == {
      f"emotiw_gaf/{key}/g0": len(faces) for key, faces in truth.items()
      if key.startswith("Train/") and faces}


def test_user_mistakes_are_one_line_errors(tmp_path):
  (tmp_path / "gaf" / "Train" / "Positive").mkdir(parents=True)
  with pytest.raises(ValueError, match=r"^emotiw_gaf: manual directory .*/gaf lacks "
                     r"train/negative, .*; expected train/ and val/ folders"):
    detect_faces.main(_args(tmp_path / "gaf"))
  with pytest.raises(ValueError, match=r"^vgaf: manual directory .*/nowhere does not exist"):
    detect_faces.main(_args(tmp_path / "nowhere", "vgaf"))
  root = tmp_path / "vgaf"
  for folder in ("Train", "Val"):
    (root / folder).mkdir(parents=True)
    (root / f"{folder}_labels.txt").write_text("Vid_name Label\n1_1 1\n")
  with pytest.raises(ValueError, match=r"^vgaf: 1 of the 1 videos in Train_labels.txt have no "
                     r"Train/NAME.mp4 under .*/vgaf \(first: 1_1\)$"):
    detect_faces.main(_args(root, "vgaf"))
  with pytest.raises(ValueError, match="^--max-faces must be at least 1, got 0$"):
    detect_faces.main(_args(root, "vgaf", "--max-faces", "0"))
  assert not (root / "detections").exists()


def test_command_line_exit_code_2_and_one_line_for_a_directory_off_the_layout(tmp_path):
  (tmp_path / "Train").mkdir()
  result = subprocess.run([sys.executable, "-m", "data_pipelines.detect_faces", str(tmp_path),
                           "--dataset", "emotiw_gaf"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stdout == ""
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith(f"error: emotiw_gaf: manual directory {tmp_path} lacks train/positive")


# Folder -> (photo, scale, mirrored); the full-size astronaut is left out: MTCNN also finds a
# "face" (score 0.87) on her shoulder patch there. Padded, the images have 2 shapes (2 compiles).
PHOTO_LAYOUT = {"Train/Positive": [("astronaut", 0.75, False), ("grace_hopper", 1, False)],
                "Train/Negative": [("camera", 1, False), ("astronaut", 0.75, True)],
                "Train/Neutral": [("grace_hopper", 0.75, False), ("camera", 1, True)],
                "Val/Positive": [("camera", 0.75, False)], "Val/Negative": [("grace_hopper", 1, True)],
                "Val/Neutral": [("astronaut", 0.75, True)]}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[str, str, dict]:
  """(manual dir of real photos in the GAF layout, without detections.json; TFDS data dir with
  emotiw_gaf/groups built from it; detections.json key -> the true face box)."""
  root, data_dir = (str(tmp_path_factory.mktemp(name)) for name in ("photos", "tfds"))
  boxes = {}
  for folder, items in PHOTO_LAYOUT.items():
    for k, (name, scale, mirrored) in enumerate(items):
      image = cv2.resize(real_photos.load(name), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
      box = np.float32(real_photos.FACE_BOXES[name]) * scale
      if mirrored:
        image, box = image[:, ::-1], np.float32([image.shape[1] - box[2], box[1],
                                                 image.shape[1] - box[0], box[3]])
      fake_datasets.write_image(os.path.join(root, folder, f"{name}_{k}.jpg"), image)
      boxes[f"{folder}/{name}_{k}.jpg"] = box
  loaders.prepare("emotiw_gaf", "groups", data_dir, root)
  return root, data_dir, boxes


@pytest.mark.slow
def test_building_gaf_from_real_photos_detects_one_face_each_with_mtcnn(photos):
  root, data_dir, boxes = photos  # ~45 s on 2 cores, most of it compiling MTCNN for 2 shapes
  with open(os.path.join(root, "detections.json")) as f:
    detections = json.load(f)
  assert sorted(detections) == sorted(boxes)
  for key, faces in detections.items():
    assert len(faces) == 1, (key, faces)
    assert metrics.box_iou_matrix(faces[0]["box"], boxes[key])[0, 0] > 0.5, (key, faces[0]["box"], boxes[key])
  builder = loaders.make_builder("emotiw_gaf", "groups", data_dir)
  for split, count in (("train", 6), ("validation", 3)):
    records = fake_datasets.records_by_source(builder, split)
    assert len(records) == count
    for source, record in records.items():
      assert len(record["faces"]) == 1 and record["faces"][0].shape == (112, 112, 3)
      assert record["label"] == GROUP_EMOTIONS.index(source.split("/")[2].lower())


@pytest.mark.slow
def test_nvpf_emotiw_runs_from_a_gaf_directory_without_detections(photos, emonet_run, tmp_path):
  root, data_dir, _ = photos  # ~15 s: the dataset is built (and its faces detected) once, above
  result = run_experiment("--config=nvpf_emotiw:fea", f"--config.data.manual_dir={root}",
                          f"--config.data.data_dir={data_dir}", "--config.num_steps=2",
                          f"--config.features.emonet_workdir={emonet_run}",
                          f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| EmoNet | averaging (FeA) | score | 3 |" in result.stdout
