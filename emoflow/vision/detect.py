"""Face detection: one interface for every source of faces, plus the jitted decoding they share.

A detector maps a batch of frames to `Detections`: per frame up to K faces,
each a box, the 5 landmarks `align.py` expects and a score, padded to K with a
`valid` mask so a batch has static shapes on the device. Detectors are chosen
by name (`make`): `annotations` (faces known in advance: a dataset's boxes
or a JSON file), `yunet` (OpenCV's YuNet, given its ONNX file),
`retinaface` (the paper's detector, in Flax; it builds on `make_anchors`,
`decode` and `nms` below) and `mtcnn` (the MTCNN cascade, in Flax, with the
weights of the `mtcnn` package).
"""

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from emoflow import chunking
from emoflow.vision import mtcnn, resampling, retinaface, retinaface_convert


class Detections(struct.PyTreeNode):
  """The faces of F frames, padded to K slots per frame; empty slots are all zero.

  Landmarks are (x, y) pixels in emoflow.vision.align order (left eye, right
  eye, nose tip, left and right mouth corner; left is image-left). `dropped`
  counts the faces a frame had beyond K (lowest scores first, then last in
  input order): a crowd larger than K is never cut without a trace.
  """

  boxes: jax.Array  # float32 [F, K, 4]: x0, y0, x1, y1 pixels
  landmarks: jax.Array  # float32 [F, K, 5, 2]
  scores: jax.Array  # float32 [F, K]
  valid: jax.Array  # bool [F, K]
  dropped: jax.Array  # int32 [F]

  @classmethod
  def from_lists(cls, faces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 max_faces: int) -> "Detections":
    """Pads per-frame (boxes [n, 4], landmarks [n, 5, 2], scores [n]) to K = max_faces.

    A frame with more than K faces keeps its K best scores (the earlier face
    on ties) and counts the rest in `dropped`.
    """
    num = len(faces)
    boxes = np.zeros((num, max_faces, 4), np.float32)
    landmarks = np.zeros((num, max_faces, 5, 2), np.float32)
    scores = np.zeros((num, max_faces), np.float32)
    valid = np.zeros((num, max_faces), bool)
    dropped = np.zeros(num, np.int32)
    for f, (b, lm, s) in enumerate(faces):
      s = np.asarray(s, np.float32).reshape(-1)
      keep = np.argsort(-s, kind="stable")[:max_faces]
      n = len(keep)
      boxes[f, :n] = np.asarray(b, np.float32).reshape(-1, 4)[keep]
      landmarks[f, :n] = np.asarray(lm, np.float32).reshape(-1, 5, 2)[keep]
      scores[f, :n] = s[keep]
      valid[f, :n] = True
      dropped[f] = len(s) - n
    return cls(boxes=jnp.asarray(boxes), landmarks=jnp.asarray(landmarks),
               scores=jnp.asarray(scores), valid=jnp.asarray(valid), dropped=jnp.asarray(dropped))


