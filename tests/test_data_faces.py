"""SynthCrowd faces on disk: the TFDS builder (ArrayRecord, no TensorFlow) and the grain loaders."""

import numpy as np
import pytest

from data_pipelines import builders, loaders
from data_pipelines.builders import synthcrowd
from emoflow.labels import EMOTIONS


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return loaders.prepare("synthcrowd", "faces_tiny", str(tmp_path_factory.mktemp("tfds")))


def test_builder_writes_array_record_splits(tiny):
  assert tiny.info.file_format.value == "array_record"
  sizes = {name: split.num_examples for name, split in tiny.info.splits.items()}
  assert sizes == {"train": 512, "validation": 128, "test": 128}
  record = loaders.split_source(tiny, "train")[5]
  assert record["image"].shape == (112, 112, 3) and record["image"].dtype == np.uint8
  index = int(_text(record["source"]).rsplit("/", 1)[1])  # TFDS shuffles on write
  assert record["emotion"] == index % len(EMOTIONS)
  assert 8 <= record["face_px"] <= 120


def test_records_are_a_pure_function_of_seed_split_index(tiny):
  record = loaders.split_source(tiny, "validation")[17]
  index = int(_text(record["source"]).rsplit("/", 1)[1])
  again = synthcrowd.render_aligned_face(0, "validation", index)
  np.testing.assert_array_equal(record["image"], again["image"])
  other_split = synthcrowd.render_aligned_face(0, "train", index)
  assert not np.array_equal(record["image"], other_split["image"])


def test_unknown_dataset_and_split_are_one_line_errors(tiny):
  with pytest.raises(ValueError, match="no dataset builder named 'nosuch'; known: affectnet, "
                     "emotiw_gaf, gecv, synthcrowd, vgaf"):
    builders.get("nosuch")
  with pytest.raises(ValueError, match="has no split 'dev'"):
    loaders.split_source(tiny, "dev")


def test_train_batches_resume_at_any_step(tiny):
  source = loaders.split_source(tiny, "train")
  kwargs = dict(batch_size=16, seed=3, num_steps=40)  # 40*16 > 512: crosses an epoch
  full = list(loaders.train_face_batches(source, **kwargs))
  assert len(full) == 40
  tail = list(loaders.train_face_batches(source, start_step=33, **kwargs))
  for a, b in zip(full[33:], tail):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  first_epoch = np.concatenate([b["label"] for b in full[:32]])
  assert np.bincount(first_epoch, minlength=8).tolist() == [64] * 8  # each face once per epoch


def test_augmentation_keeps_dtype_and_changes_pixels(tiny):
  image = loaders.split_source(tiny, "train")[0]["image"]
  out = loaders.augment_face(image, np.random.default_rng(0))
  assert out.shape == image.shape and out.dtype == np.uint8
  assert not np.array_equal(out, image)


def test_eval_batches_cover_the_split_once_with_padding(tiny):
  source = loaders.split_source(tiny, "test")
  batches = list(loaders.eval_face_batches(source, 48))
  assert [b["image"].shape[0] for b in batches] == [48, 48, 48]
  valid = np.concatenate([b["valid"] for b in batches])
  assert valid.sum() == 128 and not valid[128:].any()
  labels = np.concatenate([b["label"] for b in batches])[valid]
  np.testing.assert_array_equal(labels, [source[i]["emotion"] for i in range(128)])
