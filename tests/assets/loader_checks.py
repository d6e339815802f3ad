"""Checks shared by the loader tests: plain-loop reference examples, resume and process shares."""

import jax
import numpy as np

SIDE = 112


def payload_keys(record: dict) -> tuple[str, ...]:
  return ("embeddings", "logits") if "embeddings" in record else ("faces",)


def expected_group(record: dict, max_faces: int, faces: list[int] | None = None) -> dict:
  """A group example written slot by slot: faces `faces` of `record` (default all), first N kept."""
  faces = list(range(len(record["face_px"]))) if faces is None else faces
  out = {"mask": np.zeros(max_faces, bool), "face_boxes": np.zeros((max_faces, 4), np.float32),
         "face_px": np.zeros(max_faces, np.int32),
         "face_emotions": np.full(max_faces, -1, np.int32)}
  for key in payload_keys(record):
    tail = (SIDE, SIDE, 3) if key == "faces" else np.shape(record[key])[1:]
    dtype = np.uint8 if key == "faces" else np.float32
    out[key] = np.zeros((max_faces, *tail), dtype)
  for slot, face in enumerate(faces[:max_faces]):
    out["mask"][slot] = True
    for key in (*payload_keys(record), "face_boxes", "face_px", "face_emotions"):
      out[key][slot] = record[key][face]
  out["num_faces"] = np.int32(len(faces))
  return out


def expected_clip(record: dict, start: int, *, num_frames: int, frame_stride: int,
                  max_groups: int, max_faces: int) -> dict:
  """A clip example written out frame by frame and group by group (the documented rules)."""
  group_frame, face_group = list(record["group_frame"]), list(record["face_group"])
  members = [[f for f, g in enumerate(face_group) if g == group]
             for group in range(len(group_frame))]
  empty_group = expected_group(record, max_faces, [])
  frames = []
  for t in range(num_frames):
    position = start + t * frame_stride
    in_clip = position < len(record["frame_indices"])
    groups = [g for g, frame in enumerate(group_frame) if in_clip and frame == position]
    chosen = sorted(sorted(groups, key=lambda g: (-len(members[g]), g))[:max_groups])
    slots = [{**expected_group(record, max_faces, members[g]), "group_mask": True,
              "group_boxes": record["group_boxes"][g], "group_labels": record["group_labels"][g]}
             for g in chosen]
    slots += [{**empty_group, "group_mask": False, "group_boxes": np.zeros(4, np.float32),
               "group_labels": -1}] * (max_groups - len(chosen))
    frame = {k: np.stack([np.asarray(s[k]) for s in slots]) for k in slots[0]}
    frame["face_mask"] = frame.pop("mask")
    frame.update(frame_mask=in_clip, num_groups=len(groups),
                 frame_labels=record["frame_labels"][position] if in_clip else -1,
                 frame_indices=record["frame_indices"][position] if in_clip else -1)
    frames.append(frame)
  out = {k: np.stack([np.asarray(f[k]) for f in frames]) for k in frames[0]}
  out.update(fps=record["fps"], label=record["label"])
  return out


def assert_example_equal(got: dict, want: dict, index: int = 0) -> None:
  """Example `index` of batch `got` equals `want` in every key of `want`, dtypes loosely."""
  for key, value in want.items():
    np.testing.assert_array_equal(got[key][index], value, err_msg=key)


def assert_batches_equal(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def check_resume(make_batches, start: int) -> list[dict]:
  """make_batches(start_step) from `start` equals the tail of a run from 0; returns the full run."""
  full = list(make_batches(0))
  assert_batches_equal(full[start:], list(make_batches(start)))
  return full


def check_process_shares(monkeypatch, make_batches, interleaved: bool) -> None:
  """Two simulated processes read complementary halves of the one-process global batches.

  Training shares interleave (process p holds examples p, p + 2, ...), evaluation
  shares are contiguous halves.
  """
  whole = list(make_batches())
  shares = []
  for index in range(2):
    with monkeypatch.context() as patch:
      patch.setattr(jax, "process_count", lambda: 2)
      patch.setattr(jax, "process_index", lambda index=index: index)
      shares.append(list(make_batches()))
  assert len(shares[0]) == len(shares[1]) == len(whole)
  for batch, first, second in zip(whole, *shares):
    half = len(batch["label"]) // 2
    for key in batch:
      value = batch[key]
      parts = (value[0::2], value[1::2]) if interleaved else (value[:half], value[half:])
      np.testing.assert_array_equal(parts[0], first[key], err_msg=key)
      np.testing.assert_array_equal(parts[1], second[key], err_msg=key)
