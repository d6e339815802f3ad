"""Loader throughput: training records/s and faces/s of the faces, groups and clips pipelines.

Prints a markdown table, one row per (dataset, grain worker processes): the
median over timed rounds of records/s and faces/s (filled face slots; for
faces records one per record), and the bytes of one local batch. The first
batch of each iterator (worker start-up, file opening) is not timed. Runs
under absl.app.run because grain worker processes need parsed absl flags.

  python benchmarks/loader_throughput.py [--data_dir=DIR] [--groups=synthcrowd/groups_small]
      [--clips=synthcrowd/clips_tiny] [--faces=...] [--workers=0,2]

A dataset is NAME/CONFIG (built under --data_dir if absent) or the directory
of a prepared dataset, e.g. a feature cache (then embeddings are read).
"""

import os
import statistics
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging

from data_pipelines import loaders
from emonet_throughput import cpu_model
from experiments.cache_features import source_builder

_DATA_DIR = flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "where NAME/CONFIG lives")
_FACES = flags.DEFINE_string("faces", "synthcrowd/faces_tiny", "faces dataset ('' skips)")
_GROUPS = flags.DEFINE_string("groups", "synthcrowd/groups_small", "groups dataset ('' skips)")
_CLIPS = flags.DEFINE_string("clips", "synthcrowd/clips_tiny", "clips dataset ('' skips)")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "grain worker process counts to compare")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "records per batch (clips: a quarter)")
_BATCHES = flags.DEFINE_integer("batches", 12, "timed batches per round")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "timed rounds; the median is reported")
_READ_THREADS = flags.DEFINE_integer("read_threads", 2, "grain read threads")
_MAX_FACES = flags.DEFINE_integer("max_faces", 16, "N: face slots per group")
_CLIP_SHAPE = flags.DEFINE_list("clip_shape", ["5", "2", "4", "8"],
                                "clips: num_frames, frame_stride, max_groups, max_faces")


def _pipelines():
  """(label, train batches function, batch size) for each dataset asked for."""
  frames, stride, groups, faces = (int(x) for x in _CLIP_SHAPE.value)
  kinds = {
      "faces": (_FACES.value, lambda s, **kw: loaders.train_face_batches(s, **kw), 1),
      "groups": (_GROUPS.value, lambda s, **kw: loaders.train_group_batches(
          s, max_faces=_MAX_FACES.value, **kw), 1),
      "clips": (_CLIPS.value, lambda s, **kw: loaders.train_clip_batches(
          s, num_frames=frames, frame_stride=stride, max_groups=groups, max_faces=faces, **kw), 4),
  }
  data_dir = os.path.expanduser(_DATA_DIR.value)
  for kind, (spec, batches, shrink) in kinds.items():
    if spec:
      source = loaders.split_source(source_builder(spec, data_dir), "train")
      yield f"{kind}: {spec}", source, batches, max(_BATCH_SIZE.value // shrink, 1)


def _faces_in(batch: dict) -> int:
  mask = batch.get("face_mask", batch.get("mask"))
  return int(mask.sum()) if mask is not None else len(batch["label"])


def measure(source, batches, batch_size: int, workers: int) -> tuple[float, float, float]:
  """Median (records/s, faces/s) over rounds, and the MB of one batch."""
  rates = []
  num_steps = _BATCHES.value + 1
  for round_index in range(_ROUNDS.value):
    it = batches(source, batch_size=batch_size, seed=round_index, num_steps=num_steps,
                 read_threads=_READ_THREADS.value, workers=workers)
    first = next(it)  # start-up, not timed
    start, faces = time.perf_counter(), 0
    for batch in it:
      faces += _faces_in(batch)
    seconds = time.perf_counter() - start
    del it  # stops grain's worker processes before the next round starts its own
    rates.append((_BATCHES.value * batch_size / seconds, faces / seconds))
  megabytes = sum(np.asarray(v).nbytes for v in first.values()) / 2**20
  return (statistics.median(r for r, _ in rates), statistics.median(f for _, f in rates),
          megabytes)


def main(argv) -> None:
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # TFDS logs every dataset it opens at INFO
  print(f"loader throughput on {cpu_model()} ({os.cpu_count()} CPUs), JAX devices: "
        f"{jax.devices()[0].platform} x {jax.device_count()}; {_BATCHES.value} batches x "
        f"{_ROUNDS.value} rounds, median\n")
  print("| data | batch | workers | records/s | faces/s | MB/batch |")
  print("|---|---|---|---|---|---|")
  for label, source, batches, batch_size in _pipelines():
    for workers in (int(w) for w in _WORKERS.value):
      records, faces, megabytes = measure(source, batches, batch_size, workers)
      print(f"| {label} | {batch_size} | {workers} | {records:.0f} | {faces:.0f} | "
            f"{megabytes:.1f} |", flush=True)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  app.run(main)
