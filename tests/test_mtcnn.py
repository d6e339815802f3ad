"""MTCNN in Flax: the networks against a numpy restatement of the Keras models, and detection on real photos.

The photos: skimage's astronaut and camera, matplotlib's Grace Hopper (its
top 512 rows, so that the photos share one shape and the module's detector
compiles its first stage once); their pinned boxes were checked by eye on
drawn-over images. The composed images paste those faces at 28-200 px onto
a brick texture (512 x 512, and 224 x 224 where packed crops are checked
against every slot).
"""

import functools
import importlib.util
import os

import cv2
import jax
import joblib
import numpy as np
import pytest
import skimage.data

from data_pipelines import real_photos
from emoflow import chunking
from emoflow.vision import detect, mtcnn, resampling

# --- the networks, restated in numpy from the Keras definitions -------------------------


def _keras_weights(name: str) -> list[np.ndarray]:
  folder = importlib.util.find_spec("mtcnn").submodule_search_locations[0]
  return [np.asarray(a, np.float64) for a in joblib.load(os.path.join(folder, "assets", "weights",
                                                                      f"{name}.lz4"))]


def _conv(x, kernel, bias):
  """VALID, stride 1: [N, H, W, C] x HWIO -> [N, H - kh + 1, W - kw + 1, O]."""
  windows = np.lib.stride_tricks.sliding_window_view(x, kernel.shape[:2], axis=(1, 2))
  return np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias


