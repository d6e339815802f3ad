"""The EmoNet feature cache: a round trip over real tiny datasets, the command, one-line errors."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from assets import loader_checks, tiny_records

from data_pipelines import loaders
from emoflow.tasks import individual as individual_task
from emoflow.train import checkpoint
from experiments import cache_features, individual
from experiments.configs import emonet_synthcrowd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = 3


def _run(*args):
  return subprocess.run([sys.executable, "-m", "experiments.cache_features", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, model, state) of an EmoNet run saved at step STEP, as experiments.run saves one."""
  workdir = tmp_path_factory.mktemp("run")
  config = emonet_synthcrowd.get_config("tiny")
  (workdir / "config.json").write_text(config.to_json())
  model = individual.make_model(config)
  state = individual.initial_state(config, model, config.num_steps)
  state = state.replace(step=STEP, params=jax.tree.map(lambda p: p + 0.01, state.params))
  checkpoints = checkpoint.Checkpoints(str(workdir / "checkpoints"), best_metric="UAR")
  checkpoints.save(state, {"UAR": 0.5})
  checkpoints.wait()
  checkpoints.close()
  return str(workdir), model, state


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """Prepared tiny groups and clips datasets: config -> builder."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return {config: tiny_records.prepare(config, data_dir) for config in ("groups", "clips")}


@pytest.fixture(scope="module")
def cached(run, data, tmp_path_factory):
  """config -> (source builder, cache builder, whether it was written)."""
  out_dir = str(tmp_path_factory.mktemp("features"))
  return {config: (builder, *cache_features.cache(run[0], builder.data_dir, data_dir="",
                                                  out_dir=out_dir, batch_size=16))
          for config, builder in data.items()}


@pytest.mark.slow
def test_cache_is_the_source_with_emonet_outputs_for_faces(run, cached):
  _, model, state = run
  source_builder, cache, written = cached["groups"]
  assert written and cache.info.splits.keys() == source_builder.info.splits.keys()
  version = str(source_builder.version).replace(".", "_")  # a rebuilt source gets its own cache
  assert f"tiny_records_groups_v{version}_step{STEP}_" in cache.data_dir
  assert cache.info.metadata["step"] == STEP
  records = {}
  for split in ("train", "validation"):
    source = loaders.split_source(source_builder, split)
    features = loaders.split_source(cache, split)
    assert len(source) == len(features)
    for i in range(len(source)):
      record, cached_record = source[i], features[i]
      assert set(cached_record) == set(record) - {"faces"} | {"embeddings", "logits"}
      for key in set(record) - {"faces"}:
        np.testing.assert_array_equal(cached_record[key], record[key], err_msg=key)
      records[split, i] = record["faces"], cached_record
  faces = np.stack([face for faces, _ in records.values() for face in faces])
  probs, embeddings = jax.jit(lambda x: individual_task.predict(model, state.variables, x))(faces)
  cached_embeddings = np.concatenate([r["embeddings"] for _, r in records.values()])
  cached_logits = np.concatenate([r["logits"] for _, r in records.values()])
  assert cached_embeddings.dtype == cached_logits.dtype == np.float32
  scale = np.abs(embeddings).max()  # float32 sums of other batch sizes differ in the last bits
  np.testing.assert_allclose(cached_embeddings, embeddings, rtol=1e-4, atol=1e-6 * scale)
  np.testing.assert_allclose(jax.nn.softmax(cached_logits), probs, atol=1e-5)


def test_loaders_read_cached_groups_as_features(cached):
  source = loaders.split_source(cached["groups"][1], "train")
  batch = next(loaders.eval_group_batches(source, 8, 4))
  assert "faces" not in batch
  assert batch["embeddings"].shape == (8, 4, 128) and batch["logits"].shape == (8, 4, 8)
  for i in range(8):
    loader_checks.assert_example_equal(batch, loader_checks.expected_group(source[i], 4), i)
  kwargs = dict(batch_size=8, max_faces=4, seed=0, num_steps=3)
  augmented = list(loaders.train_group_batches(source, **kwargs))  # features: nothing to augment
  plain = list(loaders.train_group_batches(source, augment=False, **kwargs))
  loader_checks.assert_batches_equal(augmented, plain)


def test_loaders_read_cached_clips_as_features(cached):
  source = loaders.split_source(cached["clips"][1], "train")
  window = dict(num_frames=3, frame_stride=2, max_groups=2, max_faces=3)
  batch = next(loaders.eval_clip_batches(source, 4, **window))
  assert batch["embeddings"].shape == (4, 3, 2, 3, 128) and "faces" not in batch
  for i in range(4):
    want = loader_checks.expected_clip(source[i], 0, **window)
    loader_checks.assert_example_equal(batch, want, i)


def test_command_reuses_the_cache_of_the_same_checkpoint(run, cached):
  cache = cached["groups"][1]
  out_dir = os.path.dirname(os.path.dirname(os.path.dirname(cache.data_dir)))
  result = _run(f"--workdir={run[0]}", f"--dataset={cached['groups'][0].data_dir}",
                f"--out_dir={out_dir}", "--batch_size=16")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == (f"{cache.info.full_name} (train 18, validation 6) exists: "
                                   f"{cache.data_dir}")


@pytest.mark.slow
def test_user_mistakes_are_one_line(tmp_path, run):
  with open(os.path.join(run[0], "config.json")) as f:
    (tmp_path / "config.json").write_text(f.read())
  cases = {
      ("--workdir=/nonexistent", "--dataset=a/b"): "error: --workdir /nonexistent does not exist",
      (f"--workdir={tmp_path}", "--dataset=a/b"):
          f"error: no checkpoint in {tmp_path}/checkpoints; train it first with experiments.run",
      (f"--workdir={run[0]}", "--dataset=ab"):
          "error: --dataset must be NAME/CONFIG or a prepared dataset directory, got 'ab'",
      ("--bogus=1",): "error: Unknown command line flag 'bogus'",
  }
  for args, message in cases.items():
    result = _run(*args)
    assert result.returncode == 2, (args, result.stderr[-2000:])
    assert result.stderr.strip().splitlines() == [message], args
