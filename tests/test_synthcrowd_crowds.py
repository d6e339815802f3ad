"""Tests of SynthCrowd crowd frames: determinism, annotation validity, perspective, labels."""

import collections
import dataclasses

import numpy as np
import pytest

from data_pipelines import annotations
from data_pipelines.synthcrowd import crowds
from emoflow.labels import EMOTION_VALENCE, GROUP_EMOTIONS

SMALL = crowds.CrowdDifficulty(num_faces=(5, 40))


def _render(seed, difficulty=SMALL):
  return crowds.render_crowd(np.random.default_rng(seed), difficulty)


def _as_video(frame, image):
  h, w = image.shape[:2]
  return annotations.Video(video="x.mp4", fps=1.0, num_frames=1, width=w, height=h,
                           label=frame.label, frames=[frame])


def test_same_seed_gives_identical_frame():
  (a, fa), (b, fb) = _render(7), _render(7)
  assert a.tobytes() == b.tobytes() and fa == fb
  c, fc = _render(8)
  assert c.tobytes() != a.tobytes() and fc != fa


@pytest.mark.parametrize("seed", range(8))
def test_annotation_is_valid_and_geometric(seed):
  image, frame = _render(seed)
  w, h = SMALL.size
  assert image.shape == (h, w, 3) and image.dtype == np.uint8
  annotations.validate(_as_video(frame, image))
  assert frame.index == 0 and frame.faces
  tracks = [face.track for face in frame.faces]
  assert len(set(tracks)) == len(tracks)
  for face in frame.faces:
    x0, y0, x1, y1 = face.box
    assert x0 < x1 and y0 < y1
    assert x1 >= 0 and y1 >= 0 and x0 <= w - 1 and y0 <= h - 1  # overlaps the image
    xs, ys = np.array(face.landmarks).T
    assert np.all((xs > x0) & (xs < x1) & (ys > y0) & (ys < y1))
    assert 0.7 * SMALL.face_px[0] <= y1 - y0 <= 1.3 * SMALL.face_px[1]
  # Every face is in exactly one group, whose box encloses it.
  members = sorted(i for group in frame.groups for i in group.faces)
  assert members == list(range(len(frame.faces)))
  for group in frame.groups:
    boxes = np.array([frame.faces[i].box for i in group.faces])
    np.testing.assert_allclose(group.box, [*boxes[:, :2].min(0), *boxes[:, 2:].max(0)])


def test_faces_follow_the_perspective():
  """Lower faces (nearer the camera) are larger than upper ones."""
  difficulty = crowds.CrowdDifficulty(num_faces=(60, 60))
  for seed in range(4):
    _, frame = _render(seed, difficulty)
    boxes = np.array([face.box for face in frame.faces])
    centre, height = (boxes[:, 1] + boxes[:, 3]) / 2, boxes[:, 3] - boxes[:, 1]
    lower = centre > np.median(centre)
    assert height[lower].mean() > 1.1 * height[~lower].mean()


def test_far_off_faces_are_not_annotated():
  difficulty = crowds.CrowdDifficulty(num_faces=(150, 150))
  counts = []
  for seed in range(3):
    scene_size = len(crowds.sample_scene(np.random.default_rng(seed), difficulty).people)
    _, frame = _render(seed, difficulty)
    assert scene_size == 150
    counts.append(len(frame.faces))
  assert min(counts) > 0 and min(counts) < 150  # big crowds spill over the edges


def _majority_agrees(difficulty, scenes=150):
  """Share of groups (3+ members) whose members' majority valence is the group label."""
  agree = total = 0
  for seed in range(scenes):
    scene = crowds.sample_scene(np.random.default_rng(seed), difficulty)
    votes = collections.defaultdict(collections.Counter)
    for person in scene.people:
      votes[person.group][EMOTION_VALENCE[crowds.EMOTIONS[person.emotion]]] += 1
    for group, counter in votes.items():
      if sum(counter.values()) >= 3:
        total += 1
        agree += counter.most_common(1)[0][0] == scene.labels[group]
  return agree / total


def test_group_label_is_an_aggregate_not_unanimity():
  difficulty = crowds.CrowdDifficulty(num_faces=(10, 60), num_groups=(2, 4))
  share = _majority_agrees(difficulty)
  assert 0.75 < share < 1.0  # chance is about 1/3
  unanimous = dataclasses.replace(difficulty, agreement=(1.0, 1.0))
  assert _majority_agrees(unanimous, 30) == 1.0


def test_member_emotion_follows_agreement():
  rng = np.random.default_rng(0)
  for label in GROUP_EMOTIONS:
    shown = [EMOTION_VALENCE[crowds.EMOTIONS[crowds.member_emotion(rng, label, 0.7)]]
             for _ in range(2000)]
    assert abs(np.mean([v == label for v in shown]) - 0.7) < 0.04
    assert label not in {EMOTION_VALENCE[crowds.EMOTIONS[crowds.member_emotion(rng, label, 0.0)]]
                         for _ in range(200)}


@pytest.mark.parametrize("seed", range(10))
def test_frame_label_is_the_prevailing_group_label(seed):
  _, frame = _render(seed)
  counts, area = collections.Counter(), collections.Counter()
  for group in frame.groups:
    counts[group.label] += len(group.faces)
    for i in group.faces:
      x0, y0, x1, y1 = frame.faces[i].box
      area[group.label] += (x1 - x0) * (y1 - y0)
  top = max(counts.values())
  tied = [label for label in counts if counts[label] == top]
  assert frame.label == max(tied, key=lambda label: area[label])


def test_ties_go_to_the_larger_area_then_label_order():
  big = annotations.Face(box=[0, 0, 50, 50], landmarks=[[1, 1]] * 5)
  small = annotations.Face(box=[60, 0, 70, 10], landmarks=[[61, 1]] * 5)
  frame = crowds.frame_annotation(3, [small, big], [0, 1], ["positive", "negative"])
  assert frame.label == "negative" and frame.index == 3
  assert [g.faces for g in frame.groups] == [[0], [1]]
  assert crowds.prevailing({"neutral": 2, "negative": 2}, {}) == "negative"
  assert crowds.prevailing({}, {}) is None


def test_bad_difficulty_is_rejected():
  with pytest.raises(ValueError):
    crowds.CrowdDifficulty(num_faces=(10, 5))
  with pytest.raises(ValueError):
    crowds.CrowdDifficulty(agreement=(0.5, 1.5))
  with pytest.raises(ValueError):
    crowds.CrowdDifficulty(num_faces=(0, 5))
