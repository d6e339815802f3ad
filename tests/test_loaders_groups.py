"""Groups loaders on a tiny real dataset: padding, true counts, order, resume, process shares."""

import numpy as np
import pytest
from assets import loader_checks, tiny_records

from data_pipelines import loaders

MAX_FACES = 4


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  builder = tiny_records.prepare("groups", str(tmp_path_factory.mktemp("tfds")))
  return loaders.split_source(builder, "train")


def _train(source, start_step=0, **overrides):
  kwargs = dict(batch_size=4, max_faces=MAX_FACES, seed=5, num_steps=12, start_step=start_step)
  return loaders.train_group_batches(source, **{**kwargs, **overrides})


def test_eval_batches_pad_truncate_with_true_counts_and_keep_face_order(source):
  batches = list(loaders.eval_group_batches(source, 8, MAX_FACES))
  valid = [b["valid"].tolist() for b in batches]
  assert valid == [[True] * 8, [True] * 8, [True] * 2 + [False] * 6]
  shapes = {k: v.shape for k, v in batches[0].items()}
  assert shapes == {"faces": (8, 4, 112, 112, 3), "mask": (8, 4), "face_boxes": (8, 4, 4),
                    "face_px": (8, 4), "face_emotions": (8, 4), "num_faces": (8,),
                    "group_box": (8, 4), "label": (8,), "valid": (8,)}
  counts = []
  for i in range(len(source)):
    record, batch = source[i], batches[i // 8]
    want = {**loader_checks.expected_group(record, MAX_FACES), "group_box": record["group_box"],
            "label": record["label"]}
    loader_checks.assert_example_equal(batch, want, i % 8)
    assert batch["faces"][i % 8][~batch["mask"][i % 8]].max(initial=0) == 0
    assert np.all(np.diff(record["face_px"]) <= 0)  # largest first, so truncation keeps the largest
    counts.append(len(record["face_px"]))
  assert max(counts) > MAX_FACES and min(counts) < MAX_FACES  # both truncation and padding met
  assert batches[0]["faces"].dtype == np.uint8 and batches[0]["mask"].dtype == bool
  assert batches[0]["num_faces"].dtype == np.int32 and batches[0]["label"].dtype == np.int32


def test_train_batches_are_records_in_a_fresh_order_each_epoch(source):
  batches = list(_train(source, augment=False))  # 12 steps x 4 = 48 examples = 2.67 epochs
  boxes = [tuple(source[i]["group_box"]) for i in range(len(source))]
  order = [boxes.index(tuple(box)) for b in batches for box in b["group_box"]]
  assert sorted(order[:18]) == sorted(order[18:36]) == list(range(18))
  assert order[:18] != order[18:36]
  for position, index in enumerate(order):
    loader_checks.assert_example_equal(batches[position // 4],
                                       loader_checks.expected_group(source[index], MAX_FACES),
                                       position % 4)


def test_augmentation_changes_only_filled_slots(source):
  plain, augmented = next(_train(source, augment=False)), next(_train(source))
  for key in ("mask", "num_faces", "face_boxes", "label"):
    np.testing.assert_array_equal(plain[key], augmented[key])
  assert not np.array_equal(plain["faces"], augmented["faces"])
  assert augmented["faces"][~augmented["mask"]].max(initial=0) == 0


def test_same_seed_same_batches_and_resume_is_the_tail(source):
  full = loader_checks.check_resume(lambda start: _train(source, start), start=7)
  loader_checks.assert_batches_equal(full, list(_train(source)))
  other = next(_train(source, seed=6))
  assert not np.array_equal(full[0]["group_box"], other["group_box"])


def test_each_process_reads_its_share(source, monkeypatch):
  loader_checks.check_process_shares(monkeypatch, lambda: _train(source, num_steps=5),
                                     interleaved=True)
  loader_checks.check_process_shares(
      monkeypatch, lambda: loaders.eval_group_batches(source, 8, MAX_FACES), interleaved=False)
