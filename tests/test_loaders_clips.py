"""Clips loaders on a tiny real dataset: frame windows, group and face slots, true counts, order."""

import numpy as np
import pytest
from assets import loader_checks, tiny_records

from data_pipelines import loaders

WINDOW = dict(num_frames=3, frame_stride=2, max_groups=2, max_faces=3)
SPAN = (WINDOW["num_frames"] - 1) * WINDOW["frame_stride"] + 1


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  builder = tiny_records.prepare("clips", str(tmp_path_factory.mktemp("tfds")))
  return loaders.split_source(builder, "train")


def _train(source, start_step=0, **overrides):
  kwargs = dict(batch_size=2, seed=1, num_steps=14, start_step=start_step, **WINDOW)
  return loaders.train_clip_batches(source, **{**kwargs, **overrides})


def _latest_start(record) -> int:
  return max(len(record["frame_indices"]) - SPAN, 0)


def _find(source, batch, index) -> tuple[int, int]:
  """(record, window start) whose documented example is example `index` of `batch`."""
  for r in range(len(source)):
    for start in range(_latest_start(source[r]) + 1):
      want = loader_checks.expected_clip(source[r], start, **WINDOW)
      if all(np.array_equal(batch[k][index], v) for k, v in want.items()):
        return r, start
  raise AssertionError(f"example {index} is no window of any clip")


def test_the_tiny_clips_meet_every_rule(source):
  records = [source[i] for i in range(len(source))]
  assert any(len(r["frame_indices"]) < SPAN for r in records)
  per_frame = [np.bincount(r["group_frame"], minlength=len(r["frame_indices"])) for r in records]
  assert any((n > WINDOW["max_groups"]).any() for n in per_frame)
  assert any((n == 0).any() for n in per_frame)
  assert any(np.bincount(r["face_group"]).max() > WINDOW["max_faces"] for r in records)


def test_eval_batches_start_at_frame_zero(source):
  batches = list(loaders.eval_clip_batches(source, 4, **WINDOW))
  assert [b["valid"].tolist() for b in batches] == [[True] * 4, [True] * 3 + [False]]
  shapes = {k: v.shape for k, v in batches[0].items()}
  t, g, n = WINDOW["num_frames"], WINDOW["max_groups"], WINDOW["max_faces"]
  assert shapes == {
      "faces": (4, t, g, n, 112, 112, 3), "face_mask": (4, t, g, n), "face_boxes": (4, t, g, n, 4),
      "face_px": (4, t, g, n), "face_emotions": (4, t, g, n), "num_faces": (4, t, g),
      "group_mask": (4, t, g), "group_boxes": (4, t, g, 4), "group_labels": (4, t, g),
      "num_groups": (4, t), "frame_mask": (4, t), "frame_labels": (4, t),
      "frame_indices": (4, t), "fps": (4,), "label": (4,), "valid": (4,)}
  for i in range(len(source)):
    want = loader_checks.expected_clip(source[i], 0, **WINDOW)
    loader_checks.assert_example_equal(batches[i // 4], want, i % 4)


def test_train_windows_fit_the_clip_and_every_clip_comes_once_per_epoch(source):
  batches = list(_train(source, augment=False))  # 28 examples = 4 epochs of 7 clips
  found = [_find(source, batch, i) for batch in batches for i in range(2)]
  for epoch in range(4):
    assert sorted(r for r, _ in found[7 * epoch:7 * epoch + 7]) == list(range(7))
  starts = {r: {s for q, s in found if q == r} for r in range(7)}
  assert any(len(s) > 1 for s in starts.values())  # seeded random starts, not a fixed one
  assert all(b["frame_mask"][i].all() for b in batches for i in range(2)
             if len(source[_find(source, b, i)[0]]["frame_indices"]) >= SPAN)


def test_augmentation_touches_faces_only_and_keeps_empty_slots_zero(source):
  plain, augmented = next(_train(source, augment=False)), next(_train(source))
  for key in plain:
    if key != "faces":
      np.testing.assert_array_equal(plain[key], augmented[key], err_msg=key)
  assert not np.array_equal(plain["faces"], augmented["faces"])
  assert augmented["faces"][~augmented["face_mask"]].max(initial=0) == 0


def test_same_seed_same_batches_and_resume_is_the_tail(source):
  full = loader_checks.check_resume(lambda start: _train(source, start), start=9)
  loader_checks.assert_batches_equal(full, list(_train(source)))


def test_each_process_reads_its_share(source, monkeypatch):
  loader_checks.check_process_shares(monkeypatch, lambda: _train(source, num_steps=4),
                                     interleaved=True)
  loader_checks.check_process_shares(
      monkeypatch, lambda: loaders.eval_clip_batches(source, 4, **WINDOW), interleaved=False)
