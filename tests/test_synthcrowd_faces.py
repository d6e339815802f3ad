"""Tests of the procedural AU-driven face renderer."""

import cv2
import numpy as np
import pytest

from data_pipelines.synthcrowd import faces
from emoflow.labels import EMOTION_ACTION_UNITS, EMOTIONS
from emoflow.vision import align

CLEAN = faces.FaceDifficulty.clean()


def _render(seed, emotion=1, face_px=64, difficulty=faces.FaceDifficulty()):
  return faces.render_face(np.random.default_rng(seed), emotion, face_px, difficulty)


def test_same_seed_gives_identical_face():
  a, b = _render(3), _render(3)
  assert a.image.tobytes() == b.image.tobytes()
  np.testing.assert_array_equal(a.landmarks, b.landmarks)
  np.testing.assert_array_equal(a.box, b.box)
  assert a.action_units == b.action_units and a.distractors == b.distractors
  assert _render(4).image.tobytes() != a.image.tobytes()


def test_global_numpy_seed_does_not_matter():
  np.random.seed(0)
  a = _render(5)
  np.random.seed(1)
  assert _render(5).image.tobytes() == a.image.tobytes()


@pytest.mark.parametrize("emotion", range(len(EMOTIONS)))
@pytest.mark.parametrize("face_px", [8, 120])
def test_every_emotion_renders_at_both_extremes(emotion, face_px):
  face = _render(emotion, emotion, face_px)
  assert face.image.dtype == np.uint8 and face.image.ndim == 3 and face.image.shape[2] == 3
  assert face.box.shape == (4,) and face.box.dtype == np.float32
  assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
  assert face.emotion == emotion and face.face_px == face_px
  assert face.image.std() > 1  # not a blank image
  # The canvas keeps about 0.4 face heights of margin on each side.
  assert face_px * 1.4 <= face.image.shape[0] <= face_px * 2.0 + 1


@pytest.mark.parametrize("seed", range(40))
def test_landmarks_in_box_and_box_in_image(seed):
  rng = np.random.default_rng(seed)
  face = faces.render_face(rng, seed % len(EMOTIONS), faces.sample_face_px(rng))
  x0, y0, x1, y1 = face.box
  h, w = face.image.shape[:2]
  assert -0.5 <= x0 < x1 <= w - 0.5 and -0.5 <= y0 < y1 <= h - 0.5
  xs, ys = face.landmarks.T
  assert np.all((xs > x0) & (xs < x1) & (ys > y0) & (ys < y1))
  left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
  assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
  assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def test_face_px_is_the_upright_head_height():
  no_roll = faces.FaceDifficulty(max_roll_deg=0.0)
  for face_px in (10, 50, 120):
    face = _render(1, 0, face_px, no_roll)
    assert abs((face.box[3] - face.box[1]) - face_px) <= 1.0


@pytest.mark.parametrize("emotion", range(len(EMOTIONS)))
def test_action_units_are_table_4_plus_flagged_distractors(emotion):
  table = set(EMOTION_ACTION_UNITS[EMOTIONS[emotion]])
  difficulty = faces.FaceDifficulty()
  for seed in range(20):
    face = _render(seed, emotion, 32)
    assert set(face.action_units) - set(face.distractors) == table
    assert not table & set(face.distractors)
    for au, level in face.action_units.items():
      distractor = au in face.distractors
      low, high = difficulty.distractor_intensity if distractor else difficulty.au_intensity
      assert low <= level <= high


def test_distractor_knobs():
  none = faces.FaceDifficulty(distractor_prob=0.0)
  assert _render(0, EMOTIONS.index("neutral"), 32, none).action_units == {}
  every = faces.FaceDifficulty(distractor_prob=1.0)
  face = _render(0, EMOTIONS.index("happy"), 32, every)
  assert set(face.action_units) == set(faces.ACTION_UNITS)
  assert set(face.distractors) == set(faces.ACTION_UNITS) - {12, 25}


