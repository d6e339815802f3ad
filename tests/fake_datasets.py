"""Tiny fake manual directories in the exact on-disk layouts of the real datasets.

Faces are SynthCrowd renders (data_pipelines.synthcrowd.faces.render_face)
pasted onto plain canvases, with their true boxes and 5 landmarks, so a
builder runs its real reading, alignment and record code on them. Also the
helpers the builder tests share: build without touching the manual directory,
expect a one-line error, read a split back by source id.
"""

import csv
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import annotations, builders
from data_pipelines.synthcrowd.faces import FaceDifficulty, render_face
from emoflow.labels import EMOTIONS
from emoflow.vision import video as vision_video


def canvas_with_faces(rng, size, faces) -> tuple[np.ndarray, list]:
  """An RGB canvas of size (width, height) with faces pasted at their places.

  faces: (emotion index, face_px, (x, y) of the render's top-left corner).
  Returns the image and an annotations.Face (box, landmarks, emotion) per face.
  """
  width, height = size
  image = np.full((height, width, 3), 90, np.uint8) + rng.integers(0, 20, (height, width, 3), np.uint8)
  placed = []
  for emotion, face_px, (x, y) in faces:
    face = render_face(rng, emotion, face_px, FaceDifficulty.clean())
    h, w = face.image.shape[:2]
    if x + w > width or y + h > height:
      raise ValueError(f"a {w}x{h} face at ({x}, {y}) does not fit a {width}x{height} canvas")
    image[y:y + h, x:x + w] = face.image
    shift = np.array([x, y], np.float32)
    placed.append(annotations.Face(box=(face.box + np.tile(shift, 2)).tolist(),
                                   landmarks=(face.landmarks + shift).tolist(),
                                   emotion=EMOTIONS[emotion]))
  return image, placed


def write_image(path: str, rgb: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1])):
    raise OSError(f"cannot write {path}")


def landmarks68(five) -> np.ndarray:
  """68 iBUG points [68, 2] whose 6-point eye means, nose tip and mouth corners are `five`.

  The other points are spread far from the face, so a reader that takes a
  wrong index aligns a visibly wrong crop.
  """
  five = np.asarray(five, np.float32)
  points = np.stack([np.linspace(-500, 500, 68), np.linspace(900, -900, 68)], 1).astype(np.float32)
  ring = 3.0 * np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], 1)
  points[36:42] = five[0] + ring  # a symmetric ring: its mean is the centre
  points[42:48] = five[1] + ring
  points[30], points[48], points[54] = five[2], five[3], five[4]
  return points


