"""The gecv builder and its public ingestion functions on a fake manual directory of real mp4s."""

import os

import numpy as np
import pytest

import fake_datasets
from data_pipelines import annotations, loaders
from data_pipelines.builders import gecv
from emoflow.labels import EMOTIONS, GROUP_EMOTIONS

SPARSE = [0, 3, 7, 12, 19]  # video b's annotated frames


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("gecv_manual"))
  rng = np.random.default_rng(0)
  fake_datasets.gecv_video(os.path.join(root, "train"), "a", rng)
  fake_datasets.gecv_video(os.path.join(root, "train"), "b", rng, annotated=SPARSE)
  fake_datasets.gecv_video(os.path.join(root, "val"), "c", rng, label="negative")
  return root  # no test/ folder: that split is optional


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("gecv_tfds"))


def _video(annotated, fps=10.0, num_frames=20):
  return annotations.Video(video="v.mp4", fps=fps, num_frames=num_frames, width=8, height=8,
                           label="neutral", frames=[annotations.Frame(index=i) for i in annotated])


def _indices(frames):
  return [frame.index for frame in frames]


def test_sample_frames_takes_the_nearest_annotated_frame_once():
  video = _video(SPARSE)  # 10 fps, 2 s
  assert _indices(gecv.sample_frames(video, 2.0)) == [0, 3, 12]  # times 0, .5 (tie: earlier), 1, 1.5
  assert _indices(gecv.sample_frames(video, 1.0)) == [0, 12]
  assert _indices(gecv.sample_frames(video, 10.0)) == SPARSE
  assert _indices(gecv.sample_frames(video, None)) == SPARSE
  assert _indices(gecv.sample_frames(_video(range(20)), 2.0)) == [0, 5, 10, 15]
  assert _indices(gecv.sample_frames(_video(range(30), fps=30.0, num_frames=30), 4.0)) == [0, 7, 15, 22]
  assert gecv.sample_frames(_video([]), 2.0) == []


def test_single_img_keeps_known_emotions_of_large_faces(manual_dir, data_dir):
  builder = loaders.prepare("gecv", "single_img", data_dir, manual_dir)
  assert builder.info.file_format.value == "array_record"
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 7, "validation": 4}
  train = fake_datasets.records_by_source(builder, "train")
  frames = sorted(source.rsplit("/", 2)[1] for source in train if "/b/" in source)
  assert frames == ["000000", "000003", "000012"]
  for record in train.values():
    assert record["image"].shape == (112, 112, 3) and record["image"].dtype == np.uint8
    assert record["emotion"] == EMOTIONS.index("happy") and record["face_px"] >= 100


def test_group_img_records_every_group_of_sampled_frames(manual_dir, data_dir):
  builder = loaders.prepare("gecv", "group_img", data_dir, manual_dir)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 14, "validation": 8}
  records = fake_datasets.records_by_source(builder, "train")
  pair, single = records["gecv/train/a/000005/g0"], records["gecv/train/a/000005/g1"]
  assert pair["label"] == GROUP_EMOTIONS.index("positive") and len(pair["faces"]) == 2
  assert pair["face_emotions"].tolist() == [EMOTIONS.index("happy"), EMOTIONS.index("sad")]
  assert pair["face_px"][0] > pair["face_px"][1]  # largest first
  assert pair["faces"][0].shape == (112, 112, 3)
  assert single["label"] == GROUP_EMOTIONS.index("negative")
  assert single["face_emotions"].tolist() == [-1]


def test_group_vid_is_one_clip_per_video_sampled_at_2_per_second(manual_dir, data_dir):
  builder = loaders.prepare("gecv", "group_vid", data_dir, manual_dir)
  clips = fake_datasets.records_by_source(builder, "train")
  assert sorted(clips) == ["gecv/train/a", "gecv/train/b"]
  a, b = clips["gecv/train/a"], clips["gecv/train/b"]
  assert a["frame_indices"].tolist() == [0, 5, 10, 15] and b["frame_indices"].tolist() == [0, 3, 12]
  assert a["fps"] == 10.0 and a["label"] == GROUP_EMOTIONS.index("positive")
  assert a["group_frame"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
  assert a["face_group"].tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7]
  assert len(a["faces"]) == 12
  (val,) = fake_datasets.records_by_source(builder, "validation").values()
  assert val["label"] == GROUP_EMOTIONS.index("negative")


