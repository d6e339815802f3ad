"""Tests of the detector interface, the annotation and YuNet detectors, anchors, decoding and NMS."""

import itertools
import math

import jax
import numpy as np
import pytest

from emoflow.vision import detect, retinaface


def _face(x0, y0, size):
  box = [x0, y0, x0 + size, y0 + size]
  landmarks = [[x0 + size * u, y0 + size * v] for u, v in
               [(0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8)]]
  return {"box": box, "landmarks": landmarks, "emotion": None, "track": None}


def test_from_lists_pads_and_counts_dropped_faces():
  boxes = np.arange(12, dtype=np.float32).reshape(3, 4)
  landmarks = np.arange(30, dtype=np.float32).reshape(3, 5, 2)
  scores = np.array([0.5, 0.9, 0.5], np.float32)
  empty = (np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros(0))
  dets = detect.Detections.from_lists([(boxes, landmarks, scores), empty], max_faces=2)
  assert dets.boxes.shape == (2, 2, 4) and dets.landmarks.shape == (2, 2, 5, 2)
  # Best score first; the earlier face wins the tie at 0.5.
  np.testing.assert_array_equal(dets.boxes[0], boxes[[1, 0]])
  np.testing.assert_array_equal(dets.landmarks[0], landmarks[[1, 0]])
  np.testing.assert_array_equal(dets.scores[0], scores[[1, 0]])
  np.testing.assert_array_equal(dets.valid, [[True, True], [False, False]])
  np.testing.assert_array_equal(dets.dropped, [1, 0])
  assert not np.any(dets.boxes[1]) and not np.any(dets.scores[1])