def affectnet_csv(root: str, rng, codes: dict) -> dict:
  """Layout (a): Manually_Annotated_Images/ + the file lists; codes: split -> expression codes.

  Returns split -> [(relative path, code, face)] in file order.
  """
  out = {}
  lists = os.path.join(root, "Manually_Annotated_file_lists")
  os.makedirs(lists, exist_ok=True)
  for split, file_name in (("train", "training.csv"), ("validation", "validation.csv")):
    rows = []
    for k, code in enumerate(codes[split]):
      relative = f"{100 + k % 3}/{split}_{k:03d}.jpg"
      image, (face,) = canvas_with_faces(rng, (160, 130), [(min(code, 7), 56, (20 + k, 10))])
      write_image(os.path.join(root, "Manually_Annotated_Images", relative), image)
      x0, y0, x1, y1 = face.box
      points = landmarks68(face.landmarks).ravel()
      rows.append({"subDirectory_filePath": relative, "face_x": round(x0), "face_y": round(y0),
                   "face_width": round(x1 - x0), "face_height": round(y1 - y0),
                   "facial_landmarks": ";".join(f"{v:.3f}" for v in points),
                   "expression": code, "valence": 0.25, "arousal": -0.5})
      out.setdefault(split, []).append((relative, code, face))
    with open(os.path.join(lists, file_name), "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)
  return out


def affectnet_sets(root: str, rng, codes: dict) -> dict:
  """Layout (b): {train,val}_set/images/ID.jpg + annotations/ID_{exp,lnd,val,aro}.npy.

  exp/val/aro are stored as strings, as in the distribution. Returns
  split -> [(image name, code, face)].
  """
  out = {}
  for split, folder in (("train", "train_set"), ("validation", "val_set")):
    annotations_dir = os.path.join(root, folder, "annotations")
    os.makedirs(annotations_dir, exist_ok=True)
    for k, code in enumerate(codes[split]):
      image, (face,) = canvas_with_faces(rng, (104, 104), [(min(code, 7), 52, (2, 2))])
      write_image(os.path.join(root, folder, "images", f"{k}.jpg"), image)
      prefix = os.path.join(annotations_dir, str(k))
      np.save(f"{prefix}_exp.npy", np.array(str(code)))
      np.save(f"{prefix}_lnd.npy", landmarks68(face.landmarks).ravel().astype(np.float64))
      np.save(f"{prefix}_val.npy", np.array("0.25"))
      np.save(f"{prefix}_aro.npy", np.array("-0.5"))
      out.setdefault(split, []).append((f"{k}.jpg", code, face))
  return out


def gaf(root: str, rng, images: dict) -> dict:
  """EmotiW GAF: SPLIT_FOLDER/CLASS_FOLDER/NAME.jpg + detections.json.

  images: (split folder, class folder) -> numbers of faces, one image each,
  folder names spelled as given (to test case-insensitive matching).
  Returns the detections (relative path -> [{box, landmarks}]).
  """
  detections = {}
  for (split_folder, class_folder), counts in images.items():
    for k, count in enumerate(counts):
      places = [(int(rng.integers(len(EMOTIONS))), 30, (5 + 62 * i, 8)) for i in range(count)]
      image, faces = canvas_with_faces(rng, (200, 80), places)
      relative = f"{split_folder}/{class_folder}/img_{k:03d}.jpg"
      write_image(os.path.join(root, relative), image)
      detections[relative] = [{"box": f.box, "landmarks": f.landmarks} for f in faces]
  with open(os.path.join(root, "detections.json"), "w") as f:
    json.dump(detections, f)
  return detections


def crowd_video(path: str, rng, fps: float = 10.0, num_frames: int = 20) -> list:
  """A 320x240 mp4 of one large face (110 px, happy) and two small ones (26 px, sad, angry).

  The crowd stands still; every frame has a little noise of its own.
  Returns the faces (annotations.Face, emotion set).
  """
  canvas, faces = canvas_with_faces(rng, (320, 240), [(1, 110, (0, 0)), (2, 26, (230, 20)),
                                                      (6, 26, (230, 130))])
  with vision_video.write_video(path, fps, (320, 240)) as write:
    for _ in range(num_frames):
      noise = rng.integers(-3, 4, canvas.shape)
      write(np.clip(canvas.astype(np.int16) + noise, 0, 255).astype(np.uint8))
  return faces


def gecv_video(directory: str, name: str, rng, annotated=range(20),
               label="positive") -> annotations.Video:
  """NAME.mp4 + NAME.json in the gecv layout: 10 fps, 20 frames, `annotated` frames labelled.

  Faces: the large one has a known emotion, the two small ones one known and
  one unknown; groups: {large, small 1} positive and {small 2} negative.
  """
  faces = crowd_video(os.path.join(directory, f"{name}.mp4"), rng)
  faces[2].emotion = None
  groups = [annotations.Group(box=[0, 0, 300, 100], label="positive", faces=[0, 1]),
            annotations.Group(box=[225, 125, 300, 200], label="negative", faces=[2])]
  video = annotations.Video(
      video=f"{name}.mp4", fps=10.0, num_frames=20, width=320, height=240, label=label,
      frames=[annotations.Frame(index=i, label=label, faces=faces, groups=groups) for i in annotated])
  annotations.save(video, os.path.join(directory, f"{name}.json"))
  return video


def vgaf(root: str, rng, labels: dict, faceless=()) -> None:
  """VGAF: Train|Val/NAME.mp4, Train|Val_labels.txt and detections/Train|Val/NAME.json.

  labels: split folder -> {video name: label number 1-3}; videos in
  `faceless` get detections with no face.
  """
  for folder, videos in labels.items():
    with open(os.path.join(root, f"{folder}_labels.txt"), "w") as f:
      f.write("Vid_name Label\n" + "".join(f"{name} {number}\n" for name, number in videos.items()))
    for name in videos:
      faces = crowd_video(os.path.join(root, folder, f"{name}.mp4"), rng)
      detected = [annotations.Face(box=face.box, landmarks=face.landmarks) for face in faces]
      frames = [annotations.Frame(index=i, faces=[] if name in faceless else detected)
                for i in range(0, 20, 2)]
      annotations.save(annotations.Video(video=f"{name}.mp4", fps=10.0, num_frames=20, width=320,
                                         height=240, label="neutral", frames=frames),
                       os.path.join(root, "detections", folder, f"{name}.json"))


def build(name: str, config: str, data_dir: str, manual_dir: str):
  """Builds like data_pipelines.loaders.prepare, but leaves the manual directory as it is."""
  builder = builders.get(name)(config=config, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def build_error(name: str, config: str, data_dir: str, manual_dir: str) -> str:
  """The message of the ValueError building fails with; it must be a single line."""
  with pytest.raises(ValueError) as error:
    build(name, config, data_dir, manual_dir)
  message = str(error.value)
  assert "\n" not in message, message
  return message


def text(value) -> str:
  """A decoded TFDS Text feature as str."""
  return value.decode() if isinstance(value, bytes) else str(value)


def records_by_source(builder, split: str) -> dict:
  """Every record of a split, keyed by its source id."""
  source = builder.as_data_source(split=split)
  return {text(record["source"]): record for record in (source[i] for i in range(len(source)))}
