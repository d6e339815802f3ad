"""TFDS builder `emotiw_gaf`: EmotiW Group Affect (GAF 2.0 / 3.0) images as groups records.

Every image is one group labelled by its folder (positive, negative,
neutral): all faces detected in it, aligned with their 5 landmarks; the group
box is the faces' enclosing box (as for GECV groups, a box around the
members, not the image bounds). Images with no detected face carry no group
and are skipped; a log line per split says how many.

Faces come from `detections.json` in the manual directory, a JSON object
mapping each image path, relative to the manual directory with '/'
separators and the folder names as on disk, to the list of its faces:

    {"Train/Positive/img_001.jpg":
         [{"box": [x0, y0, x1, y1], "landmarks": [[x, y], ... 5 points]}],
     "Train/Negative/img_002.jpg": []}

Landmarks are in emoflow.vision.align order (image-left eye, image-right eye,
nose tip, left and right mouth corner), in image pixels. Every image needs an
entry (an empty list when no face was found), so a stale file is an error.
GAF ships without this file: when it is missing the builder writes it with
MTCNN (data_pipelines.detect_faces; it logs how long that may take, once),
into the manual directory, or with a one-line error naming the command that
writes it elsewhere when the manual directory cannot be written to. Any
other detector with 5-point landmarks (RetinaFace, YuNet) can write it too.
"""

import json
import os

import tensorflow_datasets as tfds
from absl import logging

from data_pipelines import annotations
from data_pipelines.builders import gecv, manual, records
from emoflow.labels import GROUP_EMOTIONS

DETECTIONS = "detections.json"
LAYOUT = ("train/ and val/ folders (Train, Val or Validation; any case) each holding "
          "Positive/, Negative/ and Neutral/ image folders (detections.json beside them is "
          "written if absent)")

# Split -> the folder names the distributions use for it (matched ignoring case).
_SPLIT_FOLDERS = {"train": "train", "validation": "val|validation"}


def labelled_images(split_dir: str) -> list[tuple[str, str]]:
  """(image path, group label) for every image in the class folders of one split, sorted."""
  out = []
  for label in GROUP_EMOTIONS:
    folder = manual.find(split_dir, label)
    out += [(os.path.join(folder, name), label) for name in sorted(os.listdir(folder))
            if name.lower().endswith(manual.IMAGE_EXTENSIONS)]
  return out


def load_detections(path: str) -> dict[str, list]:
  """detections.json as image path -> [annotations.Face]; one-line error if malformed."""
  try:
    with open(path) as f:
      raw = json.load(f)
    detections = {image: [annotations.Face(box=face["box"], landmarks=face["landmarks"])
                          for face in faces] for image, faces in raw.items()}
  except (OSError, json.JSONDecodeError, AttributeError, TypeError, KeyError) as e:
    raise ValueError(f"{path}: not a detections file (image path -> [{{box, landmarks}}]): "
                     f"{e}") from None
  for image, faces in detections.items():
    for face in faces:
      if len(face.box) != 4 or len(face.landmarks) != 5:
        raise ValueError(f"{path}: {image}: a face needs a 4-number box and 5 (x, y) landmarks")
  return detections


def split_images(root: str) -> dict[str, tuple[list, list]]:
  """Split -> (labelled_images, their detections.json keys); one-line error off the layout."""
  manual.require(root, "emotiw_gaf", LAYOUT, [f"{folder}/{label}"
                                              for folder in _SPLIT_FOLDERS.values()
                                              for label in GROUP_EMOTIONS])
  splits = {}
  for split, folders in _SPLIT_FOLDERS.items():
    images = labelled_images(manual.find(root, folders))
    splits[split] = (images, [os.path.relpath(path, root).replace(os.sep, "/")
                              for path, _ in images])
  return splits


def _split_images(root: str) -> tuple[dict, dict]:
  """(detections, split_images), the detections written first if absent; one-line errors."""
  splits = split_images(root)
  if manual.find(root, DETECTIONS) is None:
    from data_pipelines import detect_faces  # noqa: PLC0415 - it imports this module
    detect_faces.write_missing("emotiw_gaf", root)
  detections_path = manual.find(root, DETECTIONS)
  detections = load_detections(detections_path)
  for split, (images, relative) in splits.items():
    absent = [r for r in relative if r not in detections]
    if absent:
      raise ValueError(f"emotiw_gaf: {detections_path} has no entry for {len(absent)} of the "
                       f"{len(images)} {split} images (first: {absent[0]}); delete it to rerun "
                       "the detector on the next build")
  return detections, splits


class EmotiwGaf(tfds.core.GeneratorBasedBuilder):
  """EmotiW GAF: group images labelled positive, negative or neutral."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "groups records from GAF images and a detections file"}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  GAF 2.0 / 3.0 is licence-gated: request it from the EmotiW organisers and
  extract it into the manual directory so that it holds {LAYOUT}. The first
  build writes {DETECTIONS} beside them with MTCNN, or run
  `python -m data_pipelines.detect_faces MANUAL_DIR --dataset emotiw_gaf`
  (format: this module's docstring, data_pipelines/builders/emotiw_gaf.py).
  """
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(
      name="groups", description="one group per image: all detected faces, the image's label")]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=records.groups_features(), description=__doc__)

  def check_manual_dir(self, manual_dir: str) -> None:
    """A one-line ValueError unless `manual_dir` holds the class folders and detections for all.

    Writes the detections first if they are missing (module docstring).
    data_pipelines.loaders.prepare runs it before TFDS starts building;
    _split_generators runs the same check (through _split_images).
    """
    _split_images(manual_dir)

  def _split_generators(self, dl_manager):
    detections, splits = _split_images(manual.directory(dl_manager))
    return {split: self._generate_examples(images, relative, detections, split)
            for split, (images, relative) in splits.items()}

  def _generate_examples(self, images, relative, detections, split: str):
    skipped = 0
    for (path, label), name in zip(images, relative):
      if not detections[name]:
        skipped += 1
        continue
      frame = gecv.whole_frame_group(annotations.Frame(index=0, faces=detections[name]), label)
      yield from records.group_examples(manual.read_rgb(path), frame, f"emotiw_gaf/{name}")
    if skipped:
      logging.warning("emotiw_gaf %s: skipped %d of %d images with no detected face",
                      split, skipped, len(images))
