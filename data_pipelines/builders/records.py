"""The canonical records every builder writes and every loader reads.

- faces: one aligned face, its 8-way emotion, its size in pixels, a source id.
- groups: one group of one frame: its aligned faces, their boxes, sizes and
  (when known) individual emotions, the group box and its 3-way label.
- clips: the annotated frames of one video, flattened: all faces of all
  groups, each with the index of its group; all groups, each with the index of
  its frame; per-frame labels and the video label.
- frames: one whole frame (JPEG) with every face's box and 5 landmarks, for
  training and scoring a face detector. Boxes are as annotated (a face partly
  outside the frame keeps its unclipped box).

Face order (what NVPF's S sees): within a group, faces are sorted by size,
largest first, ties by the left edge of the box; so a loader that keeps the
first N_max faces keeps the most legible ones. Groups keep their annotation
order, frames ascend in time. An individual emotion that is unknown is -1.
Group faces are stored as JPEG (quality 95): group and clip datasets hold many
faces, and their sources are compressed video frames already.
"""

import cv2
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import annotations
from emoflow.labels import EMOTIONS, GROUP_EMOTIONS, group_emotion_index
from emoflow.vision import align

FACE_SIDE = 112
JPEG_QUALITY = 95
UNKNOWN = -1


def _tensor(shape, dtype):
  return tfds.features.Tensor(shape=shape, dtype=dtype)


def faces_features(emotion_names=EMOTIONS) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(FACE_SIDE, FACE_SIDE, 3), dtype=np.uint8,
                                    encoding=tfds.features.Encoding.BYTES),
      "emotion": tfds.features.ClassLabel(names=emotion_names),
      "face_px": tfds.features.Scalar(dtype=np.int32),
      "source": tfds.features.Text(),
  })


def _face_list_features() -> dict:
  return {
      "faces": tfds.features.Sequence(
          tfds.features.Image(shape=(FACE_SIDE, FACE_SIDE, 3), encoding_format="jpeg")),
      "face_boxes": _tensor((None, 4), np.float32),
      "face_px": _tensor((None,), np.int32),
      "face_emotions": _tensor((None,), np.int32),
  }


def groups_features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      **_face_list_features(),
      "group_box": _tensor((4,), np.float32),
      "label": tfds.features.ClassLabel(names=GROUP_EMOTIONS),
      "source": tfds.features.Text(),
  })


def clips_features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      **_face_list_features(),
      "face_group": _tensor((None,), np.int32),
      "group_boxes": _tensor((None, 4), np.float32),
      "group_labels": _tensor((None,), np.int32),
      "group_frame": _tensor((None,), np.int32),
      "frame_indices": _tensor((None,), np.int32),
      "frame_labels": _tensor((None,), np.int32),
      "fps": tfds.features.Scalar(dtype=np.float32),
      "label": tfds.features.ClassLabel(names=GROUP_EMOTIONS),
      "source": tfds.features.Text(),
  })


def frames_features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
      "boxes": _tensor((None, 4), np.float32),
      "landmarks": _tensor((None, 5, 2), np.float32),
      "face_px": _tensor((None,), np.int32),
      "face_group": _tensor((None,), np.int32),
      "group_boxes": _tensor((None, 4), np.float32),
      "group_labels": _tensor((None,), np.int32),
      "source": tfds.features.Text(),
  })


# The schema of each record kind, for builders that write more than one.
FEATURES = {"faces": faces_features, "groups": groups_features, "clips": clips_features,
            "frames": frames_features}


def face_px(box) -> int:
  """A face's size in pixels: the height of its box."""
  return max(1, int(round(box[3] - box[1])))


def face_order(sizes, boxes) -> np.ndarray:
  """Indices sorting faces largest first, ties by the left box edge (see module docstring)."""
  sizes, boxes = np.asarray(sizes), np.asarray(boxes, np.float32).reshape(-1, 4)
  return np.lexsort((boxes[:, 0], -sizes)) if len(sizes) else np.zeros(0, np.int64)


