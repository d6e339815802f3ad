"""TFDS builder `affectnet`: AffectNet's manually annotated faces as faces records.

Reads either official distribution, whichever the manual directory holds:
(a) `Manually_Annotated_Images/` with `Manually_Annotated_file_lists/
training.csv` and `validation.csv` (header subDirectory_filePath, face_x,
face_y, face_width, face_height, facial_landmarks, expression, valence,
arousal; landmarks are 136 ';'-separated numbers x0;y0;x1;y1;... of the 68
iBUG points in full-image pixels);
(b) `train_set/` and `val_set/`, each with `images/ID.jpg` (face crops) and
`annotations/ID_exp.npy` (the expression code, stored as a string or a
number), `ID_lnd.npy` (136 numbers, x0, y0, x1, y1, ...), `ID_val.npy`,
`ID_aro.npy`.

Expression codes: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust,
6 anger, 7 contempt, 8 none, 9 uncertain, 10 no face. Config classes7 keeps
codes 0-6, classes8 codes 0-7 (labels: emoflow.labels.AFFECTNET_EXPRESSIONS);
the rest are dropped. The 68 landmarks become the 5 alignment points (see
five_points), then the face is aligned to 112x112 like every other source.
face_px is the face box height ((b): the crop's height). Rows whose numbers
are unusable (landmarks not 136 numbers, an empty box) and listed images that
are absent are skipped, counted in a log line. Splits: train and validation
(AffectNet's test set is not public).
"""

import csv
import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_pipelines.builders import manual, records
from emoflow.labels import AFFECTNET_EXPRESSIONS
from emoflow.vision import align

IMAGES = "Manually_Annotated_Images"
CSV_FILES = {"train": "Manually_Annotated_file_lists/training.csv",
             "validation": "Manually_Annotated_file_lists/validation.csv"}
SET_FOLDERS = {"train": "train_set", "validation": "val_set"}
LAYOUT = (f"either {IMAGES}/ with {CSV_FILES['train']} and {CSV_FILES['validation']}, "
          "or train_set/ and val_set/ each holding images/ and annotations/")

# 0-based iBUG-68 indices: the image-left eye (the subject's right), the image-right eye.
_LEFT_EYE, _RIGHT_EYE = slice(36, 42), slice(42, 48)
_NOSE_TIP, _MOUTH_LEFT, _MOUTH_RIGHT = 30, 48, 54


def five_points(landmarks68) -> np.ndarray:
  """The 5 alignment points [5, 2] (emoflow.vision.align order) of 68 iBUG points [68, 2].

  Eye centres are the means of the 6 points around each eye; nose tip and
  mouth corners are points 30, 48 and 54.
  """
  points = np.asarray(landmarks68, np.float32).reshape(68, 2)
  return np.stack([points[_LEFT_EYE].mean(0), points[_RIGHT_EYE].mean(0),
                   points[_NOSE_TIP], points[_MOUTH_LEFT], points[_MOUTH_RIGHT]])


@dataclasses.dataclass(frozen=True)
class _Face:
  """One annotated face: its image, 68 landmarks, face box (None: the image is the face)."""
  source: str
  image_path: str
  landmarks: np.ndarray
  box: list | None
  code: int


def _landmarks(values) -> np.ndarray | None:
  """136 numbers -> [68, 2], or None when they are not 136 finite numbers."""
  try:
    points = np.asarray([float(v) for v in values], np.float32)
  except ValueError:
    return None
  return points.reshape(68, 2) if points.size == 136 and np.isfinite(points).all() else None


def csv_faces(images_dir: str, csv_path: str):
  """Yields the faces of a file list of layout (a); rows with unusable numbers as None."""
  with open(csv_path, newline="") as f:
    for row in csv.DictReader(f):
      points = _landmarks(row["facial_landmarks"].split(";"))
      try:
        x, y, w, h, code = (float(row[k]) for k in ("face_x", "face_y", "face_width",
                                                     "face_height", "expression"))
      except ValueError:
        points = None
      if points is None or w <= 0 or h <= 0:
        yield None
        continue
      relative = row["subDirectory_filePath"]
      yield _Face(source=f"affectnet/{relative}", image_path=os.path.join(images_dir, relative),
                  landmarks=points, box=[x, y, x + w, y + h], code=int(code))


