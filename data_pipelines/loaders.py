"""grain pipelines over the TFDS ArrayRecord datasets: faces, groups (padded + mask), clips, frames.

Training batches are a pure function of (seed, step): a per-epoch shuffle, a
per-example seeded random transform (augmentation; for clips also where the
frame window starts) and fixed-size batches, sliced from the requested step,
so a resumed run sees exactly the batches it would have. Each JAX process
reads only its own 1/process_count of every global batch; which examples and
random draws make up global batch b does not depend on the process count.
Evaluation batches cover a split once, in order, padded with valid=False.

Groups (`*_group_batches`): a group's faces fill N = max_faces slots in record
order, which is largest face first (records.py). A group with more than N
faces keeps its first N, the largest ones, and `num_faces` holds the true
count, so truncation is never silent. Empty slots are zero, with mask False
and face_emotions -1.

Clips (`*_clip_batches`): T = num_frames of a clip's annotated frames, every
frame_stride-th (the stride counts annotated frames; frame_indices gives
their frame numbers in the video). Training starts the window at a seeded
random frame, chosen so the window fits inside the clip when it can;
evaluation starts at the clip's first frame. A clip shorter than the window is
padded: frame_mask False, frame_labels and frame_indices -1. A frame's groups
fill G = max_groups slots in record order; a frame with more than G keeps the
G with most faces (ties: the earlier record), still in record order, and
`num_groups` holds the true count. A group's faces fill N slots as for groups.

Feature mode: records written by the feature cache
(data_pipelines/builders/features.py) carry per-face `embeddings` [F, M] and
`logits` [F, C] instead of `faces`; the same loaders then return those
(float32, zero padded) in place of `faces`, and nothing is augmented.
"""

import functools
import os

import cv2
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from data_pipelines import builders
from data_pipelines.builders.records import FACE_SIDE, UNKNOWN

_FEATURE_KEYS = ("embeddings", "logits")
_FACE_FIELDS = ("face_boxes", "face_px", "face_emotions")


def make_builder(name: str, config: str, data_dir: str):
  """The TFDS builder of `name/config` under `data_dir`, built or not (its info needs no data)."""
  return builders.get(name)(config=config, data_dir=os.path.expanduser(data_dir),
                            file_format="array_record")


def prepare(name: str, config: str, data_dir: str, manual_dir: str | None = None):
  """Builds dataset `name/config` under `data_dir` if absent and returns its TFDS builder.

  `manual_dir` defaults to DATA_DIR/manual/NAME. A licence-gated dataset's
  builder checks it first (`check_manual_dir`), so a missing or incomplete
  download fails with that one-line error before TFDS prints or writes anything.
  In a multi-host job process 0 builds while the others wait, then all read it.
  """
  make = functools.partial(make_builder, name, config, data_dir)
  builder = make()
  manual_dir = os.path.expanduser(manual_dir or os.path.join(data_dir, "manual", name))
  # Checked only when download_and_prepare will build (it reuses an existing data_path).
  # Rendered datasets have no check and read no manual directory; none is created.
  if hasattr(builder, "check_manual_dir") and not builder.data_path.exists():
    builder.check_manual_dir(manual_dir)
  if jax.process_index() == 0:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  if jax.process_count() == 1:
    return builder
  multihost_utils.sync_global_devices(f"prepare {name}/{config}")
  return make()  # a builder made before the dataset existed does not know its splits


def split_source(builder, split: str):
  """Random-access source over one split (decoded numpy records)."""
  if split not in builder.info.splits:
    raise ValueError(f"dataset {builder.info.full_name} has no split {split!r}; "
                     f"it has: {', '.join(builder.info.splits)}")
  return builder.as_data_source(split=split)


def augment_face(image: np.ndarray, rng: np.random.Generator, max_shift: int = 4) -> np.ndarray:
  """Horizontal flip, a shift of up to `max_shift` px (edge padded), brightness/contrast jitter."""
  if rng.random() < 0.5:
    image = image[:, ::-1]
  dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
  padded = np.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
  h, w = image.shape[:2]
  image = padded[max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]
  contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
  mean = image.mean()
  out = (image.astype(np.float32) - mean) * contrast + mean + brightness
  return np.clip(out, 0, 255).astype(np.uint8)


