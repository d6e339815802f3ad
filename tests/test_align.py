"""Tests of the 5-point ArcFace alignment."""

import cv2
import numpy as np
import pytest

from emoflow.vision import align


def _random_similarity(rng):
  angle = rng.uniform(-np.pi, np.pi)
  scale = rng.uniform(0.2, 5.0)
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[scale * c, -scale * s, rng.uniform(-50, 50)],
                   [scale * s, scale * c, rng.uniform(-50, 50)]])


def _apply(matrix, points):
  return points @ matrix[:, :2].T + matrix[:, 2]


def test_template_shape_and_dtype():
  assert align.ARCFACE_TEMPLATE.shape == (5, 2)
  assert align.ARCFACE_TEMPLATE.dtype == np.float32


@pytest.mark.parametrize("seed", range(5))
def test_similarity_transform_recovers_known_similarity(seed):
  rng = np.random.default_rng(seed)
  truth = _random_similarity(rng)
  src = rng.uniform(0, 200, size=(5, 2))
  estimate = align.similarity_transform(src, _apply(truth, src))
  np.testing.assert_allclose(estimate, truth, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_similarity_transform_matches_opencv_on_exact_points(seed):
  rng = np.random.default_rng(100 + seed)
  src = rng.uniform(0, 200, size=(5, 2))
  dst = _apply(_random_similarity(rng), src)
  ours = align.similarity_transform(src, dst)
  theirs, _ = cv2.estimateAffinePartial2D(src, dst)
  # OpenCV's iterative refinement stops at ~1e-5 absolute on pixel-sized
  # shifts (ours is exact to 1e-9, see above), so compare relatively.
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max())


def test_similarity_transform_never_reflects():
  src = align.ARCFACE_TEMPLATE.astype(np.float64)
  mirrored = src * [-1.0, 1.0]
  matrix = align.similarity_transform(src, mirrored)
  assert np.linalg.det(matrix[:, :2]) > 0


def test_similarity_transform_rejects_degenerate_points():
  with pytest.raises(ValueError):
    align.similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))


def _dot_centroids(crop, colours):
  centroids = []
  for colour in colours:
    mask = np.all(np.abs(crop.astype(int) - colour) < 60, axis=-1)
    ys, xs = np.nonzero(mask)
    centroids.append([xs.mean(), ys.mean()])
  return np.array(centroids)


_COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]])


@pytest.mark.parametrize("scale", [0.15, 1.0, 4.0])
def test_align_face_puts_landmarks_on_template(scale):
  """Coloured dots drawn at the landmarks end up on the template points."""
  rng = np.random.default_rng(7)
  angle = rng.uniform(-0.6, 0.6)
  c, s = np.cos(angle), np.sin(angle)
  to_image = np.array([[scale * c, -scale * s, 0], [scale * s, scale * c, 0]])
  landmarks = _apply(to_image, align.ARCFACE_TEMPLATE.astype(np.float64))
  landmarks += 20 * scale - landmarks.min(0)
  side = int(np.ceil(landmarks.max() + 20 * scale))
  image = np.full((side, side, 3), 128, np.uint8)
  radius = max(1, round(3 * scale))
  for point, colour in zip(landmarks, _COLOURS):
    cv2.circle(image, tuple(int(v) for v in np.round(point)), radius, colour.tolist(), -1)
  crop = align.align_face(image, landmarks)
  assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
  found = _dot_centroids(crop, _COLOURS)
  # Dots are drawn at integer pixels, so allow that rounding, magnified.
  tolerance = 1.0 + 0.5 / scale
  np.testing.assert_array_less(np.abs(found - align.ARCFACE_TEMPLATE), tolerance)


def test_align_face_custom_size_scales_template():
  landmarks = align.ARCFACE_TEMPLATE * 2.0
  image = np.zeros((224, 224, 3), np.uint8)
  image[100:120, 100:120] = 255
  crop = align.align_face(image, landmarks, size=224)
  np.testing.assert_array_equal(crop, image)


def test_align_faces_stacks_and_handles_empty():
  image = np.zeros((200, 200, 3), np.uint8)
  landmarks = np.stack([align.ARCFACE_TEMPLATE, align.ARCFACE_TEMPLATE + 50])
  assert align.align_faces(image, landmarks).shape == (2, 112, 112, 3)
  assert align.align_faces(image, np.zeros((0, 5, 2))).shape == (0, 112, 112, 3)


def _smooth_image(rng, height, width):
  """A rendered-looking frame: smooth colour fields plus fine blurred texture."""
  coarse = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
  coarse = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
  fine = cv2.GaussianBlur(rng.uniform(-40, 40, (height, width, 3)).astype(np.float32), (0, 0), 1.5)
  return np.clip(coarse + fine, 0, 255).astype(np.uint8)


def _plausible_landmarks(rng, num, height, width):
  """Template faces at random scales, rotations and places (some off the frame edge), jittered."""
  out = []
  for scale in rng.choice([0.3, 0.7, 1.0, 1.6, 2.5], num):
    angle = rng.uniform(-0.8, 0.8)
    c, s = np.cos(angle), np.sin(angle)
    points = (align.ARCFACE_TEMPLATE - 56) @ (scale * np.array([[c, s], [-s, c]]))
    points += rng.normal(0, 1.5 * scale, points.shape)
    out.append(points + rng.uniform([0, 0], [width, height]))
  return np.array(out, np.float32)


def test_similarity_transforms_match_reference():
  rng = np.random.default_rng(11)
  landmarks = _plausible_landmarks(rng, 24, 720, 1280).reshape(2, 12, 5, 2)
  ours = np.asarray(align.similarity_transforms(landmarks))
  assert ours.shape == (2, 12, 2, 3)
  ref = np.stack([align.similarity_transform(p, align.ARCFACE_TEMPLATE)
                  for p in landmarks.reshape(-1, 5, 2)]).reshape(ours.shape)
  # float32: a shift of ~1000 pixels is exact to its last bit, 6e-5.
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-4)
  half = np.asarray(align.similarity_transforms(landmarks[0], size=56))
  np.testing.assert_allclose(half, ref[0] / 2, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("size", [112, 64])
def test_warp_faces_matches_opencv(size):
  """Within a grey level of align_face on every pixel (measured: mean 0.0002, max 1)."""
  rng = np.random.default_rng(size)
  frames = np.stack([_smooth_image(rng, 150, 200) for _ in range(3)])
  landmarks = _plausible_landmarks(rng, 20, 150, 200)
  frame_index = rng.integers(0, 3, 20).astype(np.int32)
  ours = np.asarray(align.warp_faces(frames, frame_index, landmarks, size=size))
  assert ours.shape == (20, size, size, 3) and ours.dtype == np.uint8
  ref = np.stack([align.align_face(frames[f], p, size) for f, p in zip(frame_index, landmarks)])
  diff = np.abs(ours.astype(int) - ref)
  assert diff.mean() <= 1.0 and diff.max() <= 1, (diff.mean(), diff.max())


def test_warp_faces_degenerate_landmarks_are_black():
  frames = np.full((1, 40, 40, 3), 200, np.uint8)
  landmarks = np.stack([np.zeros((5, 2)), align.ARCFACE_TEMPLATE / 4]).astype(np.float32)
  crops = np.asarray(align.warp_faces(frames, np.zeros(2, np.int32), landmarks))
  assert (crops[0] == 0).all() and crops[1].max() == 200
  assert np.isfinite(np.asarray(align.similarity_transforms(landmarks))).all()
