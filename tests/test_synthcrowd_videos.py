"""Tests of SynthCrowd videos: files, every frame annotated, tracks, label changes, video label."""

import collections
import dataclasses
import os

import numpy as np
import pytest

from data_pipelines import annotations
from data_pipelines.synthcrowd import crowds, videos
from emoflow.vision import video as video_io

CROWD = crowds.CrowdDifficulty(num_faces=(8, 16), num_groups=(1, 3))
SHORT = videos.VideoSpec(duration_s=(2.0, 3.0), fps=(5, 8))


def _render(tmp_path, seed, name="clip", crowd=CROWD, spec=SHORT):
  return videos.render_video(np.random.default_rng(seed), str(tmp_path), name, crowd, spec)


def _frames(tmp_path, name="clip"):
  return [image for _, image in video_io.read_frames(os.path.join(tmp_path, name + ".mp4"))]


@pytest.mark.parametrize("seed", range(3))
def test_files_match_the_annotation(tmp_path, seed):
  video = _render(tmp_path, seed)
  assert annotations.load(str(tmp_path / "clip.json")) == video
  info = video_io.probe(str(tmp_path / "clip.mp4"))
  assert (info.fps, info.width, info.height) == (video.fps, 640, 360)
  images = _frames(tmp_path)
  assert len(images) == video.num_frames == info.num_frames
  assert SHORT.fps[0] <= video.fps <= SHORT.fps[1]
  assert SHORT.duration_s[0] * video.fps - 1 <= video.num_frames <= SHORT.duration_s[1] * video.fps + 1
  assert [frame.index for frame in video.frames] == list(range(video.num_frames))
  assert all(frame.label is not None for frame in video.frames)


def test_same_seed_gives_identical_video(tmp_path):
  a = _render(tmp_path, 4, "a")
  b = _render(tmp_path, 4, "b")
  assert dataclasses.replace(b, video="a.mp4") == a
  for x, y in zip(_frames(tmp_path, "a"), _frames(tmp_path, "b")):
    np.testing.assert_array_equal(x, y)
  assert _render(tmp_path, 5, "c") != dataclasses.replace(a, video="c.mp4")


def test_tracks_persist_and_move_smoothly(tmp_path):
  steady = dataclasses.replace(SHORT, cut_prob=0.0)
  video = _render(tmp_path, 1, crowd=dataclasses.replace(CROWD, num_faces=(12, 12)), spec=steady)
  by_track = collections.defaultdict(list)
  for frame in video.frames:
    tracks = [face.track for face in frame.faces]
    assert len(set(tracks)) == len(tracks)
    for face in frame.faces:
      by_track[face.track].append((frame.index, np.array(face.box)))
  seen_throughout = [t for t, boxes in by_track.items() if len(boxes) == video.num_frames]
  assert seen_throughout
  for boxes in by_track.values():
    for (i, a), (j, b) in zip(boxes, boxes[1:]):
      if j == i + 1:
        size = a[3] - a[1]
        assert np.abs((a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2).max() < 0.5 * size + 2


def _group_labels_per_track(video):
  """Per track, the labels its group had over the frames."""
  labels = collections.defaultdict(list)
  for frame in video.frames:
    for group in frame.groups:
      for i in group.faces:
        labels[frame.faces[i].track].append(group.label)
  return labels


def _changes(sequence):
  return sum(a != b for a, b in zip(sequence, sequence[1:]))


def test_group_shifts_and_member_changes(tmp_path):
  still = dataclasses.replace(SHORT, member_change=0.0, group_shift=0.0)
  video = _render(tmp_path, 2, "still", spec=still)
  emotions = collections.defaultdict(set)
  for frame in video.frames:
    for face in frame.faces:
      emotions[face.track].add(face.emotion)
  assert all(len(seen) == 1 for seen in emotions.values())
  assert all(_changes(labels) == 0 for labels in _group_labels_per_track(video).values())

  shifting = dataclasses.replace(SHORT, member_change=0.0, group_shift=1.0)
  video = _render(tmp_path, 2, "shifting", spec=shifting)
  changes = [_changes(labels) for labels in _group_labels_per_track(video).values()]
  assert max(changes) == 1


def test_video_label_is_the_most_frequent_frame_label(tmp_path):
  for seed in range(4):
    spec = dataclasses.replace(SHORT, group_shift=1.0)
    video = _render(tmp_path, seed, f"v{seed}", spec=spec)
    counts = collections.Counter(frame.label for frame in video.frames)
    faces = collections.Counter()
    for frame in video.frames:
      for group in frame.groups:
        faces[group.label] += len(group.faces)
    top = max(counts.values())
    tied = [label for label in counts if counts[label] == top]
    assert video.label == max(tied, key=lambda label: faces[label])


def test_bad_spec_is_rejected():
  with pytest.raises(ValueError):
    videos.VideoSpec(fps=(0, 5))
  with pytest.raises(ValueError):
    videos.VideoSpec(zoom=(0.5, 1.0))
