"""Tests of face tracks: stable ids through motion, crossings and short gaps; ids never reused."""

import numpy as np

from emoflow.vision import tracks

M = 16


def _box(cx, cy, side=40.0):
  return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def _identities(rng, num):
  return rng.normal(size=(num, M))


def _observe(rng, identities, noise=0.3):
  """Embeddings of the same people in a new frame: their identity plus noise."""
  return identities + noise * rng.normal(size=identities.shape)


def test_smooth_motion_keeps_ids():
  rng = np.random.default_rng(0)
  people = _identities(rng, 4)
  start = rng.uniform(100, 500, (4, 2))
  velocity = rng.uniform(-6, 6, (4, 2))
  tracker = tracks.Tracker()
  id_of = None  # person -> id, from the first frame
  for t in range(40):
    order = rng.permutation(4)  # detectors list faces in no fixed order
    centres = start + t * velocity + rng.normal(0, 1, (4, 2))
    boxes = np.array([_box(*c) for c in centres])[order]
    ids = tracker.update(boxes, _observe(rng, people)[order])
    if id_of is None:
      id_of = np.empty(4, np.int64)
      id_of[order] = ids
    np.testing.assert_array_equal(ids, id_of[order])


def test_crossing_faces_keep_ids():
  """Two faces pass through each other (identical boxes at the crossing); embeddings tell them apart."""
  rng = np.random.default_rng(1)
  people = _identities(rng, 2)
  tracker = tracks.Tracker()
  for t in range(21):
    x = 200 + 8 * (t - 10)
    boxes = np.array([_box(x, 100), _box(400 - x, 100)])
    order = rng.permutation(2)
    ids = tracker.update(boxes[order], _observe(rng, people)[order])
    np.testing.assert_array_equal(ids, order)


def _gap_run(gap, max_gap=3):
  """One face seen for 3 frames, away for `gap` frames, back for 2; a second face stays throughout."""
  rng = np.random.default_rng(2)
  people = _identities(rng, 2)
  tracker = tracks.Tracker(max_gap=max_gap)
  seen = []
  for t in range(3 + gap + 2):
    present = [0, 1] if t < 3 or t >= 3 + gap else [1]
    boxes = np.array([_box(100 + t, 100), _box(300, 300)])[present]
    seen.append(tracker.update(boxes, _observe(rng, people)[present]).tolist())
  return seen


def test_face_back_within_max_gap_gets_its_id():
  seen = _gap_run(gap=3)
  assert seen == [[0, 1]] * 3 + [[1]] * 3 + [[0, 1]] * 2


def test_face_back_after_max_gap_gets_a_new_id():
  seen = _gap_run(gap=4)
  assert seen == [[0, 1]] * 3 + [[1]] * 4 + [[2, 1]] * 2


def test_ids_never_reused():
  """Faces come and go at random: ids are distinct in a frame, new ones count up, ended ones never return."""
  rng = np.random.default_rng(3)
  people = _identities(rng, 12)
  places = rng.uniform(0, 2000, (12, 2))
  tracker = tracks.Tracker(max_gap=2)
  last_seen, person_of, next_new = {}, {}, 0
  for t in range(60):
    present = np.nonzero(rng.random(12) < 0.5)[0]
    boxes = np.array([_box(*places[p]) for p in present]).reshape(-1, 4)
    ids = tracker.update(boxes, _observe(rng, people[present]))
    assert len(set(ids.tolist())) == len(ids)
    for i, p in zip(ids.tolist(), present):
      assert person_of.setdefault(i, p) == p
      if i >= next_new:
        assert i == next_new
        next_new += 1
      else:
        assert t - last_seen[i] <= 3  # back within max_gap = 2 unseen frames
      last_seen[i] = t


def test_empty_frames():
  tracker = tracks.Tracker(max_gap=1)
  assert tracker.update(np.zeros((0, 4)), np.zeros((0, M))).shape == (0,)
  assert tracker.update(np.array([_box(50, 50)]), np.ones((1, M))).tolist() == [0]
  assert tracker.update(np.zeros((0, 4)), np.zeros((0, M))).shape == (0,)
  assert tracker.update(np.array([_box(50, 50)]), np.ones((1, M))).tolist() == [0]


def test_track_emotions():
  probs = [np.eye(3)[[0, 1]], np.eye(3)[[2]], np.eye(3)[[1, 0]]]
  out = tracks.track_emotions([0, 5, 10], [np.array([0, 1]), np.array([1]), np.array([2, 0])], probs)
  assert sorted(out) == [0, 1, 2]
  assert [(f, int(np.argmax(p))) for f, p in out[0]] == [(0, 0), (10, 0)]
  assert [(f, int(np.argmax(p))) for f, p in out[1]] == [(0, 1), (5, 2)]
  assert [(f, int(np.argmax(p))) for f, p in out[2]] == [(10, 1)]