def _train_batches(source, example_fn, *, batch_size: int, seed: int, num_steps: int,
                   start_step: int, read_threads: int, workers: int):
  """This process's share of global batches start_step .. num_steps-1 of `example_fn`.

  `example_fn(record, rng)` draws from an rng seeded by the example's global
  position, so the draws do not depend on the number of processes.
  """
  process_count, process_index = jax.process_count(), jax.process_index()
  local_batch = batch_size // process_count
  epochs = -(-num_steps * batch_size // len(source)) + 1
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(epochs)
  ds = ds[: num_steps * batch_size].random_map(example_fn, seed=seed + 1)
  ds = ds[process_index::process_count].batch(local_batch, drop_remainder=True)[start_step:]
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                            prefetch_buffer_size=4 * local_batch))
  if workers:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(it)


def _eval_batches(source, batch_size: int, example_fn):
  """This process's share of fixed-size batches of `example_fn(record, None)`, the split once.

  Padding examples repeat record 0 and have valid=False.
  """
  process_count, process_index = jax.process_count(), jax.process_index()
  local_batch = batch_size // process_count
  num_batches = -(-len(source) // batch_size)
  for b in range(num_batches):
    indices = b * batch_size + process_index * local_batch + np.arange(local_batch)
    valid = indices < len(source)
    examples = [example_fn(source[int(i)], None) for i in np.where(valid, indices, 0)]
    batch = {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
    batch["valid"] = valid
    yield batch


def _face_example(record: dict, rng: np.random.Generator | None, *, augment: bool) -> dict:
  image = augment_face(record["image"], rng) if augment else record["image"]
  return {"image": image, "label": np.int32(record["emotion"]),
          "face_px": np.int32(record["face_px"])}


def train_face_batches(source, *, batch_size: int, seed: int, num_steps: int, start_step: int = 0,
                       augment: bool = True, read_threads: int = 2, workers: int = 0):
  """Iterator over this process's share of faces batches start_step .. num_steps-1."""
  return _train_batches(source, functools.partial(_face_example, augment=augment),
                        batch_size=batch_size, seed=seed, num_steps=num_steps,
                        start_step=start_step, read_threads=read_threads, workers=workers)


def eval_face_batches(source, batch_size: int):
  """This process's share of fixed-size faces batches, the split once; padding has valid=False."""
  return _eval_batches(source, batch_size, functools.partial(_face_example, augment=False))


def _scatter(values, slots, shape, fill=0) -> np.ndarray:
  """An array of `shape` + the trailing shape of `values`, `fill` except `values` at `slots`."""
  values = np.asarray(values)
  out = np.full(tuple(shape) + values.shape[1:], fill, values.dtype)
  out[slots] = values
  return out


def _rank_within(keys: np.ndarray, order: np.ndarray) -> np.ndarray:
  """Each element's position among the elements with its key, counted in `order`.

  `order` must sort `keys` ascending (it may break ties any way).
  """
  sorted_keys = keys[order]
  rank = np.empty(len(keys), np.int64)
  rank[order] = np.arange(len(keys)) - np.searchsorted(sorted_keys, sorted_keys)
  return rank


def _place_faces(record: dict, keep: np.ndarray, slots: tuple, shape: tuple,
                 rng: np.random.Generator | None) -> dict:
  """Faces `keep` of `record` put at `slots` of arrays of `shape` (+ a face's own shape).

  Returns the face payload (`faces`, augmented when `rng` is given, or the
  cached `embeddings` and `logits`), face_boxes, face_px, face_emotions (-1
  where empty) and `mask`, True where a slot holds a face.
  """
  payload = _FEATURE_KEYS if "embeddings" in record else ("faces",)
  out = {"mask": _scatter(np.ones(len(keep), bool), slots, shape, False)}
  for key in payload + _FACE_FIELDS:
    if key == "faces":
      faces = [record["faces"][i] for i in keep]
      if rng is not None:
        faces = [augment_face(face, rng) for face in faces]
      values = np.stack(faces) if faces else np.zeros((0, FACE_SIDE, FACE_SIDE, 3), np.uint8)
    else:
      values = np.asarray(record[key])[keep]
    out[key] = _scatter(values, slots, shape, UNKNOWN if key == "face_emotions" else 0)
  return out


def _group_example(record: dict, rng: np.random.Generator | None, *, max_faces: int,
                   augment: bool) -> dict:
  count = len(record["face_px"])
  keep = np.arange(min(count, max_faces))
  return {**_place_faces(record, keep, (keep,), (max_faces,), rng if augment else None),
          "num_faces": np.int32(count),
          "group_box": np.asarray(record["group_box"], np.float32),
          "label": np.int32(record["label"])}


def train_group_batches(source, *, batch_size: int, max_faces: int, seed: int, num_steps: int,
                        start_step: int = 0, augment: bool = True, read_threads: int = 2,
                        workers: int = 0):
  """Iterator over this process's share of groups batches start_step .. num_steps-1.

  A batch: faces uint8 [B, N, 112, 112, 3] (or embeddings [B, N, M] and
  logits [B, N, C]), mask bool [B, N], face_boxes [B, N, 4], face_px [B, N],
  face_emotions [B, N], num_faces [B] (true counts), group_box [B, 4], label [B];
  B = batch_size / process_count, N = max_faces.
  """
  return _train_batches(source, functools.partial(_group_example, max_faces=max_faces,
                                                  augment=augment),
                        batch_size=batch_size, seed=seed, num_steps=num_steps,
                        start_step=start_step, read_threads=read_threads, workers=workers)


def eval_group_batches(source, batch_size: int, max_faces: int):
  """This process's share of groups batches covering the split once, plus valid [B]."""
  return _eval_batches(source, batch_size,
                       functools.partial(_group_example, max_faces=max_faces, augment=False))


def _clip_example(record: dict, rng: np.random.Generator | None, *, num_frames: int,
                  frame_stride: int, max_groups: int, max_faces: int, augment: bool) -> dict:
  """A window of T frames x G groups x N faces of one clip (rules in the module docstring)."""
  total = len(record["frame_indices"])
  latest_start = max(total - (num_frames - 1) * frame_stride - 1, 0)
  start = int(rng.integers(latest_start + 1)) if rng is not None else 0
  window = np.arange(start, total, frame_stride)[:num_frames]  # positions of the chosen frames
  frame_slot = np.full(total, -1)
  frame_slot[window] = np.arange(len(window))
  frames, frames_shape = (np.arange(len(window)),), (num_frames,)

  group_frame, face_group = np.asarray(record["group_frame"]), np.asarray(record["face_group"])
  ids = np.arange(len(group_frame))
  sizes = np.bincount(face_group, minlength=len(ids)).astype(np.int32)
  kept = _rank_within(group_frame, np.lexsort((ids, -sizes, group_frame))) < max_groups
  group_slot = np.full(len(ids), -1)
  group_slot[kept] = _rank_within(group_frame[kept], np.argsort(group_frame[kept], kind="stable"))
  group_t = frame_slot[group_frame]
  in_window = (group_t >= 0) & (group_slot >= 0)
  groups = np.flatnonzero(in_window)
  group_at, groups_shape = (group_t[groups], group_slot[groups]), (num_frames, max_groups)

  face_rank = _rank_within(face_group, np.argsort(face_group, kind="stable"))
  keep = np.flatnonzero(in_window[face_group] & (face_rank < max_faces))
  face_at = (group_t[face_group[keep]], group_slot[face_group[keep]], face_rank[keep])
  faces = _place_faces(record, keep, face_at, (*groups_shape, max_faces), rng if augment else None)
  faces["face_mask"] = faces.pop("mask")
  return {
      **faces,
      "num_faces": _scatter(sizes[groups], group_at, groups_shape),
      "group_mask": _scatter(np.ones(len(groups), bool), group_at, groups_shape, False),
      "group_boxes": _scatter(np.asarray(record["group_boxes"], np.float32)[groups], group_at,
                              groups_shape),
      "group_labels": _scatter(np.asarray(record["group_labels"], np.int32)[groups], group_at,
                               groups_shape, UNKNOWN),
      "num_groups": _scatter(np.bincount(group_frame, minlength=total)[window].astype(np.int32),
                             frames, frames_shape),
      "frame_mask": _scatter(np.ones(len(window), bool), frames, frames_shape, False),
      "frame_labels": _scatter(np.asarray(record["frame_labels"], np.int32)[window], frames,
                               frames_shape, UNKNOWN),
      "frame_indices": _scatter(np.asarray(record["frame_indices"], np.int32)[window], frames,
                                frames_shape, UNKNOWN),
      "fps": np.float32(record["fps"]),
      "label": np.int32(record["label"]),
  }


def train_clip_batches(source, *, batch_size: int, num_frames: int, frame_stride: int,
                       max_groups: int, max_faces: int, seed: int, num_steps: int,
                       start_step: int = 0, augment: bool = True, read_threads: int = 2,
                       workers: int = 0):
  """Iterator over this process's share of clips batches start_step .. num_steps-1.

  A batch (B = batch_size / process_count, T = num_frames, G = max_groups,
  N = max_faces): faces uint8 [B, T, G, N, 112, 112, 3] (or embeddings
  [B, T, G, N, M] and logits [B, T, G, N, C]), face_mask, face_boxes (+ [4]),
  face_px, face_emotions [B, T, G, N]; num_faces (true counts), group_mask,
  group_boxes (+ [4]), group_labels [B, T, G]; num_groups (true counts),
  frame_mask, frame_labels, frame_indices [B, T]; fps, label [B].
  """
  example_fn = functools.partial(_clip_example, num_frames=num_frames, frame_stride=frame_stride,
                                 max_groups=max_groups, max_faces=max_faces, augment=augment)
  return _train_batches(source, example_fn, batch_size=batch_size, seed=seed, num_steps=num_steps,
                        start_step=start_step, read_threads=read_threads, workers=workers)


def eval_clip_batches(source, batch_size: int, *, num_frames: int, frame_stride: int,
                      max_groups: int, max_faces: int):
  """This process's share of clips batches (windows from frame 0), the split once, plus valid."""
  return _eval_batches(source, batch_size, functools.partial(
      _clip_example, num_frames=num_frames, frame_stride=frame_stride, max_groups=max_groups,
      max_faces=max_faces, augment=False))


# --- frames (face detection) -----------------------------------------------------------

# align.py's landmark order (left eye, right eye, nose, left and right mouth corner; left is
# image-left): a horizontal flip swaps the eyes and the mouth corners.
_FLIPPED_LANDMARKS = np.array([1, 0, 2, 4, 3])


def _frame_example(record: dict, rng: np.random.Generator | None, *, max_faces: int,
                   scale: float, flip: bool, max_groups: int = 0) -> dict:
  """One frame with its G = max_faces largest faces, boxes clipped to the frame, and with
  max_groups > 0 its first max_groups groups (rules in train_frame_batches)."""
  image = np.asarray(record["image"])
  height, width = image.shape[:2]
  boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
  landmarks = np.asarray(record["landmarks"], np.float32).reshape(-1, 5, 2)
  group_boxes = np.asarray(record["group_boxes"] if max_groups else np.zeros((0, 4)),
                           np.float32).reshape(-1, 4)
  if rng is not None and flip and rng.random() < 0.5:
    image = image[:, ::-1]
    mirror = lambda b: np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)
    boxes, group_boxes = mirror(boxes), mirror(group_boxes)
    landmarks = np.stack([width - landmarks[..., 0], landmarks[..., 1]], -1)[:, _FLIPPED_LANDMARKS]
  if scale != 1:
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    factor = np.float32([size[0] / width, size[1] / height])
    boxes, group_boxes = boxes * np.tile(factor, 2), group_boxes * np.tile(factor, 2)
    landmarks = landmarks * factor
    height, width = size[1], size[0]
  inside = np.all((landmarks >= 0) & (landmarks <= [width, height]), (1, 2))
  clip = lambda b: np.clip(b, 0, np.float32([width, height, width, height]))
  boxes = clip(boxes)
  seen = np.flatnonzero((boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1))
  keep = seen[:max_faces]  # records list faces largest first
  slots = (np.arange(len(keep)),)
  example = {
      "image": np.ascontiguousarray(image),
      "boxes": _scatter(boxes[keep], slots, (max_faces,)),
      "landmarks": _scatter(landmarks[keep], slots, (max_faces,)),
      "valid": _scatter(np.ones(len(keep), bool), slots, (max_faces,), False),
      "has_landmarks": _scatter(inside[keep], slots, (max_faces,), False),
      "num_faces": np.int32(len(seen)),
  }
  if max_groups:
    group_boxes = clip(group_boxes)
    shown = np.flatnonzero((group_boxes[:, 2] - group_boxes[:, 0] >= 1)
                           & (group_boxes[:, 3] - group_boxes[:, 1] >= 1))
    kept = shown[:max_groups]
    group_slots = (np.arange(len(kept)),)
    example.update({
        "group_boxes": _scatter(group_boxes[kept], group_slots, (max_groups,)),
        "group_labels": _scatter(np.asarray(record["group_labels"], np.int32)[kept], group_slots,
                                 (max_groups,), -1),
        "group_valid": _scatter(np.ones(len(kept), bool), group_slots, (max_groups,), False),
        "num_groups": np.int32(len(shown))})
  return example


def train_frame_batches(source, *, batch_size: int, max_faces: int, seed: int, num_steps: int,
                        start_step: int = 0, scale: float = 1.0, flip: bool = True,
                        read_threads: int = 2, workers: int = 0, max_groups: int = 0):
  """Iterator over this process's share of frames batches start_step .. num_steps-1 (detection).

  A batch (B = batch_size / process_count, G = max_faces, H x W the frame
  size times `scale`): image uint8 [B, H, W, 3]; boxes [B, G, 4] (x0, y0, x1,
  y1) and landmarks [B, G, 5, 2] in pixels of that image; valid and
  has_landmarks bool [B, G]; num_faces int32 [B]. Boxes are clipped to the
  frame and a face with less than 1 px left inside is no face; the G largest
  faces of the rest fill the slots (records order) and num_faces holds how
  many there were, so the faces beyond G are counted, not hidden.
  has_landmarks is False for a face with a landmark outside the frame. With
  `flip`, each frame is mirrored with probability 1/2 (seeded per example),
  boxes and landmarks with it, left and right landmarks swapped.

  With max_groups > 0 (group proposals), also group_boxes [B, max_groups, 4]
  (scaled, flipped and clipped like the faces), group_labels int32 (-1 in
  empty slots), group_valid bool and num_groups int32 [B]: the record's first
  max_groups groups with at least 1 x 1 px inside the frame.
  """
  example_fn = functools.partial(_frame_example, max_faces=max_faces, scale=scale, flip=flip,
                                 max_groups=max_groups)
  return _train_batches(source, example_fn, batch_size=batch_size, seed=seed, num_steps=num_steps,
                        start_step=start_step, read_threads=read_threads, workers=workers)


def eval_frame_batches(source, batch_size: int, max_faces: int, scale: float = 1.0,
                       max_groups: int = 0):
  """This process's share of frames batches covering the split once, unflipped.

  As train_frame_batches, plus frame_valid [B] (False on padding frames);
  `valid` [B, G] is False on every slot of a padding frame.
  """
  def example_fn(record, rng):
    example = _frame_example(record, rng, max_faces=max_faces, scale=scale, flip=False,
                             max_groups=max_groups)
    example["face_valid"] = example.pop("valid")  # _eval_batches adds the frame's own "valid"
    return example

  for batch in _eval_batches(source, batch_size, example_fn):
    batch["frame_valid"] = batch.pop("valid")
    batch["valid"] = batch.pop("face_valid") & batch["frame_valid"][:, None]
    if max_groups:
      batch["group_valid"] &= batch["frame_valid"][:, None]
    yield batch