def test_action_units_cover_table_4():
  table = {au for units in EMOTION_ACTION_UNITS.values() for au in units}
  assert table == set(faces.ACTION_UNITS)


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError):
    _render(0, len(EMOTIONS))
  with pytest.raises(ValueError):
    _render(0, 0, 0)


def test_size_buckets():
  assert faces.size_bucket(8) == "8-15px"
  assert faces.size_bucket(16) == "16-31px"
  assert faces.size_bucket(63) == "32-63px"
  assert faces.size_bucket(120) == "64-120px"
  with pytest.raises(ValueError):
    faces.size_bucket(7)


def test_sample_face_px_is_log_uniform():
  rng = np.random.default_rng(0)
  sizes = np.array([faces.sample_face_px(rng) for _ in range(4000)])
  assert sizes.min() == 8 and sizes.max() == 120
  # Octaves [8,16), [16,32), [32,64) are equally likely: 1/log2(121/8) each.
  share = np.mean((sizes >= 16) & (sizes < 32))
  assert abs(share - 1 / np.log2(121 / 8)) < 0.03
  assert faces.sample_face_px(rng, 20, 20) == 20


@pytest.mark.parametrize("seed", range(16))
def test_aligned_large_faces_put_eyes_on_the_template(seed):
  face = _render(seed, seed % len(EMOTIONS), 120, CLEAN)
  crop = align.align_face(face.image, face.landmarks)
  matrix = align.similarity_transform(face.landmarks, align.ARCFACE_TEMPLATE)
  moved = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
  np.testing.assert_array_less(np.abs(moved[:2] - align.ARCFACE_TEMPLATE[:2]), 4.0)
  # The pupil (dark) lies under each template eye point.
  grey = crop.mean(-1)
  for x, y in np.round(align.ARCFACE_TEMPLATE[:2]).astype(int):
    assert grey[y - 3:y + 4, x - 3:x + 4].min() < 70


def _aligned_features(seed, per_class, face_px, difficulty):
  """Grey 28x28 aligned crops, each standardised, and their emotions."""
  rng = np.random.default_rng(seed)
  features, labels = [], []
  for i in range(per_class * len(EMOTIONS)):
    face = faces.render_face(rng, i % len(EMOTIONS), face_px, difficulty)
    grey = cv2.cvtColor(align.align_face(face.image, face.landmarks), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (28, 28), interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
    features.append((small - small.mean()) / (small.std() + 1e-3))
    labels.append(i % len(EMOTIONS))
  return np.array(features), np.array(labels)


def _ridge_accuracy(face_px, difficulty, per_class=100):
  """Test accuracy of a closed-form ridge classifier trained on fresh faces."""
  x_train, y_train = _aligned_features(0, per_class, face_px, difficulty)
  x_test, y_test = _aligned_features(1, per_class // 2, face_px, difficulty)
  design = np.c_[x_train, np.ones(len(x_train))]
  targets = np.eye(len(EMOTIONS))[y_train]
  weights = np.linalg.solve(design.T @ design + 30.0 * np.eye(design.shape[1]), design.T @ targets)
  predicted = np.argmax(np.c_[x_test, np.ones(len(x_test))] @ weights, 1)
  return np.mean(predicted == y_test)


def test_expressions_are_learnable_at_large_sizes():
  """A linear model on raw pixels reads the emotion far above chance (1/8)."""
  assert _ridge_accuracy(120, CLEAN) > 0.6  # measured 0.96


@pytest.mark.slow
def test_tiny_faces_are_much_harder():
  """With the default degradations, 8-pixel faces lose most of the signal."""
  difficulty = faces.FaceDifficulty()
  large, tiny = _ridge_accuracy(120, difficulty), _ridge_accuracy(8, difficulty)
  assert large > 0.6 and tiny < large - 0.3  # measured about 0.92 and 0.28