def set_faces(set_dir: str):
  """Yields the faces of one set folder of layout (b); ones with unusable landmarks as None."""
  images_dir, annotations_dir = manual.find(set_dir, "images"), manual.find(set_dir, "annotations")
  for name in sorted(os.listdir(images_dir)):
    if not name.lower().endswith(manual.IMAGE_EXTENSIONS):
      continue
    stem = os.path.splitext(name)[0]
    prefix = os.path.join(annotations_dir, stem)
    points = _landmarks(np.load(f"{prefix}_lnd.npy").reshape(-1))
    if points is None:
      yield None
      continue
    code = int(float(np.load(f"{prefix}_exp.npy").item()))  # a string such as '3' or a number
    yield _Face(source=f"affectnet/{os.path.basename(set_dir)}/{name}",
                image_path=os.path.join(images_dir, name), landmarks=points, box=None, code=code)


_CSV_LAYOUT = [IMAGES, *CSV_FILES.values()]
_SET_LAYOUT = [f"{folder}/{sub}" for folder in SET_FOLDERS.values()
               for sub in ("images", "annotations")]


def _layout(root: str) -> str:
  """The layout `root` holds in full, "csv" (a) or "sets" (b); else the one-line error."""
  absent_csv, absent_set = manual.missing(root, _CSV_LAYOUT), manual.missing(root, _SET_LAYOUT)
  if not absent_csv:
    return "csv"
  if not absent_set:
    return "sets"
  # Report the layout the directory is closer to: that is the one being copied in.
  absent = absent_csv if len(absent_csv) <= len(absent_set) else absent_set
  raise manual.missing_error(root, "affectnet", absent, LAYOUT)


def _readers(root: str) -> dict:
  """Split -> iterator of faces, for whichever layout the manual directory holds."""
  if _layout(root) == "csv":
    images_dir = manual.resolve(root, IMAGES)
    return {split: csv_faces(images_dir, manual.resolve(root, path))
            for split, path in CSV_FILES.items()}
  return {split: set_faces(manual.resolve(root, folder)) for split, folder in SET_FOLDERS.items()}


@dataclasses.dataclass
class AffectnetConfig(tfds.core.BuilderConfig):
  """How many expression codes (from 0) the dataset keeps."""
  num_classes: int = 8


class Affectnet(tfds.core.GeneratorBasedBuilder):
  """AffectNet: in-the-wild faces with 8 expression labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "7- and 8-class faces from either official distribution"}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  AffectNet is licence-gated: request it at http://mohammadmahoor.com/affectnet/
  and extract it into the manual directory so that it holds {LAYOUT}
  (details in data_pipelines/builders/affectnet.py).
  """
  BUILDER_CONFIGS = [
      AffectnetConfig(name="classes7", num_classes=7, description="expressions 0-6"),
      AffectnetConfig(name="classes8", num_classes=8, description="expressions 0-7 (contempt)"),
  ]
  DEFAULT_CONFIG_NAME = "classes7"  # the paper trains on 7 expressions

  def _info(self) -> tfds.core.DatasetInfo:
    names = AFFECTNET_EXPRESSIONS[:self.builder_config.num_classes]
    return self.dataset_info_from_configs(features=records.faces_features(names),
                                          supervised_keys=("image", "emotion"),
                                          description=__doc__)

  def check_manual_dir(self, manual_dir: str) -> None:
    """A one-line ValueError unless `manual_dir` holds one of the two layouts in full.

    data_pipelines.loaders.prepare runs it before TFDS starts building;
    _split_generators runs the same check (through _readers).
    """
    _layout(manual_dir)

  def _split_generators(self, dl_manager):
    readers = _readers(manual.directory(dl_manager))
    return {split: self._generate_examples(faces, split) for split, faces in readers.items()}

  def _generate_examples(self, faces, split: str):
    unusable = absent = 0
    for face in faces:
      if face is None:
        unusable += 1
      elif face.code < self.builder_config.num_classes:
        if not os.path.exists(face.image_path):
          absent += 1
          continue
        image = manual.read_rgb(face.image_path)
        box = face.box or [0, 0, image.shape[1], image.shape[0]]
        yield face.source, {
            "image": align.align_face(image, five_points(face.landmarks), records.FACE_SIDE),
            "emotion": face.code,
            "face_px": np.int32(records.face_px(box)),
            "source": face.source,
        }
    if unusable or absent:
      logging.warning("affectnet %s: skipped %d faces with unusable annotations and %d listed "
                      "images that are absent", split, unusable, absent)
