"""SynthCrowd groups and clips datasets: rendered frames and videos become canonical records."""

import os

import cv2
import numpy as np
import pytest

from data_pipelines import annotations, loaders
from data_pipelines.builders import synthcrowd
from emoflow.labels import GROUP_EMOTIONS


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def groups(data_dir):
  return loaders.prepare("synthcrowd", "groups_tiny", data_dir)


@pytest.fixture(scope="module")
def clips(data_dir):
  return loaders.prepare("synthcrowd", "clips_tiny", data_dir)


@pytest.mark.slow
def test_groups_are_the_groups_of_the_rendered_frames(groups):
  source = loaders.split_source(groups, "validation")
  stored = {_text(source[i]["source"]): source[i] for i in range(len(source))}
  expected = [pair for index in range(8) for pair in synthcrowd.render_group_records(
      0, "validation", index, synthcrowd._TINY_CROWD)]
  assert sorted(stored) == sorted(key for key, _ in expected)
  for key, example in expected[:6]:
    record = stored[key]
    assert record["label"] == example["label"] and record["label"] < len(GROUP_EMOTIONS)
    np.testing.assert_array_equal(record["face_boxes"], example["face_boxes"])
    np.testing.assert_array_equal(record["face_emotions"], example["face_emotions"])
    decoded = [cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
               for jpeg in example["faces"]]
    np.testing.assert_array_equal(np.stack(record["faces"]), np.stack(decoded))
    assert np.all(np.diff(record["face_px"]) <= 0)  # largest face first


@pytest.mark.slow
def test_clips_come_from_videos_in_the_gecv_layout(groups, clips, data_dir):
  del groups  # built first in the same data_dir
  video_dir = os.path.join(data_dir, "downloads", "synthcrowd", "clips_tiny", "train")
  names = sorted(os.listdir(video_dir))
  assert names == sorted(f"clip_{i:07d}.{ext}" for i in range(4) for ext in ("json", "mp4"))
  source = loaders.split_source(clips, "train")
  for i in range(len(source)):
    record = source[i]
    name = _text(record["source"]).rsplit("/", 1)[1]
    video = annotations.load(os.path.join(video_dir, name + ".json"))
    assert record["label"] == GROUP_EMOTIONS.index(video.label)
    assert record["fps"] == video.fps
    # 2 frames per second kept from t=0: the nearest frame, the earlier one on a tie
    expected = np.ceil(np.arange(len(record["frame_indices"])) * video.fps / 2 - 0.5).astype(int)
    np.testing.assert_array_equal(record["frame_indices"], expected)
    assert len(record["faces"]) == len(record["face_group"]) == len(record["face_boxes"])
    assert set(record["group_frame"]) <= set(range(len(record["frame_indices"])))
    frames = {f.index: f for f in video.frames}
    for t, index in enumerate(record["frame_indices"]):
      groups_here = frames[int(index)].groups
      assert (record["group_frame"] == t).sum() == len(groups_here)
