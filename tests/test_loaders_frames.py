"""Frames loaders (detection) on synthcrowd/frames_tiny built in a tmp dir: slots, flip, scale, resume."""

import numpy as np
import pytest

from data_pipelines import loaders

MAX_FACES = 4


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  return loaders.prepare("synthcrowd", "frames_tiny", str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="module")
def source(builder):
  return loaders.split_source(builder, "train")


def _expected(record, max_faces, width=640, height=360):
  """A plain-loop reference: clip to the frame, drop faces with < 1 px inside, keep the first G."""
  boxes = np.clip(record["boxes"], 0, [width, height, width, height])
  seen = [i for i, b in enumerate(boxes) if b[2] - b[0] >= 1 and b[3] - b[1] >= 1]
  out = {"boxes": np.zeros((max_faces, 4), np.float32),
         "landmarks": np.zeros((max_faces, 5, 2), np.float32),
         "valid": np.zeros(max_faces, bool), "has_landmarks": np.zeros(max_faces, bool)}
  for slot, i in enumerate(seen[:max_faces]):
    out["boxes"][slot] = boxes[i]
    out["landmarks"][slot] = record["landmarks"][i]
    out["valid"][slot] = True
    lm = record["landmarks"][i]
    out["has_landmarks"][slot] = bool(np.all((lm >= 0) & (lm <= [width, height])))
  out["num_faces"] = len(seen)
  return out


def test_records_hold_frames_with_faces_largest_first(builder):
  assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {
      "train": 64, "validation": 16, "test": 16}
  record = loaders.split_source(builder, "validation")[3]
  assert record["image"].shape == (360, 640, 3) and record["image"].dtype == np.uint8
  assert record["boxes"].shape == (len(record["face_px"]), 4)
  assert record["landmarks"].shape == (len(record["face_px"]), 5, 2)
  assert np.all(np.diff(record["face_px"]) <= 0)


