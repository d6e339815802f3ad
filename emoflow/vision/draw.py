"""Annotations drawn over a frame: face boxes by emotion, group boxes by label, the frame label.

Shared by SynthCrowd's picture command and video inference, so ground truth
and predictions look alike. Takes plain boxes and label names (no dataset
types), as emoflow must not import data_pipelines.

Each draw_* function has an *_ops twin that only lays its drawing out, as
steps (an OpenCV drawing function, its arguments after the image) that
`apply` draws: a video lays a sampled frame's annotations out once and draws
them on each of its input frames at the cost of the OpenCV calls alone.
"""

from collections.abc import Callable

import cv2
import numpy as np

from emoflow.labels import EMOTIONS, GROUP_EMOTIONS

# RGB per label name; a label not listed (e.g. None, unknown) is drawn grey.
COLOURS = {
    "neutral": (200, 200, 200),
    "happy": (255, 215, 0),
    "surprised": (255, 140, 0),
    "awed": (0, 220, 220),
    "sad": (60, 110, 255),
    "fearful": (170, 80, 255),
    "disgusted": (120, 200, 40),
    "angry": (255, 40, 40),
    "positive": (40, 230, 80),
    "negative": (255, 50, 120),
}
_GREY = (128, 128, 128)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
Op = tuple[Callable, tuple]  # a drawing step: an OpenCV function, its arguments after the image


def apply(image: np.ndarray, ops) -> np.ndarray:
  """`image` with the steps `ops` drawn on it in order, in place."""
  for fn, args in ops:
    fn(image, *args)
  return image


def _label(shape, text, x, y, colour, scale) -> list[Op]:
  """Text on a filled box of `colour`, its top-left corner at (x, y) clamped into `shape`."""
  (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
  h, w = shape[:2]
  x = int(min(max(x, 0), max(0, w - tw - 2)))  # not np.clip: ten times slower on scalars
  y = int(min(max(y, 0), max(0, h - th - base - 2)))
  ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
  return [(cv2.rectangle, ((x, y), (x + tw + 2, y + th + base + 2), colour, -1)),
          (cv2.putText, (text, (x + 1, y + th + 1), _FONT, scale, ink, 1, cv2.LINE_AA))]


def _box(box, colour, width) -> Op:
  x0, y0, x1, y1 = (int(round(v)) for v in box)
  return cv2.rectangle, ((x0, y0), (x1, y1), colour, width)


def annotation_ops(shape, face_boxes, face_labels, group_boxes=(), group_labels=(),
                   frame_label: str | None = None, min_text_px: float = 14) -> list[Op]:
  """The steps of draw_annotations for an image of `shape` (H, W, ...)."""
  scale = max(0.35, shape[0] / 1400)
  ops = []
  for box, label in zip(group_boxes, group_labels):
    colour = COLOURS.get(label, _GREY)
    ops.append(_box(box, colour, 2))
    ops += _label(shape, label or "?", box[0], box[1] - 16 * scale * 2.2, colour, scale)
  for box, label in zip(face_boxes, face_labels):
    colour = COLOURS.get(label, _GREY)
    ops.append(_box(box, colour, 1))
    if box[3] - box[1] >= min_text_px:
      ops += _label(shape, (label or "?")[:3], box[0], box[3] + 1, colour, 0.8 * scale)
  if frame_label is not None:
    colour = COLOURS.get(frame_label, _GREY)
    ops += _label(shape, f"frame: {frame_label}", 4, 4, colour, 1.4 * scale)
  x = 4
  for name in EMOTIONS + GROUP_EMOTIONS[:2]:
    ops += _label(shape, name[:3], x, shape[0], COLOURS[name], 0.8 * scale)
    x += cv2.getTextSize(name[:3], _FONT, 0.8 * scale, 1)[0][0] + 6
  return ops


def draw_annotations(image: np.ndarray, face_boxes, face_labels, group_boxes=(), group_labels=(),
                     frame_label: str | None = None, min_text_px: float = 14) -> np.ndarray:
  """A copy of `image` (uint8 RGB) with the annotations drawn on it.

  Boxes are x0, y0, x1, y1 in image pixels; labels are emoflow.labels names
  (or None). Faces shorter than `min_text_px` get a box but no text, so
  crowds stay legible. A legend of the emotion colours runs along the bottom.
  """
  out = np.ascontiguousarray(image).copy()
  return apply(out, annotation_ops(out.shape, face_boxes, face_labels, group_boxes, group_labels,
                                   frame_label, min_text_px))


def hull_ops(face_boxes, groups, labels) -> list[Op]:
  """The steps of draw_group_hulls."""
  ops = []
  for members, label in zip(groups, labels):
    if not len(members):
      continue
    corners = np.concatenate([[[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]]
                              for b in np.asarray(face_boxes)[list(members)]])
    hull = cv2.convexHull(np.round(corners).astype(np.int32))
    ops.append((cv2.polylines, ([hull], True, COLOURS.get(label, _GREY), 2, cv2.LINE_AA)))
  return ops


def draw_group_hulls(image: np.ndarray, face_boxes, groups, labels) -> np.ndarray:
  """`image` with each group's convex hull (over its faces' box corners) outlined in its colour.

  groups: per group, the indices of its faces in `face_boxes`; drawn in place.
  """
  return apply(image, hull_ops(face_boxes, groups, labels))


def label_strip_ops(width: int, segments, height: int = 10) -> list[Op]:
  """The steps of draw_label_strip without its cursor (cursor_ops), for an image `width` wide."""
  ops = [(cv2.rectangle, ((0, 0), (width - 1, height), _GREY, -1))]
  for start, end, label in segments:
    x0, x1 = int(start * width), max(int(start * width) + 1, int(end * width))
    ops.append((cv2.rectangle, ((x0, 0), (x1, height), COLOURS.get(label, _GREY), -1)))
  return ops


def cursor_ops(width: int, position: float, height: int = 10) -> list[Op]:
  """The label strip's cursor at `position` in [0, 1] (clipped), for an image `width` wide."""
  x = int(min(max(position, 0), 1) * (width - 1))
  return [(cv2.line, ((x, 0), (x, height + 4), (0, 0, 0), 2))]


def draw_label_strip(image: np.ndarray, segments, position: float, height: int = 10) -> np.ndarray:
  """`image` with a strip along its top: the frame labels over the clip's time, and a cursor.

  segments: (start, end, label) with start/end in [0, 1] of the clip's duration;
  position: where the current frame lies, in [0, 1]. Drawn in place.
  """
  width = image.shape[1]
  apply(image, label_strip_ops(width, segments, height))
  return apply(image, cursor_ops(width, position, height))