class Detector(Protocol):
  """frames: uint8 RGB [F, H, W, 3]; indices: the frames' positions in the video.

  Detectors that look at pixels ignore `indices`; the annotation detector
  needs them to look its faces up.
  """

  def __call__(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> Detections:
    ...


class AnnotationDetector:
  """Faces known in advance, returned for the frames asked for, with score 1.

  `faces` maps a frame index to that frame's faces (a dict, or a list indexed
  by frame), each face a mapping with "box" [x0, y0, x1, y1] and "landmarks"
  [[x, y]] * 5 in align.py order: exactly a face of the annotation JSON, so
  `{fr["index"]: fr["faces"] for fr in json["frames"]}` is a valid argument.
  A frame with no entry is an error, not an empty frame: unannotated is not
  faceless.
  """

  def __init__(self, faces: Mapping[int, Sequence[Mapping[str, Any]]] | Sequence[Sequence[Mapping[str, Any]]],
               max_faces: int = 64):
    self.faces = faces
    self.max_faces = max_faces

  def _frame(self, index: int):
    try:
      faces = self.faces[index]
    except (KeyError, IndexError):
      raise ValueError(f"frame {index} has no annotated faces") from None
    return (np.array([face["box"] for face in faces], np.float32).reshape(-1, 4),
            np.array([face["landmarks"] for face in faces], np.float32).reshape(-1, 5, 2),
            np.ones(len(faces), np.float32))

  def __call__(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> Detections:
    if indices is None or len(indices) != len(frames):
      raise ValueError("AnnotationDetector needs the video index of every frame")
    return Detections.from_lists([self._frame(int(i)) for i in indices], self.max_faces)


class YuNetDetector:
  """OpenCV's YuNet (`cv2.FaceDetectorYN`) from a user-supplied ONNX file.

  The file is face_detection_yunet_*.onnx from github.com/opencv/opencv_zoo
  (models/face_detection_yunet). YuNet names its points from the subject's
  side (right eye, left eye, nose, right and left mouth corner): its "right
  eye" is the image-left one, so its order already is align.py's, the order
  OpenCV's own FaceRecognizerSF.alignCrop feeds to the same ArcFace template.
  """

  def __init__(self, model_path: str, score_threshold: float = 0.6, nms_threshold: float = 0.3,
               max_faces: int = 64):
    if not os.path.isfile(model_path):
      raise ValueError(f"{model_path}: YuNet ONNX file not found "
                       "(face_detection_yunet_*.onnx from github.com/opencv/opencv_zoo)")
    self.max_faces = max_faces
    try:
      self._net = cv2.FaceDetectorYN.create(model_path, "", (320, 320), score_threshold,
                                            nms_threshold, 5000)
    except cv2.error as e:
      reason = str(e).strip().splitlines()[-1]
      raise ValueError(f"{model_path}: OpenCV cannot load it as a YuNet model ({reason})") from None

  def _frame(self, frame: np.ndarray):
    self._net.setInputSize((frame.shape[1], frame.shape[0]))
    _, found = self._net.detect(np.ascontiguousarray(frame[..., ::-1]))
    found = np.zeros((0, 15), np.float32) if found is None else found
    x, y, w, h = found[:, :4].T
    return np.stack([x, y, x + w, y + h], 1), found[:, 4:14].reshape(-1, 5, 2), found[:, 14]

  def __call__(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> Detections:
    return Detections.from_lists([self._frame(frame) for frame in frames], self.max_faces)


# --- anchors, box coding and NMS (RetinaFace, RPN) -------------------------------------------


def make_anchors(image_size: tuple[int, int], strides: Sequence[int] = (8, 16, 32),
                 min_sizes: Sequence[Sequence[int]] = ((16, 32), (64, 128), (256, 512))) -> np.ndarray:
  """RetinaFace's square prior boxes for an image of (height, width): float32 [A, 4] (cx, cy, w, h).

  Per stride s, a ceil(H/s) x ceil(W/s) grid of cell centres, and at each
  cell one anchor per min size; ordered level, row, column, size, which is
  the order of the network's flattened head outputs. In pixels: the public
  code keeps them in units of the image and scales the decoded boxes
  afterwards, and as decoding is linear in the anchor this gives the same
  boxes directly in pixels.
  """
  height, width = image_size
  levels = []
  for stride, sizes in zip(strides, min_sizes, strict=True):
    rows, cols = -(-height // stride), -(-width // stride)
    cy, cx, size = np.meshgrid((np.arange(rows) + 0.5) * stride, (np.arange(cols) + 0.5) * stride,
                               np.asarray(sizes, np.float64), indexing="ij")
    levels.append(np.stack([cx, cy, size, size], -1).reshape(-1, 4))
  return np.concatenate(levels).astype(np.float32)


def decode_boxes(deltas: jax.Array, anchors: jax.Array,
                 variances: tuple[float, float] = (1.0, 1.0)) -> jax.Array:
  """Box offsets [..., A, 4] (dx, dy, dw, dh) from anchors [A, 4] (cx, cy, w, h) -> (x0, y0, x1, y1).

  The R-CNN parametrisation: a centre offset in units of variances[0] *
  anchor size and a log size ratio in units of variances[1] (RetinaFace uses
  (0.1, 0.2), the RPN (1, 1)).
  """
  centre, size = anchors[:, :2], anchors[:, 2:]
  box_centre = centre + deltas[..., :2] * variances[0] * size
  box_size = size * jnp.exp(deltas[..., 2:] * variances[1])
  return jnp.concatenate([box_centre - box_size / 2, box_centre + box_size / 2], -1)


def encode_boxes(boxes: jax.Array, anchors: jax.Array,
                 variances: tuple[float, float] = (1.0, 1.0)) -> jax.Array:
  """The inverse of decode_boxes: boxes [..., A, 4] -> offsets [..., A, 4].

  Boxes must have positive width and height (the size is a log ratio).
  """
  centre, size = anchors[:, :2], anchors[:, 2:]
  box_centre = (boxes[..., :2] + boxes[..., 2:]) / 2
  box_size = boxes[..., 2:] - boxes[..., :2]
  return jnp.concatenate([(box_centre - centre) / (variances[0] * size),
                          jnp.log(box_size / size) / variances[1]], -1)


@jax.jit
def decode(loc: jax.Array, landm: jax.Array, anchors: jax.Array,
           variances: tuple[float, float] = (0.1, 0.2)) -> tuple[jax.Array, jax.Array]:
  """Head outputs -> boxes [..., A, 4] (x0, y0, x1, y1) and landmarks [..., A, 5, 2], in anchor units.

  The SSD / RetinaFace parametrisation: decode_boxes with `variances`, and
  each landmark an offset from the anchor centre like the box centre.

  Args:
    loc: [..., A, 4] (dx, dy, dw, dh).
    landm: [..., A, 10] (dx, dy) per landmark.
    anchors: [A, 4] (cx, cy, w, h) from make_anchors.
  """
  centre, size = anchors[:, :2], anchors[:, 2:]
  boxes = decode_boxes(loc, anchors, variances)
  offsets = landm.reshape(*landm.shape[:-1], 5, 2)
  landmarks = centre[:, None] + offsets * variances[0] * size[:, None]
  return boxes, landmarks


def _area(boxes: jax.Array) -> jax.Array:
  return jnp.prod(jnp.clip(boxes[..., 2:] - boxes[..., :2], 0), -1)


def _intersection(box: jax.Array, boxes: jax.Array) -> jax.Array:
  return _area(jnp.concatenate([jnp.maximum(box[:2], boxes[:, :2]),
                                jnp.minimum(box[2:], boxes[:, 2:])], -1))


def _ratio(inter: jax.Array, denominator: jax.Array) -> jax.Array:
  """inter / denominator, 0 where the denominator is 0."""
  return jnp.where(denominator > 0, inter / jnp.where(denominator > 0, denominator, 1), 0.0)


def box_iou(box: jax.Array, boxes: jax.Array) -> jax.Array:
  """IoU of one box [4] with boxes [N, 4] (x0, y0, x1, y1, continuous: no +1); 0 when both are empty."""
  inter = _intersection(box, boxes)
  return _ratio(inter, _area(box) + _area(boxes) - inter)


def box_iom(box: jax.Array, boxes: jax.Array) -> jax.Array:
  """Intersection over the smaller area (MTCNN's "Min" overlap) of one box [4] with boxes [N, 4]; 0 when empty."""
  return _ratio(_intersection(box, boxes), jnp.minimum(_area(box), _area(boxes)))


NMS_BLOCK = 64  # candidates nms settles per step


@functools.partial(jax.jit, static_argnames=("max_out", "by_min"))
def nms(boxes: jax.Array, scores: jax.Array, iou_threshold: float, score_threshold: float,
        max_out: int, by_min: bool = False) -> tuple[jax.Array, jax.Array]:
  """Greedy non-maximum suppression with static shapes: (indices int32 [max_out], valid bool [max_out]).

  Candidates are the boxes with score > score_threshold. Repeatedly the best
  remaining candidate is kept (the lower index on ties) and every candidate
  whose IoU with it exceeds iou_threshold is dropped, until max_out are kept
  or none remain. Kept indices come in descending score; unused slots hold
  index 0 and valid False. vmap it over frames. by_min: overlap is box_iom
  instead of IoU.

  Computed in score order NMS_BLOCK candidates at a time, with the same
  result: a block's candidates that no box kept so far overlaps are kept
  unless an earlier candidate of the block that is itself kept overlaps
  them, which settles in a few vectorised rounds (the fixed point, reached
  from "all kept", is unique, as each candidate depends on earlier ones
  only). A loop step per block instead of per kept box: on CPU the loop's
  steps, not its arithmetic, were the cost. O(N log N + N * max_out) time,
  O(N + NMS_BLOCK * max_out) memory.

  Args:
    boxes: [N, 4] (x0, y0, x1, y1).
    scores: [N].
  """
  overlap = jax.vmap(box_iom if by_min else box_iou, (0, None))  # [kept, others]
  order = jnp.argsort(-scores, stable=True)
  size = -(-scores.shape[0] // NMS_BLOCK) * NMS_BLOCK
  pad = size - scores.shape[0]
  sorted_boxes = jnp.pad(boxes[order], ((0, pad), (0, 0)))
  candidate = jnp.pad(scores[order] > score_threshold, (0, pad))  # a prefix of the order
  num_candidates = candidate.sum()
  before = jnp.arange(NMS_BLOCK)[:, None] < jnp.arange(NMS_BLOCK)  # [j, i]: j comes before i

  def cond(carry):
    start, count, _, _ = carry
    return (start < num_candidates) & (count < max_out)

  def body(carry):
    start, count, kept_boxes, kept_at = carry
    block = jax.lax.dynamic_slice_in_dim(sorted_boxes, start, NMS_BLOCK)
    alive = jax.lax.dynamic_slice_in_dim(candidate, start, NMS_BLOCK)
    earlier = (overlap(kept_boxes, block) > iou_threshold) & (jnp.arange(max_out) < count)[:, None]
    alive = alive & ~earlier.any(0)
    suppresses = (overlap(block, block) > iou_threshold) & before

    def settle(state):
      keep, _ = state
      settled = alive & ~(suppresses & keep[:, None]).any(0)
      return settled, (settled != keep).any()

    keep, _ = jax.lax.while_loop(lambda state: state[1], settle, (alive, jnp.bool_(True)))
    slot = jnp.where(keep, count + jnp.cumsum(keep, dtype=jnp.int32) - 1, max_out)  # beyond: dropped
    kept_boxes = kept_boxes.at[slot].set(block, mode="drop")
    kept_at = kept_at.at[slot].set(start + jnp.arange(NMS_BLOCK, dtype=jnp.int32), mode="drop")
    return (start + NMS_BLOCK, jnp.minimum(count + keep.sum(dtype=jnp.int32), max_out), kept_boxes,
            kept_at)

  init = (jnp.int32(0), jnp.int32(0), jnp.zeros((max_out, 4), boxes.dtype),
          jnp.zeros(max_out, jnp.int32))
  _, count, _, kept_at = jax.lax.while_loop(cond, body, init)
  valid = jnp.arange(max_out) < count
  return jnp.where(valid, order[kept_at], 0).astype(jnp.int32), valid


def select_faces(boxes: jax.Array, landmarks: jax.Array, scores: jax.Array, *,
                 nms_threshold: float, score_threshold: float, max_faces: int,
                 by_min: bool = False) -> Detections:
  """Every frame's candidates (boxes [F, A, 4], landmarks [F, A, 5, 2], scores [F, A]) -> its
  K = max_faces faces by `nms`, empty slots zero.

  `dropped` counts, for a frame whose K slots all filled, the candidates
  above score_threshold that none of the K kept faces suppresses: an upper
  bound on the faces lost (NMS might suppress some of them among
  themselves), and 0 for every frame with fewer than K faces.
  """
  def frame(boxes, landmarks, scores):
    keep, valid = nms(boxes, scores, nms_threshold, score_threshold, max_faces, by_min=by_min)
    overlap = jax.vmap(box_iom if by_min else box_iou, (0, None))(boxes[keep], boxes)
    unsuppressed = jnp.all((overlap <= nms_threshold) | ~valid[:, None], 0).at[keep].set(False)
    dropped = jnp.where(valid.all(), jnp.sum(unsuppressed & (scores > score_threshold)), 0)
    boxes, landmarks, scores = _take(keep, valid, boxes, landmarks, scores)
    return Detections(boxes=boxes, landmarks=landmarks, scores=scores, valid=valid,
                      dropped=dropped.astype(jnp.int32))
  return jax.vmap(frame)(boxes, landmarks, scores)


def _take(keep: jax.Array, valid: jax.Array, *arrays: jax.Array) -> list[jax.Array]:
  """arrays[keep] with the slots that are not valid zeroed."""
  return [jnp.where(valid.reshape(-1, *[1] * (a.ndim - 1)), a[keep], 0) for a in arrays]


# --- RetinaFace --------------------------------------------------------------------------


class RetinaFaceDetector:
  """The paper's detector: RetinaFace (retinaface.py) + anchor decoding + per-frame NMS, jitted.

  One jitted function runs the whole batch (preprocess, network, decode,
  softmax(conf)[..., 1] as the face score, NMS vmapped over frames, gather);
  JAX compiles it once per frame shape. `input_scale` resizes the frames
  (bilinear, antialiased when shrinking) to round(s*H) x round(s*W) before
  the network, e.g. 0.5 to run 4x fewer pixels on large frames at the cost
  of the smallest faces; boxes and landmarks come back in frame pixels.

  `dropped` counts, for a frame whose K = max_faces slots all filled, the
  candidates above score_threshold that none of the K kept faces suppresses:
  an upper bound on the faces lost (NMS might suppress some of them among
  themselves), and 0 for every frame with fewer than K faces.
  """

  def __init__(self, model: retinaface.RetinaFace, variables: Mapping[str, Any], *,
               score_threshold: float = 0.5, nms_threshold: float = 0.4, max_faces: int = 256,
               input_scale: float = 1.0):
    if input_scale <= 0:
      raise ValueError(f"input_scale must be positive, got {input_scale}")
    self.model = model
    self.variables = variables
    self.score_threshold = score_threshold
    self.nms_threshold = nms_threshold
    self.max_faces = max_faces
    self.input_scale = input_scale
    self._detect = jax.jit(self._forward)

  @classmethod
  def build(cls, weights: str | None = None, model: retinaface.RetinaFace | None = None,
            variables: Mapping[str, Any] | None = None, **kwargs) -> "RetinaFaceDetector":
    """From `weights` (a public PyTorch checkpoint, see retinaface_convert) or `model` + `variables`."""
    if (weights is None) == (model is None or variables is None):
      raise ValueError("retinaface detector needs either weights=PATH or model= and variables=")
    if weights is not None:
      model, variables = retinaface_convert.load_retinaface(weights)
    return cls(model, variables, **kwargs)

  def _forward(self, variables, frames: jax.Array) -> Detections:
    num, height, width, _ = frames.shape
    images = retinaface.preprocess(frames)
    size = (max(1, round(height * self.input_scale)), max(1, round(width * self.input_scale)))
    if size != (height, width):
      images = resampling.resize(images, *size)
    loc, conf, landm = self.model.apply(variables, images)
    boxes, landmarks = decode(loc.astype(jnp.float32), landm.astype(jnp.float32),
                              jnp.asarray(make_anchors(size)))
    scale = jnp.asarray([width / size[1], height / size[0]], jnp.float32)
    boxes, landmarks = boxes * jnp.tile(scale, 2), landmarks * scale
    scores = jax.nn.softmax(conf.astype(jnp.float32))[..., 1]
    return select_faces(boxes, landmarks, scores, nms_threshold=self.nms_threshold,
                        score_threshold=self.score_threshold, max_faces=self.max_faces)

  def __call__(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> Detections:
    del indices  # looks at pixels only
    return self._detect(self.variables, jnp.asarray(frames))


# --- MTCNN -------------------------------------------------------------------------------


class MTCNNDetector:
  """MTCNN (mtcnn.py): the original's three-stage cascade, each stage jitted with static shapes.

  Per frame, as the original MATLAB/Caffe code does it (but with continuous
  box coordinates, width x1 - x0, where it counts whole pixels, x1 - x0 + 1):
  1. P-Net on every level of the pyramid (`mtcnn.pyramid`, 12 / min_face
     down by `factor`; levels resized bilinearly with antialiasing,
     `resampling.resize`); per level its best 4 * `level_windows` windows, NMS
     (IoU 0.5, face probability > thresholds[0]; windows in whole level
     pixels, so that ties at 0.5 are exact) to `level_windows`; over
     all levels NMS (IoU 0.7) to `max_rnet`; then box regression and
     squaring.
  2. R-Net on 24x24 crops (`mtcnn.crop`: bilinear, black outside the frame);
     NMS (IoU 0.7, probability > thresholds[1]) to `max_onet`; regression,
     squaring.
  3. O-Net on 48x48 crops; landmarks placed on the O-Net input box;
     regression; final NMS over intersection / smaller area ("Min", 0.7,
     probability > thresholds[2]) to K = max_faces. Scores are O-Net's face
     probability.
  R-Net and O-Net see only the candidates there are: after each stage the
  host reads how many of the batch's candidate slots are valid, and the next
  stage packs those into a fixed number of crops, the count rounded up to
  the next 2^k or 3 * 2^k (at least MIN_SLOTS), runs its network on them and
  puts the outputs back in their slots. The other slots would be masked
  anyway, so the detections are those of running every slot, at a cost that
  follows the candidates; stage 1 compiles once per frame size (it runs a
  frame at a time, and once per distinct video index: the copies padding a
  short batch cost nothing), stages 2 and 3 once per batch shape and crop
  count, a few counts in all (the counts of a video's batches are alike).
  On CPU R-Net and O-Net run mtcnn.CPU_CHUNK crops a call (chunking.in_chunks).
  `dropped` counts, for a frame whose K slots all filled, the O-Net faces
  above the threshold that none of the kept ones suppresses (as
  RetinaFaceDetector).
  Weights: `variables` ({"pnet", "rnet", "onet"} -> Flax variables, e.g.
  from a model directory), by default `mtcnn.load_weights()` from the
  installed `mtcnn` package.
  """

  NMS_THRESHOLDS = {"level": 0.5, "pyramid": 0.7, "rnet": 0.7, "onet_min": 0.7}
  MIN_SLOTS = 64  # the fewest crops R-Net and O-Net run on (a power of two): fewer compiled shapes

  def __init__(self, variables: Mapping[str, Any] | None = None, *, min_face: float = 20,
               thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709,
               max_faces: int = 256, level_windows: int = 256, max_rnet: int = 1024,
               max_onet: int | None = None):
    if len(thresholds) != 3:
      raise ValueError(f"thresholds must be 3 (P-Net, R-Net, O-Net), got {len(thresholds)}")
    if min_face <= 0 or not 0 < factor < 1:
      raise ValueError(f"need min_face > 0 and 0 < factor < 1, got {min_face} and {factor}")
    self.variables = mtcnn.load_weights() if variables is None else variables
    self.min_face = min_face
    self.thresholds = tuple(float(t) for t in thresholds)
    self.factor = factor
    self.max_faces = max_faces
    self.level_windows = level_windows
    self.max_rnet = max_rnet
    self.max_onet = max_faces if max_onet is None else max_onet
    self._stages = (jax.jit(self._proposals), jax.jit(self._refine, static_argnames="slots"),
                    jax.jit(self._output, static_argnames="slots"))

  def settings(self) -> dict[str, Any]:
    """Everything besides the weights that shapes the detections, JSON-ready (for a model directory)."""
    return {"min_face": self.min_face, "thresholds": list(self.thresholds), "factor": self.factor,
            "nms_thresholds": dict(self.NMS_THRESHOLDS), "max_faces": self.max_faces,
            "level_windows": self.level_windows, "max_rnet": self.max_rnet,
            "max_onet": self.max_onet}

  def _proposals(self, variables, frame: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Stage 1 on one frame [H, W, 3] -> R-Net boxes [max_rnet, 4] and their valid mask.

    A frame at a time: its pyramid stays in cache (about 2x faster on 2 CPU
    cores than all frames' levels at once), and the copies that pad a short
    batch cost nothing.
    """
    height, width, _ = frame.shape
    windows, offsets, scores = [], [], []
    for _, rows, cols in mtcnn.pyramid(height, width, self.min_face, self.factor):
      level = resampling.resize(frame[None], rows, cols)
      regression, probs = mtcnn.PNet().apply(variables["pnet"], mtcnn.preprocess(level))
      w, o, s = mtcnn.pnet_candidates(regression[0], probs[0], 4 * self.level_windows)
      keep, valid = nms(w, s, self.NMS_THRESHOLDS["level"], self.thresholds[0], self.level_windows)
      w, o, s = _take(keep, valid, w, o, s)
      windows.append(mtcnn.in_frame(w, (height / rows, width / cols)))
      offsets.append(o)
      scores.append(jnp.where(valid, s, -1.0))
    windows, offsets, scores = (jnp.concatenate(x) for x in (windows, offsets, scores))
    keep, valid = nms(windows, scores, self.NMS_THRESHOLDS["pyramid"], self.thresholds[0],
                      self.max_rnet)
    windows, offsets = _take(keep, valid, windows, offsets)
    return mtcnn.square(mtcnn.calibrate(windows, offsets)), valid

  def _run(self, name: str, variables, frames: jax.Array, boxes: jax.Array, valid: jax.Array,
           size: int, slots: int) -> list[jax.Array]:
    """The network `name` on size x size crops of the valid ones of boxes [F, N, 4], packed into
    `slots` crops (at least as many as are valid): its outputs, each [F, N, ...], 0 where not valid."""
    num, count = valid.shape
    packed = jnp.flatnonzero(valid, size=slots, fill_value=0)  # frame * count + slot
    crops = mtcnn.crop(frames, packed // count, boxes.reshape(-1, 4)[packed], size)
    outputs = chunking.in_chunks(functools.partial(mtcnn.NETWORKS[name].apply, variables[name]),
                                 mtcnn.preprocess(crops), chunk=chunking.on_cpu(mtcnn.CPU_CHUNK))
    rank = jnp.cumsum(valid.reshape(-1)) - 1  # each valid slot's place in `packed`
    return [jnp.where(valid.reshape(-1, *[1] * (out.ndim - 1)), out[rank], 0).reshape(
        num, count, *out.shape[1:]) for out in outputs]

  def _refine(self, variables, frames: jax.Array, boxes: jax.Array, valid: jax.Array, *,
              slots: int) -> tuple[jax.Array, jax.Array]:
    """Stage 2: R-Net on stage 1's valid boxes, `slots` crops -> O-Net boxes [F, max_onet, 4], valid mask."""
    regression, probs = self._run("rnet", variables, frames, boxes, valid, mtcnn.RNET_SIZE, slots)
    scores = jnp.where(valid, probs[..., 1], -1.0)
    keep, valid = jax.vmap(functools.partial(
        nms, iou_threshold=self.NMS_THRESHOLDS["rnet"], score_threshold=self.thresholds[1],
        max_out=self.max_onet))(boxes, scores)
    boxes, regression = jax.vmap(_take)(keep, valid, boxes, regression)
    return mtcnn.square(mtcnn.calibrate(boxes, regression)), valid

  def _output(self, variables, frames: jax.Array, boxes: jax.Array, valid: jax.Array, *,
              slots: int) -> Detections:
    """Stage 3: O-Net on stage 2's valid boxes, `slots` crops -> the faces."""
    regression, points, probs = self._run("onet", variables, frames, boxes, valid, mtcnn.ONET_SIZE,
                                          slots)
    landmarks = mtcnn.landmarks_in_frame(points, boxes)
    boxes = mtcnn.calibrate(boxes, regression)
    scores = jnp.where(valid, probs[..., 1], -1.0)
    return select_faces(boxes, landmarks, scores, nms_threshold=self.NMS_THRESHOLDS["onet_min"],
                        score_threshold=self.thresholds[2], max_faces=self.max_faces, by_min=True)

  def _slots(self, valid: jax.Array) -> int:
    """The crops the next stage packs valid's [F, N] candidates into: their count rounded up to
    the next 2^k or 3 * 2^k, at least MIN_SLOTS, at most F * N."""
    count = int(np.asarray(valid).sum())
    slots = self.MIN_SLOTS
    while slots < count:
      slots = slots // 2 * 3 if slots & (slots - 1) == 0 else slots // 3 * 4
    return min(slots, valid.size)

  def __call__(self, frames: np.ndarray, indices: Sequence[int] | None = None) -> Detections:
    """Frames with the same video index (the copies that pad a short batch) are detected once."""
    propose, refine, output = self._stages
    first = _first_of_each_index(indices, len(frames))
    boxes = np.zeros((len(frames), self.max_rnet, 4), np.float32)
    valid = np.zeros((len(frames), self.max_rnet), bool)
    for f in np.unique(first):
      boxes[f], valid[f] = jax.device_get(propose(self.variables, frames[f]))
    frames = jnp.asarray(frames)
    boxes, valid = refine(self.variables, frames, boxes, valid, slots=self._slots(valid))
    found = output(self.variables, frames, boxes, valid, slots=self._slots(valid))
    return jax.tree.map(lambda x: x[first], found)


def _first_of_each_index(indices: Sequence[int] | None, count: int) -> np.ndarray:
  """For each of `count` frames, the position of the first frame with its video index (all
  distinct without indices)."""
  if indices is None:
    return np.arange(count)
  _, first, inverse = np.unique(np.asarray(indices), return_index=True, return_inverse=True)
  return first[inverse]


_REGISTRY = {"annotations": AnnotationDetector, "yunet": YuNetDetector,
             "retinaface": RetinaFaceDetector.build,
             "mtcnn": MTCNNDetector}


def make(name: str, **kwargs) -> Detector:
  """The detector registered as `name`, built with `kwargs`."""
  try:
    cls = _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
  return cls(**kwargs)