def test_group_frames_hold_whole_frames_with_face_and_group_boxes(manual_dir, data_dir):
  builder = loaders.prepare("gecv", "group_frames", data_dir, manual_dir)
  frames = fake_datasets.records_by_source(builder, "train")
  assert len(frames) == 7  # the sampled frames of a (4) and b (3), as group_vid samples them
  frame = frames["gecv/train/a/000005"]
  video = annotations.load(os.path.join(manual_dir, "train", "a.json"))
  truth = next(f for f in video.frames if f.index == 5)
  assert frame["image"].shape == (video.height, video.width, 3)
  np.testing.assert_allclose(frame["group_boxes"], [g.box for g in truth.groups])
  assert frame["group_labels"].tolist() == [GROUP_EMOTIONS.index(g.label) for g in truth.groups]
  boxes = np.asarray([f.box for f in truth.faces], np.float32)
  for face_box, g in zip(frame["boxes"], frame["face_group"]):  # faces largest first, each in its group
    original = int(np.flatnonzero(np.all(np.isclose(boxes, face_box), 1))[0])
    assert truth.groups[g].faces.count(original) == 1


def test_ingestion_functions_serve_any_video_in_the_layout(manual_dir):
  paths = gecv.annotated_videos(os.path.join(manual_dir, "train"))
  assert [os.path.basename(p) for p in paths] == ["a.json", "b.json"]
  ((key, clip),) = gecv.video_examples(paths[0], "clips", frames_per_second=1.0,
                                       source_prefix="synthcrowd")
  assert key == "synthcrowd/a" and clip["frame_indices"].tolist() == [0, 10]
  faces = list(gecv.video_examples(paths[0], "faces", frames_per_second=1.0, min_face_px=1))
  assert [key for key, _ in faces] == ["gecv/a/000000/f0", "gecv/a/000000/f1",
                                       "gecv/a/000010/f0", "gecv/a/000010/f1"]  # f2: unknown emotion
  with pytest.raises(ValueError, match="unknown record kind 'boxes'"):
    list(gecv.video_examples(paths[0], "boxes"))


def test_whole_frame_group_boxes_all_faces():
  faces = [annotations.Face(box=[10, 20, 30, 50], landmarks=[[0, 0]] * 5),
           annotations.Face(box=[40, 5, 60, 25], landmarks=[[0, 0]] * 5)]
  frame = gecv.whole_frame_group(annotations.Frame(index=3, faces=faces), "negative")
  assert frame.label == "negative" and frame.index == 3
  (group,) = frame.groups
  assert group.box == [10, 5, 60, 50] and group.faces == [0, 1] and group.label == "negative"
  assert gecv.whole_frame_group(annotations.Frame(index=0), "positive").groups == []


def test_missing_or_incomplete_manual_dir_is_a_one_line_error(tmp_path):
  missing = fake_datasets.build_error("gecv", "group_img", str(tmp_path / "tfds"),
                                      str(tmp_path / "nowhere"))
  assert "nowhere does not exist" in missing and "train/ and val/" in missing
  (tmp_path / "manual" / "train").mkdir(parents=True)
  incomplete = fake_datasets.build_error("gecv", "group_img", str(tmp_path / "tfds"),
                                         str(tmp_path / "manual"))
  assert "lacks val;" in incomplete
  (tmp_path / "manual" / "val").mkdir()
  empty = fake_datasets.build_error("gecv", "group_img", str(tmp_path / "tfds"),
                                    str(tmp_path / "manual"))
  assert "lacks train/*.json" in empty


@pytest.mark.parametrize("config", ["single_img", "group_img", "group_vid", "group_frames"])
def test_prepare_checks_the_manual_dir_before_tfds_prints_or_writes(tmp_path, capsys, config):
  data_dir = tmp_path / "tfds"
  (tmp_path / "manual" / "train").mkdir(parents=True)
  for manual_dir, problem in ((None, "does not exist"), (tmp_path / "manual", "lacks val;")):
    with pytest.raises(ValueError, match=f"^gecv: manual directory .* {problem}") as error:
      loaders.prepare("gecv", config, str(data_dir), manual_dir and str(manual_dir))
    assert "\n" not in str(error.value)
  assert capsys.readouterr().out == ""
  assert not data_dir.exists()  # not even the default manual directory, data_dir/manual/gecv