def _max_pool(x, size, same):
  """Stride 2; SAME pads like TensorFlow (the odd pixel at the end, with -inf)."""
  height, width = x.shape[1:3]
  if same:
    pads = [max((-(-n // 2) - 1) * 2 + size - n, 0) for n in (height, width)]
    x = np.pad(x, [(0, 0), *((p // 2, p - p // 2) for p in pads), (0, 0)], constant_values=-np.inf)
  windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))
  return windows[:, ::2, ::2].max((-1, -2))


def _prelu(x, alpha):
  return np.maximum(x, 0) + alpha.reshape(-1) * np.minimum(x, 0)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _flatten_permuted(x):
  return x.transpose(0, 2, 1, 3).reshape(len(x), -1)


def _pnet(x, w):
  x = _max_pool(_prelu(_conv(x, w[0], w[1]), w[2]), 2, True)
  x = _prelu(_conv(x, w[3], w[4]), w[5])
  x = _prelu(_conv(x, w[6], w[7]), w[8])
  return _conv(x, w[9], w[10]), _softmax(_conv(x, w[11], w[12]))


def _rnet(x, w):
  x = _max_pool(_prelu(_conv(x, w[0], w[1]), w[2]), 3, True)
  x = _max_pool(_prelu(_conv(x, w[3], w[4]), w[5]), 3, False)
  x = _prelu(_conv(x, w[6], w[7]), w[8])
  x = _prelu(_flatten_permuted(x) @ w[9] + w[10], w[11])
  return x @ w[12] + w[13], _softmax(x @ w[14] + w[15])


def _onet(x, w):
  x = _max_pool(_prelu(_conv(x, w[0], w[1]), w[2]), 3, True)
  x = _max_pool(_prelu(_conv(x, w[3], w[4]), w[5]), 3, False)
  x = _max_pool(_prelu(_conv(x, w[6], w[7]), w[8]), 2, True)
  x = _prelu(_conv(x, w[9], w[10]), w[11])
  x = _prelu(_flatten_permuted(x) @ w[12] + w[13], w[14])
  return x @ w[15] + w[16], x @ w[17] + w[18], _softmax(x @ w[19] + w[20])


REFERENCES = {"pnet": _pnet, "rnet": _rnet, "onet": _onet}

# --- the photos --------------------------------------------------------------------------


def _photos() -> dict[str, np.ndarray]:
  return {"astronaut": real_photos.load("astronaut"), "camera": real_photos.load("camera"),
          "hopper": real_photos.load("grace_hopper")[:512]}


# The face of each photo, x0, y0, x1, y1, checked by eye; the astronaut's second entry is
# MTCNN's one false positive at the default thresholds (O-Net says 0.87): the ring of her
# suit's collar, left of her neck.
FACES = {"astronaut": [183, 61, 267, 174], "camera": [199, 118, 256, 197],
         "hopper": [179, 115, 353, 330]}
ASTRONAUT_COLLAR = [145, 204, 175, 241]


@pytest.fixture(scope="module")
def variables():
  return mtcnn.load_weights()


@pytest.fixture(scope="module")
def detector(variables):
  return detect.MTCNNDetector(variables, max_faces=16)


@pytest.fixture(scope="module")
def photo_detections(detector):
  found = {}
  for name, image in _photos().items():
    d = jax.device_get(detector(image[None]))
    valid = d.valid[0]
    found[name] = (d.boxes[0][valid], d.landmarks[0][valid], d.scores[0][valid], int(d.dropped[0]))
  return found


def test_parameter_counts(variables):
  counts = {name: sum(x.size for x in jax.tree.leaves(v)) for name, v in variables.items()}
  assert counts == {"pnet": 6632, "rnet": 100178, "onet": 389040}


def _face_inputs(size: int) -> np.ndarray:
  """The three photos' faces resized to size x size, as network inputs."""
  return np.stack([cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
                   for (x0, y0, x1, y1), image in zip(FACES.values(), _photos().values())])


@pytest.mark.parametrize("name,shape", [("pnet", (2, 37, 30)), ("rnet", (3, 24, 24)),
                                        ("onet", (3, 48, 48))])
def test_network_matches_numpy_restatement(variables, name, shape):
  rng = np.random.default_rng(0)
  size = {"pnet": 12, "rnet": 24, "onet": 48}[name]
  inputs = [rng.uniform(-1, 1, (*shape, 3)),
            np.asarray(mtcnn.preprocess(_face_inputs(size)), np.float64)]
  if name == "pnet":  # also a whole photo, scaled down: a map of windows
    inputs.append(np.asarray(mtcnn.preprocess(cv2.resize(_photos()["astronaut"], (64, 64),
                                                         interpolation=cv2.INTER_AREA)))[None])
  weights = _keras_weights(name)
  for x in inputs:
    got = mtcnn.NETWORKS[name].apply(variables[name], np.asarray(x, np.float32))
    want = REFERENCES[name](x, weights)
    for g, w in zip(got, want, strict=True):
      assert g.shape == w.shape
      np.testing.assert_allclose(np.asarray(g), w, atol=1e-4, rtol=0)


def test_real_faces_are_faces_to_every_network(variables):
  """The crops score as faces on R-Net and O-Net (a check that weights and layout fit together)."""
  for name, size in (("rnet", 24), ("onet", 48)):
    probs = mtcnn.NETWORKS[name].apply(variables[name], mtcnn.preprocess(_face_inputs(size)))[-1]
    assert np.all(np.asarray(probs)[:, 1] > 0.9), name


def test_pyramid_levels():
  levels = mtcnn.pyramid(720, 1280)
  assert levels[0] == (0.6, 432, 768)
  assert len(levels) == 11 and min(levels[-1][1:]) * 0.709 < 12 <= 720 * levels[-1][0]
  with pytest.raises(ValueError, match="factor"):
    mtcnn.pyramid(720, 1280, factor=1.0)


def test_box_helpers():
  boxes = np.array([[10.0, 20.0, 30.0, 60.0]])
  np.testing.assert_allclose(mtcnn.square(boxes), [[0.0, 20.0, 40.0, 60.0]])
  np.testing.assert_allclose(mtcnn.calibrate(boxes, np.array([[0.1, -0.25, 0.0, 0.5]])),
                             [[12.0, 10.0, 30.0, 80.0]])
  points = np.array([[0.0, 1.0, 0.5, 0.25, 0.75, 0.0, 0.0, 0.5, 1.0, 1.0]])
  np.testing.assert_allclose(mtcnn.landmarks_in_frame(points, boxes),
                             [[[10, 20], [30, 20], [20, 40], [15, 60], [25, 60]]])


def test_crop_samples_bilinearly_with_black_outside():
  image = np.arange(4 * 6 * 1, dtype=np.float32).reshape(4, 6, 1)
  images = np.stack([image + 100, image])  # the boxes below crop frame 1
  # A box of whole pixels at the crop's own size reads the pixels back.
  np.testing.assert_allclose(mtcnn.crop(images, np.array([1]), np.array([[1.0, 0.0, 4.0, 3.0]]), 3)[0],
                             image[0:3, 1:4])
  # Half a pixel off the left edge: the first column blends pixel 0 with black.
  out = np.asarray(mtcnn.crop(images, np.array([1]), np.array([[-0.5, 0.0, 1.5, 2.0]]), 2)[0, :, :, 0])
  np.testing.assert_allclose(out, [[0.0, 0.5], [3.0, 6.5]])


def _check_landmark_order(points):
  left_eye, right_eye, nose, left_mouth, right_mouth = points
  assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
  assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]


def _assert_box_near(box, want, tolerance=0.08):
  want = np.asarray(want, np.float32)
  size = max(want[2] - want[0], want[3] - want[1])
  np.testing.assert_allclose(box, want, atol=tolerance * size, rtol=0)


@pytest.mark.parametrize("name", list(FACES))
def test_finds_the_face_in_a_photo(photo_detections, name):
  boxes, landmarks, scores, dropped = photo_detections[name]
  assert dropped == 0
  assert len(boxes) == (2 if name == "astronaut" else 1)  # see ASTRONAUT_COLLAR
  assert scores[0] > 0.99 and np.all(np.diff(scores) <= 0)
  _assert_box_near(boxes[0], FACES[name])
  _check_landmark_order(landmarks[0])
  assert np.all((landmarks[0] > boxes[0][:2]) & (landmarks[0] < boxes[0][2:]))
  if name == "astronaut":
    _assert_box_near(boxes[1], ASTRONAUT_COLLAR)
    assert scores[1] < 0.9


def compose_faces(sizes_and_places, shape=(512, 512)):
  """The photos' faces (cycled) pasted onto a brick texture: (image, true boxes [n, 4]).

  Each entry is (face size, x, y): the face's pinned box is scaled to `size`
  pixels across and pasted with a 30% margin, its top-left corner at (x, y).
  """
  brick = cv2.resize(skimage.data.brick(), shape[::-1]).astype(np.float32)
  image = (brick[..., None] * np.array([0.9, 0.6, 0.45])).astype(np.uint8)
  photos = list(_photos().values())
  boxes = []
  for k, (size, x, y) in enumerate(sizes_and_places):
    photo, (x0, y0, x1, y1) = photos[k % 3], list(FACES.values())[k % 3]
    scale = size / max(x1 - x0, y1 - y0)
    margin = 0.3 * max(x1 - x0, y1 - y0)
    left, top = int(x0 - margin), int(y0 - margin)
    patch = photo[top:int(y1 + margin), left:int(x1 + margin)]
    patch = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    assert y + patch.shape[0] <= shape[0] and x + patch.shape[1] <= shape[1]
    image[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
    boxes.append([x + (x0 - left) * scale, y + (y0 - top) * scale,
                  x + (x1 - left) * scale, y + (y1 - top) * scale])
  return image, np.array(boxes, np.float32)


COMPOSED = [(200, 0, 0), (150, 290, 0), (110, 290, 250), (80, 0, 340), (60, 120, 340),
            (45, 210, 340), (30, 460, 260), (40, 450, 440)]


def test_finds_pasted_faces_of_many_sizes(detector):
  image, truth = compose_faces(COMPOSED)
  d = jax.device_get(detector(image[None]))
  boxes = d.boxes[0][d.valid[0]]
  iou = np.stack([np.asarray(detect.box_iou(t, boxes)) for t in truth])  # [faces, found]
  sizes = np.array([size for size, _, _ in COMPOSED])
  assert np.all(iou[sizes >= 40].max(1) >= 0.5)
  assert np.all(iou.max(0) >= 0.5)  # no false positives on the bricks
  for t, points in zip(truth, d.landmarks[0][d.valid[0]][iou.argmax(1)]):
    _check_landmark_order(points)


def test_few_compiled_shapes(detector):
  photos = _photos()
  detector(photos["astronaut"][None])
  compiled = [stage._cache_size() for stage in detector._stages]
  d = detector(photos["astronaut"][None])  # the same crop counts: nothing new
  assert [stage._cache_size() for stage in detector._stages] == compiled
  assert int(d.valid.sum()) >= 1
  detector(photos["camera"][None])  # another frame of the same shape: stage 1 as it was
  assert detector._stages[0]._cache_size() == compiled[0]


def test_crop_counts_are_a_power_of_two_or_three_times_one(detector):
  def slots(count, num=8, slots_per_frame=1024):
    return detector._slots(np.arange(num * slots_per_frame).reshape(num, -1) < count)
  assert [slots(n) for n in (0, 1, 64, 65, 96, 97, 129, 700, 3812)] == [
      64, 64, 64, 96, 96, 128, 192, 768, 4096]
  assert slots(8192) == 8192 and slots(40, num=1, slots_per_frame=48) == 48


def _every_slot_detector(variables, monkeypatch, **kwargs) -> detect.MTCNNDetector:
  """The cascade as it was: jax.image.resize's pyramid, R-Net and O-Net on every slot of every frame."""
  monkeypatch.setattr(resampling, "resize", lambda x, rows, cols: jax.image.resize(
      x.astype(np.float32), (x.shape[0], rows, cols, x.shape[3]), "linear"))
  reference = detect.MTCNNDetector(variables, **kwargs)

  def run(name, variables, frames, boxes, valid, size, slots):
    num, count = boxes.shape[:2]
    crops = mtcnn.crop(frames, np.repeat(np.arange(num), count), boxes.reshape(-1, 4), size)
    outputs = mtcnn.NETWORKS[name].apply(variables[name], mtcnn.preprocess(crops))
    return [out.reshape(num, count, *out.shape[1:]) for out in outputs]
  reference._run = run
  return reference


@pytest.mark.slow
def test_packed_crops_give_the_every_slot_detections(variables, monkeypatch):
  """Two frames with different counts of candidates, 4 and 3 faces, 2 kept: some dropped.

  Boxes and landmarks within 1e-3 px (+ 1e-5 relative), scores within 1e-5;
  the rest exact. The pyramids differ by float32 rounding (`resampling.resize`
  vs jax.image.resize), which moves boxes by ~1e-4 px here.
  """
  frames = np.stack([compose_faces([(70, 0, 0), (50, 130, 10), (36, 20, 140), (28, 150, 160)],
                                   (224, 224))[0],
                     compose_faces([(90, 70, 40), (40, 0, 150), (30, 170, 10)], (224, 224))[0]])
  settings = {"max_faces": 2, "max_onet": 32}
  got = jax.device_get(detect.MTCNNDetector(variables, **settings)(frames))
  want = jax.device_get(_every_slot_detector(variables, monkeypatch, **settings)(frames))
  assert got.valid.all() and np.all(got.dropped > 0)
  np.testing.assert_array_equal(got.valid, want.valid)
  np.testing.assert_array_equal(got.dropped, want.dropped)
  for name in ("boxes", "landmarks"):
    np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)


def test_made_by_name_with_installed_weights():
  det = detect.make("mtcnn", max_faces=8)
  assert det.max_faces == 8 and det.max_onet == 8
  settings = det.settings()
  assert settings["min_face"] == 20 and settings["thresholds"] == [0.6, 0.7, 0.7]
  assert settings["factor"] == 0.709 and settings["nms_thresholds"]["onet_min"] == 0.7


def test_missing_package_is_a_one_line_error(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ValueError, match="pip install mtcnn"):
    mtcnn.load_weights()


def test_min_overlap_nms_drops_a_box_inside_a_kept_one():
  boxes = np.array([[0.0, 0.0, 100.0, 100.0], [10.0, 10.0, 40.0, 40.0]])
  scores = np.array([0.9, 0.8])
  np.testing.assert_allclose(detect.box_iom(boxes[0], boxes), [1.0, 1.0])
  assert detect.nms(boxes, scores, 0.7, 0.5, 2)[1].tolist() == [True, True]  # IoU 0.09
  assert detect.nms(boxes, scores, 0.7, 0.5, 2, by_min=True)[1].tolist() == [True, False]


def test_networks_in_chunks_equal_one_call(variables):
  """R-Net as the detector runs it on CPU (chunking.in_chunks), with a padded last chunk."""
  crops = np.random.default_rng(1).uniform(-1, 1, (mtcnn.CPU_CHUNK + 5, 24, 24, 3))
  crops = crops.astype(np.float32)
  whole = mtcnn.NETWORKS["rnet"].apply(variables["rnet"], crops)
  chunked = chunking.in_chunks(functools.partial(mtcnn.NETWORKS["rnet"].apply, variables["rnet"]),
                               crops, chunk=mtcnn.CPU_CHUNK)
  for got, want in zip(chunked, whole, strict=True):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_frames_with_one_video_index_are_detected_once(variables):
  """A short batch padded with copies of its last frame: the copies get the frame's faces, and
  P-Net runs once per distinct index."""
  frames = np.stack([compose_faces([(70, 0, 0), (40, 130, 20)], (224, 224))[0],
                     compose_faces([(60, 90, 60)], (224, 224))[0]])
  det = detect.MTCNNDetector(variables, max_faces=4)
  propose, refine, output = det._stages
  proposed = []
  det._stages = (lambda v, frame: proposed.append(frame) or propose(v, frame), refine, output)
  padded = jax.device_get(det(frames[[0, 1, 1, 1]], [3, 7, 7, 7]))
  assert len(proposed) == 2
  alone = jax.device_get(det(frames, [3, 7]))
  for name in ("boxes", "landmarks", "scores", "valid", "dropped"):
    got, want = getattr(padded, name), getattr(alone, name)
    np.testing.assert_array_equal(got, want[[0, 1, 1, 1]])


def test_level_windows_two_cells_apart_overlap_at_exactly_the_level_threshold():
  """Windows in whole level pixels: IoU 0.5 exactly, so the level NMS (IoU > 0.5 suppresses)
  keeps both, whatever a compilation's rounding (frame pixels decided such ties by rounding)."""
  probs = np.zeros((5, 9, 2), np.float32)
  probs[2, 3, 1], probs[2, 5, 1] = 0.9, 0.8  # cells 2 apart: windows 4 level pixels apart
  windows, _, scores = mtcnn.pnet_candidates(np.zeros((5, 9, 4), np.float32), probs, 4)
  np.testing.assert_array_equal(windows[:2], [[6, 4, 18, 16], [10, 4, 22, 16]])
  assert float(detect.box_iou(windows[0], windows[1:2])[0]) == 0.5
  assert detect.nms(windows, scores, 0.5, 0.6, 4)[1].tolist() == [True, True, False, False]
  np.testing.assert_allclose(mtcnn.in_frame(windows[:1], (720 / 432, 1280 / 768)),
                             [[10.0, 6.6666665, 30.0, 26.666666]], rtol=1e-6)
