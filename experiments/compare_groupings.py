"""Group-level accuracy of a model directory's group fusion under each way of forming groups.

  python -m experiments.compare_groupings --model=DIR [--data=synthcrowd/frames_small]
      [--split=validation] [--data_dir=~/tensorflow_datasets] [--out=FILE.md]

On every frame of a frames dataset (annotated faces and groups), the faces
are taken as annotated (boxes and landmarks: detection is left out), aligned
and embedded by the model's EmoNet (emoflow.pipeline, as `emoflow predict`
runs), grouped by
- `annotated`: the annotation's own groups (the fusion's accuracy with
  perfect grouping: the ceiling),
- `kmeans`: vision.grouping.group_faces,
- `rpn`: the model's group proposal network (if it has one) and
  vision.grouping.group_by_proposals,
and each group is labelled by the model's group fusion. A predicted group
finds an annotated group when their face sets overlap with Jaccard > 0.5
(strictly: then a group finds, and is found by, at most one other). Reported per grouping, over the
annotated groups: the share found, the accuracy (found and labelled right;
a group not found counts as wrong), the accuracy on the found groups alone,
and the face-weighted accuracy (the share of faces whose predicted group
carries their annotated group's label). A user mistake ends with one line on
stderr and exit code 2.
"""

import copy

import numpy as np
import tqdm
from absl import flags

from data_pipelines import loaders
from emoflow import bundle, pipeline
from emoflow.fileio import atomic_open
from emoflow.vision import detect
from experiments import command

FLAGS = flags.FLAGS
BATCH_FRAMES = 8


def _define_flags() -> None:
  flags.DEFINE_string("model", None, "model directory (experiments.export_model)")
  flags.DEFINE_string("data", "synthcrowd/frames_small", "frames dataset NAME/CONFIG")
  flags.DEFINE_string("split", "validation", "split to score")
  flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "TFDS data directory")
  flags.DEFINE_string("out", None, "also write the table to this markdown file")
  flags.DEFINE_bool("debug", False, "show tracebacks for user errors")


def frame_faces(record: dict) -> list[dict]:
  """The annotated faces of a frames record, as the annotation detector reads them."""
  return [{"box": box.tolist(), "landmarks": lm.tolist()}
          for box, lm in zip(np.asarray(record["boxes"]), np.asarray(record["landmarks"]))]


def score_frame(face_group: np.ndarray, group_labels: np.ndarray, predicted_group: np.ndarray,
                predicted_labels: np.ndarray) -> dict:
  """Counts of one frame: annotated groups, found, found and right, faces, faces labelled right.

  face_group / predicted_group: each face's annotated / predicted group (-1: none);
  group_labels / predicted_labels: each group's class index.
  """
  counts = {"groups": 0, "found": 0, "right": 0, "faces": 0, "faces_right": 0}
  for g, label in enumerate(group_labels):
    members = face_group == g
    if not members.any():
      continue
    counts["groups"] += 1
    counts["faces"] += int(members.sum())
    for p in np.unique(predicted_group[members]):
      if p < 0:
        continue
      mine = predicted_group == p
      overlap = np.sum(mine & members)
      counts["faces_right"] += int(overlap) * int(predicted_labels[p] == label)
      if overlap / np.sum(mine | members) > 0.5:
        counts["found"] += 1
        counts["right"] += int(predicted_labels[p] == label)
  return counts


def _annotated_slots(runner, result, face_group: np.ndarray) -> list:
  """The annotated groups of a frame as the pipeline's slot lists (largest face first)."""
  return [runner.slots(np.flatnonzero(face_group == g), result.boxes)
          for g in range(int(face_group.max(initial=-1)) + 1) if (face_group == g).any()]


def compare(model_dir: str, data: str, split: str, data_dir: str, progress: bool = True) -> dict:
  """{grouping: summed score_frame counts} over the split (module docstring)."""
  model = bundle.load(model_dir)
  name, _, config = data.partition("/")
  source = loaders.split_source(loaders.prepare(name, config, data_dir), split)
  groupings = ["annotated", "kmeans"] + (["rpn"] if model.config.get("rpn") else [])
  runners = {g: pipeline.Pipeline(model, None, grouping=g) for g in groupings if g != "annotated"}
  totals = {g: dict.fromkeys(("groups", "found", "right", "faces", "faces_right"), 0)
            for g in groupings}
  for start in tqdm.trange(0, len(source), BATCH_FRAMES, desc="frames", disable=not progress):
    records = [source[i] for i in range(start, min(start + BATCH_FRAMES, len(source)))]
    by_size = {}
    for i, record in enumerate(records):  # one batch per frame size
      by_size.setdefault(np.asarray(record["image"]).shape, []).append(i)
    for indices in by_size.values():
      frames = np.stack([np.asarray(records[i]["image"]) for i in indices])
      detector = detect.make("annotations", faces=[frame_faces(records[i]) for i in indices],
                             max_faces=256)
      for grouping, runner in runners.items():
        runner.detector = detector
        results = runner.analyse(range(len(indices)), frames)
        if grouping == "kmeans":
          annotated = copy.deepcopy(results)
          for r, i in zip(annotated, indices):
            r.group_slots = _annotated_slots(runner, r, np.asarray(records[i]["face_group"]))
          _add(totals["annotated"], runner.fuse_groups(annotated), records, indices)
        _add(totals[grouping], results, records, indices)
  return totals


def _add(total: dict, results, records, indices) -> None:
  for r, i in zip(results, indices):
    predicted = np.full(len(r.boxes), -1)
    for g, members in enumerate(r.group_slots):
      predicted[members] = g
    counts = score_frame(np.asarray(records[i]["face_group"]), np.asarray(records[i]["group_labels"]),
                         predicted, np.argmax(r.group_probs, -1))
    for key, value in counts.items():
      total[key] += value


def table(totals: dict, title: str) -> str:
  """The module docstring's numbers per grouping, as markdown."""
  ratio = lambda a, b: f"{a / b:.4f}" if b else "n/a"
  lines = [f"## {title}", "",
           "| grouping | annotated groups | found (Jaccard > 0.5) | accuracy | accuracy on found "
           "| face-weighted accuracy |", "|---|---|---|---|---|---|"]
  for grouping, t in totals.items():
    lines.append(f"| {grouping} | {t['groups']} | {ratio(t['found'], t['groups'])} | "
                 f"{ratio(t['right'], t['groups'])} | {ratio(t['right'], t['found'])} | "
                 f"{ratio(t['faces_right'], t['faces'])} |")
  return "\n".join(lines) + "\n"


def main() -> None:
  if not FLAGS.model:
    raise ValueError("--model is required")
  totals = compare(FLAGS.model, FLAGS.data, FLAGS.split, FLAGS.data_dir)
  text = table(totals, f"groupings of {FLAGS.data} {FLAGS.split}, group fusion of {FLAGS.model}")
  print(text)
  if FLAGS.out:
    with atomic_open(FLAGS.out) as f:
      f.write(text)


if __name__ == "__main__":
  _define_flags()
  command.run(main)