def encode_jpeg(rgb: np.ndarray) -> bytes:
  ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                          [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
  if not ok:
    raise ValueError(f"cannot JPEG-encode an image of shape {rgb.shape}")
  return data.tobytes()


def _emotion_id(name):
  return UNKNOWN if name is None else EMOTIONS.index(name)


def _frame_label_id(label):
  return UNKNOWN if label is None else group_emotion_index(label)


def face_list(image: np.ndarray, faces: list) -> dict:
  """The face fields of a record for `faces` (annotations.Face) of one frame, in face order."""
  boxes = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
  sizes = np.array([face_px(b) for b in boxes], np.int32)
  order = face_order(sizes, boxes)
  landmarks = np.array([faces[i].landmarks for i in order], np.float32).reshape(-1, 5, 2)
  crops = align.align_faces(image, landmarks, FACE_SIDE)
  return {
      "faces": [encode_jpeg(c) for c in crops],
      "face_boxes": boxes[order],
      "face_px": sizes[order],
      "face_emotions": np.array([_emotion_id(faces[i].emotion) for i in order], np.int32),
  }


def frame_example(image: np.ndarray, frame: annotations.Frame, source: str) -> dict:
  """The frames record of one annotated frame: the image (JPEG), its faces in face order and its groups.

  face_group is each face's index into group_boxes / group_labels (in the
  annotation's group order), -1 for a face in no group.
  """
  boxes = np.array([f.box for f in frame.faces], np.float32).reshape(-1, 4)
  sizes = np.array([face_px(b) for b in boxes], np.int32)
  order = face_order(sizes, boxes)
  landmarks = np.array([f.landmarks for f in frame.faces], np.float32).reshape(-1, 5, 2)
  face_group = np.full(len(boxes), -1, np.int32)
  for g, group in enumerate(frame.groups):
    face_group[list(group.faces)] = g
  return {"image": encode_jpeg(image), "boxes": boxes[order], "landmarks": landmarks[order],
          "face_px": sizes[order], "face_group": face_group[order],
          "group_boxes": np.array([g.box for g in frame.groups], np.float32).reshape(-1, 4),
          "group_labels": np.array([group_emotion_index(g.label) for g in frame.groups], np.int32),
          "source": source}


def group_examples(image: np.ndarray, frame: annotations.Frame, source: str) -> list[tuple[str, dict]]:
  """(key, groups record) for every group of one annotated frame; key = source/gK."""
  out = []
  for k, group in enumerate(frame.groups):
    key = f"{source}/g{k}"
    out.append((key, {
        **face_list(image, [frame.faces[i] for i in group.faces]),
        "group_box": np.asarray(group.box, np.float32),
        "label": group_emotion_index(group.label),
        "source": key,
    }))
  return out


def face_examples(image: np.ndarray, frame: annotations.Frame, source: str,
                  min_face_px: int = 1) -> list[tuple[str, dict]]:
  """(key, faces record) for each face with a known emotion and at least `min_face_px` pixels."""
  out = []
  for k, face in enumerate(frame.faces):
    if face.emotion is None or face_px(face.box) < min_face_px:
      continue
    key = f"{source}/f{k}"
    out.append((key, {
        "image": align.align_face(image, np.asarray(face.landmarks, np.float32), FACE_SIDE),
        "emotion": EMOTIONS.index(face.emotion),
        "face_px": np.int32(face_px(face.box)),
        "source": key,
    }))
  return out


def clip_example(frames: list, video: annotations.Video, source: str) -> dict:
  """The clips record of one video from its chosen (RGB image, annotations.Frame) pairs."""
  parts = {"faces": [], "face_boxes": [], "face_px": [], "face_emotions": [], "face_group": []}
  group_boxes, group_labels, group_frame = [], [], []
  for t, (image, frame) in enumerate(frames):
    for group in frame.groups:
      fields = face_list(image, [frame.faces[i] for i in group.faces])
      for name, value in fields.items():
        parts[name].append(value)
      parts["face_group"].append(np.full(len(group.faces), len(group_boxes), np.int32))
      group_boxes.append(group.box)
      group_labels.append(group_emotion_index(group.label))
      group_frame.append(t)
  return {
      "faces": [jpeg for chunk in parts["faces"] for jpeg in chunk],
      "face_boxes": np.concatenate(parts["face_boxes"] or [np.zeros((0, 4), np.float32)]),
      "face_px": np.concatenate(parts["face_px"] or [np.zeros(0, np.int32)]).astype(np.int32),
      "face_emotions": np.concatenate(parts["face_emotions"] or [np.zeros(0, np.int32)]),
      "face_group": np.concatenate(parts["face_group"] or [np.zeros(0, np.int32)]),
      "group_boxes": np.array(group_boxes, np.float32).reshape(-1, 4),
      "group_labels": np.array(group_labels, np.int32),
      "group_frame": np.array(group_frame, np.int32),
      "frame_indices": np.array([frame.index for _, frame in frames], np.int32),
      "frame_labels": np.array([_frame_label_id(frame.label) for _, frame in frames], np.int32),
      "fps": np.float32(video.fps),
      "label": group_emotion_index(video.label),
      "source": source,
  }