def test_eval_batches_keep_the_largest_faces_and_count_the_rest(builder):
  source = loaders.split_source(builder, "validation")
  batches = list(loaders.eval_frame_batches(source, 6, MAX_FACES))
  assert [b["frame_valid"].tolist() for b in batches] == [[True] * 6, [True] * 6,
                                                          [True] * 4 + [False] * 2]
  assert {k: v.shape for k, v in batches[0].items()} == {
      "image": (6, 360, 640, 3), "boxes": (6, MAX_FACES, 4), "landmarks": (6, MAX_FACES, 5, 2),
      "valid": (6, MAX_FACES), "has_landmarks": (6, MAX_FACES), "num_faces": (6,),
      "frame_valid": (6,)}
  assert not batches[-1]["valid"][4:].any()
  counts = []
  for i in range(len(source)):
    batch, slot, want = batches[i // 6], i % 6, _expected(source[i], MAX_FACES)
    np.testing.assert_array_equal(batch["image"][slot], source[i]["image"])
    for key, value in want.items():
      np.testing.assert_allclose(batch[key][slot], value, err_msg=f"{key} of record {i}")
    counts.append(want["num_faces"])
  assert max(counts) > MAX_FACES and min(counts) < MAX_FACES  # truncation and padding both met


def test_scale_resizes_image_boxes_and_landmarks(source):
  full = next(iter(loaders.eval_frame_batches(source, 2, 16)))
  half = next(iter(loaders.eval_frame_batches(source, 2, 16, scale=0.5)))
  assert half["image"].shape == (2, 180, 320, 3)
  np.testing.assert_allclose(half["boxes"], full["boxes"] / 2, atol=1e-4)
  np.testing.assert_allclose(half["landmarks"][full["has_landmarks"]],
                             full["landmarks"][full["has_landmarks"]] / 2, atol=1e-4)


def test_flip_mirrors_boxes_and_swaps_left_and_right_landmarks(source):
  record = source[0]
  plain = loaders._frame_example(record, None, max_faces=8, scale=1.0, flip=True)
  seeds = [s for s in range(20) if np.random.default_rng(s).random() < 0.5]
  flipped = loaders._frame_example(record, np.random.default_rng(seeds[0]), max_faces=8,
                                   scale=1.0, flip=True)
  np.testing.assert_array_equal(flipped["image"], plain["image"][:, ::-1])
  valid = plain["valid"]
  b, f = plain["boxes"][valid], flipped["boxes"][valid]
  np.testing.assert_allclose(f, np.stack([640 - b[:, 2], b[:, 1], 640 - b[:, 0], b[:, 3]], 1))
  lm, flm = plain["landmarks"][valid], flipped["landmarks"][valid]
  np.testing.assert_allclose(flm[:, [1, 0, 2, 4, 3], 0], 640 - lm[..., 0], atol=1e-4)
  np.testing.assert_allclose(flm[:, [1, 0, 2, 4, 3], 1], lm[..., 1])
  both = valid & plain["has_landmarks"]
  for example in (plain, flipped):  # the left eye stays image-left of the right eye
    assert np.all(example["landmarks"][both][:, 0, 0] < example["landmarks"][both][:, 1, 0])


def test_train_batches_are_a_function_of_seed_and_step(source):
  kwargs = dict(batch_size=4, max_faces=MAX_FACES, seed=3, num_steps=20, scale=0.25)
  run = list(loaders.train_frame_batches(source, **kwargs))
  assert len(run) == 20 and run[0]["image"].shape == (4, 90, 160, 3)
  resumed = list(loaders.train_frame_batches(source, start_step=17, **kwargs))
  for a, b in zip(run[17:], resumed, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = next(loaders.train_frame_batches(source, **{**kwargs, "seed": 4}))
  assert not np.array_equal(other["image"], run[0]["image"])
  assert all(b["valid"].any() for b in run)


def test_records_carry_groups_whose_boxes_enclose_their_faces(source):
  for i in range(len(source)):
    record = source[i]
    face_group, boxes = np.asarray(record["face_group"]), np.asarray(record["boxes"])
    assert len(face_group) == len(boxes)
    assert len(record["group_boxes"]) == len(record["group_labels"]) > 0
    assert set(np.asarray(record["group_labels"]).tolist()) <= {0, 1, 2}
    for g, group_box in enumerate(np.asarray(record["group_boxes"])):
      members = boxes[face_group == g]
      assert len(members), f"group {g} of record {i} has no face"
      # SynthCrowd's group box is the union of its visible members' boxes.
      np.testing.assert_allclose(group_box[:2], members[:, :2].min(0), atol=0.01)
      np.testing.assert_allclose(group_box[2:], members[:, 2:].max(0), atol=0.01)


def test_group_slots_are_scaled_flipped_clipped_and_padded(source):
  record = source[1]
  width, height = 640, 360
  plain = loaders._frame_example(record, None, max_faces=4, scale=0.5, flip=True, max_groups=8)
  seeds = [s for s in range(20) if np.random.default_rng(s).random() < 0.5]
  flipped = loaders._frame_example(record, np.random.default_rng(seeds[0]), max_faces=4,
                                   scale=0.5, flip=True, max_groups=8)
  want = np.clip(np.asarray(record["group_boxes"]), 0, [width, height, width, height]) / 2
  n = len(want)
  assert plain["num_groups"] == n and plain["group_valid"].tolist() == [True] * n + [False] * (8 - n)
  np.testing.assert_allclose(plain["group_boxes"][:n], want, atol=1e-4)
  np.testing.assert_array_equal(plain["group_boxes"][n:], 0)
  np.testing.assert_array_equal(plain["group_labels"], list(record["group_labels"]) + [-1] * (8 - n))
  np.testing.assert_allclose(flipped["group_boxes"][:n],
                             np.stack([320 - want[:, 2], want[:, 1], 320 - want[:, 0], want[:, 3]], 1),
                             atol=1e-4)
  assert "group_boxes" not in loaders._frame_example(record, None, max_faces=4, scale=1, flip=False)


def test_eval_batches_mask_the_groups_of_padding_frames(source):
  batches = list(loaders.eval_frame_batches(source, 6, 4, max_groups=4))
  last = batches[-1]
  assert not last["frame_valid"].all()  # 64 frames in batches of 6 end with padding
  assert not last["group_valid"][~last["frame_valid"]].any()
  assert last["group_valid"][last["frame_valid"]].any(1).all()