def test_annotation_detector_returns_the_annotated_faces():
  # The shape of the annotation JSON's frames, frame 3 not annotated.
  frames_json = [{"index": 0, "faces": [_face(10, 20, 30), _face(100, 50, 40)]},
                 {"index": 5, "faces": []},
                 {"index": 7, "faces": [_face(1, 2, 8)]}]
  detector = detect.make("annotations", faces={fr["index"]: fr["faces"] for fr in frames_json},
                         max_faces=4)
  frames = np.zeros((3, 64, 64, 3), np.uint8)
  dets = detector(frames, indices=[7, 0, 5])
  np.testing.assert_array_equal(dets.valid.sum(1), [1, 2, 0])
  np.testing.assert_allclose(dets.boxes[1, :2], [[10, 20, 40, 50], [100, 50, 140, 90]])
  np.testing.assert_allclose(dets.landmarks[0, 0], _face(1, 2, 8)["landmarks"])
  np.testing.assert_array_equal(dets.scores, [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
  with pytest.raises(ValueError, match="frame 3"):
    detector(frames[:1], indices=[3])
  with pytest.raises(ValueError, match="index"):
    detector(frames)


def test_unknown_detector_is_a_one_line_error():
  with pytest.raises(ValueError, match="unknown detector 'retina'; known: annotations, mtcnn, retinaface, yunet"):
    detect.make("retina")


def test_yunet_without_its_onnx_file_is_a_one_line_error(tmp_path):
  missing = str(tmp_path / "face_detection_yunet_2023mar.onnx")
  with pytest.raises(ValueError, match="YuNet ONNX file not found") as error:
    detect.make("yunet", model_path=missing)
  assert missing in str(error.value) and "\n" not in str(error.value)


def test_yunet_with_a_file_that_is_not_onnx_is_a_one_line_error(tmp_path):
  junk = tmp_path / "yunet.onnx"
  junk.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="cannot load it as a YuNet model") as error:
    detect.make("yunet", model_path=str(junk))
  assert "\n" not in str(error.value)


# --- anchors and decoding, against the public RetinaFace code's loops ----------------------


def _reference_priors(height, width, steps, min_sizes):
  """Prior boxes as the public RetinaFace PriorBox makes them: (cx, cy, w, h) in image units."""
  priors = []
  for step, sizes in zip(steps, min_sizes):
    for i, j in itertools.product(range(math.ceil(height / step)), range(math.ceil(width / step))):
      for size in sizes:
        priors.append([(j + 0.5) * step / width, (i + 0.5) * step / height, size / width, size / height])
  return np.array(priors)


def _reference_decode(loc, landm, priors, variances):
  boxes = np.concatenate([priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
                          priors[:, 2:] * np.exp(loc[:, 2:] * variances[1])], 1)
  boxes[:, :2] -= boxes[:, 2:] / 2
  boxes[:, 2:] += boxes[:, :2]
  points = np.concatenate([priors[:, :2] + landm[:, 2 * p:2 * p + 2] * variances[0] * priors[:, 2:]
                           for p in range(5)], 1)
  return boxes, points


@pytest.mark.parametrize("image_size", [(64, 64), (100, 70), (37, 90)])
def test_anchors_match_the_public_prior_boxes(image_size):
  height, width = image_size
  steps, min_sizes = (8, 16, 32), ((16, 32), (64, 128), (256, 512))
  reference = _reference_priors(height, width, steps, min_sizes) * [width, height, width, height]
  np.testing.assert_allclose(detect.make_anchors(image_size, steps, min_sizes), reference, rtol=1e-6)


def test_anchors_take_other_strides_and_sizes():
  anchors = detect.make_anchors((40, 24), strides=(4, 8), min_sizes=((6,), (12, 20, 28)))
  reference = _reference_priors(40, 24, (4, 8), ((6,), (12, 20, 28))) * [24, 40, 24, 40]
  np.testing.assert_allclose(anchors, reference, rtol=1e-6)


@pytest.mark.parametrize("variances", [(0.1, 0.2), (0.2, 0.5)])
def test_decode_matches_the_public_formula(variances):
  rng = np.random.default_rng(0)
  height, width = 48, 80
  priors = _reference_priors(height, width, (8, 16, 32), ((16, 32), (64, 128), (256, 512)))
  loc = rng.normal(0, 1, (2, len(priors), 4)).astype(np.float32)
  landm = rng.normal(0, 1, (2, len(priors), 10)).astype(np.float32)
  boxes, landmarks = detect.decode(loc, landm, detect.make_anchors((height, width)), variances)
  assert boxes.shape == (2, len(priors), 4) and landmarks.shape == (2, len(priors), 5, 2)
  for b in range(2):
    ref_boxes, ref_points = _reference_decode(loc[b].astype(np.float64), landm[b], priors, variances)
    np.testing.assert_allclose(boxes[b], ref_boxes * ([width, height] * 2), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(landmarks[b].reshape(-1, 10), ref_points * ([width, height] * 5),
                               rtol=1e-5, atol=1e-3)


# --- NMS, against a plain greedy loop --------------------------------------------------------


def _iou(a, b):
  w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
  return w * h / union if union > 0 else 0.0


def _reference_nms(boxes, scores, iou_threshold, score_threshold, max_out):
  keep = []
  for i in np.argsort(-scores, kind="stable"):
    if len(keep) == max_out:
      break
    if scores[i] > score_threshold and all(_iou(boxes[i], boxes[j]) <= iou_threshold for j in keep):
      keep.append(int(i))
  return keep


def _random_boxes(rng, n, num_values=None):
  """Boxes around a few centres, so that many overlap; scores from num_values levels (ties) when given."""
  centres = rng.uniform(0, 100, (4, 2))[rng.integers(0, 4, n)] + rng.normal(0, 6, (n, 2))
  sizes = rng.uniform(5, 30, (n, 2))
  boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype(np.float32)
  scores = rng.uniform(0, 1, n) if num_values is None else rng.integers(0, num_values, n) / num_values
  return boxes, scores.astype(np.float32)


def _check_nms(boxes, scores, iou_threshold, score_threshold, max_out):
  indices, valid = detect.nms(boxes, scores, iou_threshold, score_threshold, max_out)
  expected = _reference_nms(boxes, scores, iou_threshold, score_threshold, max_out)
  assert indices.shape == (max_out,) and valid.shape == (max_out,)
  np.testing.assert_array_equal(valid, np.arange(max_out) < len(expected))
  np.testing.assert_array_equal(indices[:len(expected)], expected)
  np.testing.assert_array_equal(indices[len(expected):], 0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("num_values", [None, 3])
def test_nms_matches_a_greedy_loop(seed, num_values):
  rng = np.random.default_rng(seed)
  boxes, scores = _random_boxes(rng, 60, num_values)
  for iou_threshold, score_threshold, max_out in [(0.3, 0.2, 40), (0.5, 0.0, 8), (0.1, 0.5, 60)]:
    _check_nms(boxes, scores, iou_threshold, score_threshold, max_out)


@pytest.mark.parametrize("num_values", [None, 5])
def test_nms_over_many_blocks_matches_a_greedy_loop(num_values):
  """Several NMS_BLOCKs of candidates: suppression across blocks, max_out reached mid-block."""
  rng = np.random.default_rng(7)
  n = 5 * detect.NMS_BLOCK + 17
  boxes, scores = _random_boxes(rng, n, num_values)
  boxes *= 4  # more room: more boxes survive
  for iou_threshold, score_threshold, max_out in [(0.3, 0.1, 37), (0.5, 0.0, n), (0.7, 0.4, 200)]:
    _check_nms(boxes, scores, iou_threshold, score_threshold, max_out)


def test_nms_keeps_its_loop_types_with_x64_on():
  """The multi-host detection run has 64-bit types on: counts must stay int32 in the loop."""
  boxes, scores = _random_boxes(np.random.default_rng(8), 90)
  with jax.enable_x64(True):
    _check_nms(boxes, scores, 0.4, 0.2, 30)


def test_nms_breaks_ties_by_the_lower_index():
  boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
  scores = np.full(4, 0.8, np.float32)
  indices, valid = detect.nms(boxes, scores, 0.5, 0.1, 4)
  np.testing.assert_array_equal(indices, [0, 2, 0, 0])
  np.testing.assert_array_equal(valid, [True, True, False, False])
  _check_nms(boxes, scores, 0.5, 0.1, 4)


def test_nms_with_every_score_below_threshold_keeps_nothing():
  boxes, scores = _random_boxes(np.random.default_rng(5), 30)
  indices, valid = detect.nms(boxes, scores * 0.5, 0.5, 0.5, 10)
  assert not valid.any() and not indices.any()


def test_nms_vmaps_over_frames_and_jits():
  rng = np.random.default_rng(6)
  frames = [_random_boxes(rng, 50) for _ in range(3)]
  boxes = np.stack([b for b, _ in frames])
  scores = np.stack([s for _, s in frames])
  scores[1] = 0  # a frame with no candidate stops early while the others go on
  batched = jax.jit(jax.vmap(lambda b, s: detect.nms(b, s, 0.4, 0.3, 12)))
  indices, valid = batched(boxes, scores)
  for f in range(3):
    expected = _reference_nms(boxes[f], scores[f], 0.4, 0.3, 12)
    np.testing.assert_array_equal(indices[f][valid[f]], expected)
  assert not valid[1].any()


# --- RetinaFace detector: decode + NMS + gather, against the numpy references above -------


class _FixedHeads:
  """A stand-in for RetinaFace whose outputs are its `variables` (per frame), whatever the pixels."""

  def apply(self, variables, images):
    assert images.shape[0] == variables["loc"].shape[0]
    return variables["loc"], variables["conf"], variables["landm"]


def _fixed_heads(rng, num_frames, height, width):
  """Head outputs for anchors of (height, width): a few confident faces on each frame."""
  num = len(_reference_priors(height, width, (8, 16, 32), ((16, 32), (64, 128), (256, 512))))
  conf = np.zeros((num_frames, num, 2), np.float32)
  conf[..., 1] = rng.normal(-1.0, 2.0, (num_frames, num))
  return {"loc": rng.normal(0, 0.5, (num_frames, num, 4)).astype(np.float32), "conf": conf,
          "landm": rng.normal(0, 1, (num_frames, num, 10)).astype(np.float32)}


def _reference_detect(heads, frame, height, width, scale, score_threshold, nms_threshold, max_faces):
  """One frame's faces the plain way: decode in image units, scale to frame pixels, greedy NMS."""
  priors = _reference_priors(height, width, (8, 16, 32), ((16, 32), (64, 128), (256, 512)))
  boxes, points = _reference_decode(heads["loc"][frame].astype(np.float64), heads["landm"][frame],
                                    priors, (0.1, 0.2))
  boxes = boxes * ([width * scale, height * scale] * 2)
  points = points.reshape(-1, 5, 2) * [width * scale, height * scale]
  logits = heads["conf"][frame].astype(np.float64)
  scores = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
  keep = _reference_nms(boxes, scores, nms_threshold, score_threshold, max_faces)
  left = [i for i in range(len(scores)) if scores[i] > score_threshold and i not in keep
          and all(_iou(boxes[i], boxes[j]) <= nms_threshold for j in keep)]
  return boxes[keep], points[keep], scores[keep], len(left) if len(keep) == max_faces else 0


@pytest.mark.parametrize("input_scale, max_faces", [(1.0, 64), (0.5, 64), (1.0, 3)])
def test_retinaface_detector_matches_decode_and_greedy_nms(input_scale, max_faces):
  rng = np.random.default_rng(7)
  height, width = 64, 96
  inner = round(height * input_scale), round(width * input_scale)
  heads = _fixed_heads(rng, 2, *inner)
  detector = detect.RetinaFaceDetector(_FixedHeads(), heads, score_threshold=0.6,
                                       nms_threshold=0.3, max_faces=max_faces,
                                       input_scale=input_scale)
  dets = detector(np.zeros((2, height, width, 3), np.uint8))
  assert dets.boxes.shape == (2, max_faces, 4) and dets.landmarks.shape == (2, max_faces, 5, 2)
  for f in range(2):
    boxes, points, scores, dropped = _reference_detect(heads, f, *inner, 1 / input_scale, 0.6, 0.3,
                                                       max_faces)
    n = len(scores)
    assert n > 1
    np.testing.assert_array_equal(dets.valid[f], np.arange(max_faces) < n)
    np.testing.assert_allclose(dets.boxes[f, :n], boxes, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(dets.landmarks[f, :n], points, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(dets.scores[f, :n], scores, rtol=1e-5)
    assert not np.any(dets.boxes[f, n:]) and not np.any(dets.scores[f, n:])
    assert dets.dropped[f] == dropped
  if max_faces == 3:
    assert dets.dropped.min() > 0


@pytest.mark.slow
def test_retinaface_detector_runs_a_real_tiny_retinaface():
  model = retinaface.RetinaFace("mobilenet0.25")
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3), np.float32))
  detector = detect.make("retinaface", model=model, variables=variables, score_threshold=0.3,
                         max_faces=8)
  frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  dets = detector(frames, indices=[0, 1])
  assert dets.boxes.shape == (2, 8, 4) and dets.landmarks.shape == (2, 8, 5, 2)
  assert dets.scores.shape == (2, 8) and dets.valid.dtype == bool and dets.dropped.shape == (2,)
  valid = np.asarray(dets.valid)
  assert np.all(np.sort(valid, 1)[:, ::-1] == valid)  # valid slots come first
  assert np.all(np.asarray(dets.scores)[valid] > 0.3) and not np.any(np.asarray(dets.scores)[~valid])
  assert np.all(np.diff(np.asarray(dets.scores), axis=1)[valid[:, 1:]] <= 0)


def test_retinaface_detector_needs_weights_or_a_model():
  with pytest.raises(ValueError, match="weights=PATH or model= and variables="):
    detect.make("retinaface")
