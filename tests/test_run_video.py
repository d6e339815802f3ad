"""The video level through the runner: tiny TNVPF / RNN / LSTM runs, the curriculum, one-line errors."""

import itertools
import os

import numpy as np
import pytest
from assets import tiny_records
from assets.runner import run_experiment

from data_pipelines import loaders
from experiments import video
from experiments.configs import tnvpf_synthcrowd


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def clips(data_dir):
  """The builder of a prepared tiny clips dataset (7 train / 3 validation clips)."""
  return tiny_records.prepare("clips", data_dir)


def _tiny(config, workdir, data_dir, emonet_run, *extra):
  return [f"--config={config}", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          f"--config.features.emonet_workdir={emonet_run}", "--config.batch_size=8",
          "--config.eval.batch_size=8", *extra]  # 8: conftest's devices


@pytest.mark.parametrize("cell, name", [("tnvpf", "TNVPF"), ("rnn", "FeC + RNN"),
                                        ("lstm", "FeC + LSTM")])
@pytest.mark.slow
def test_tiny_run_of_each_cell_writes_table_7_rows_and_confusion_pictures(
    tmp_path, emonet_run, data_dir, clips, cell, name):
  args = _tiny(f"tnvpf_synthcrowd:{cell},tiny", tmp_path / "run", data_dir, emonet_run,
               f"--config.data.source={clips.data_dir}", "--config.model.nll_weight=0.1")
  result = run_experiment(*args)
  assert result.returncode == 0, result.stderr[-2000:]
  assert ("| model | prediction | examples | mAC (95% CI) | mAC - FeC + RNN (points, 95% CI) | "
          "UAR | F1 | positive | negative | neutral |") in result.stdout
  for readout in ("video (last frame)", "video (mean of frames)", "frames"):
    assert f"| {name} | {readout} |" in result.stdout
  for picture in ("confusion_matrix", "confusion_matrix_mean", "confusion_matrix_frames"):
    assert os.path.exists(tmp_path / "run" / "plots" / f"{picture}.png"), picture
  if cell == "tnvpf":
    evaluated = run_experiment(*args, "--mode=eval")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    trained, evaluated = ((tmp_path / "run" / f).read_text().splitlines()[2:]
                          for f in ("results.md", "results_validation.md"))
    assert trained == evaluated


def test_curriculum_changes_the_window_at_its_step_and_resumes_mid_phase(clips):
  config = tnvpf_synthcrowd.get_config("tiny")
  config.batch_size = 2
  config.clip.curriculum = ((2, 3), (4, 6))
  config.num_steps = 6
  source = loaders.split_source(clips, "train")
  batches = list(video._train_batches(config, source, 0))
  assert [b["frame_mask"].shape[1] for b in batches] == [2, 2, 2, 4, 4, 4]
  for start in (2, 4):
    for a, b in itertools.zip_longest(batches[start:], video._train_batches(config, source, start)):
      np.testing.assert_array_equal(a["faces"], b["faces"])


def test_paper_configs_without_data_say_what_to_get(tmp_path, emonet_run):
  for name, dataset in (("tnvpf_gecv", "gecv"), ("tnvpf_vgaf", "vgaf")):
    result = run_experiment(*_tiny(name, tmp_path / name, tmp_path / "tfds", emonet_run))
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {dataset}: manual directory"), line
    assert line.endswith("; or run this config on rendered data: --config.data.source=synthcrowd")


def test_user_mistakes_are_one_line(tmp_path, emonet_run, data_dir, clips):
  base = _tiny("tnvpf_synthcrowd:tiny", tmp_path / "run", data_dir, emonet_run,
               f"--config.data.source={clips.data_dir}")
  cases = {
      "--config.clip.curriculum=((2, 2), (5, 3))":
          "error: clip.curriculum must be (num_frames >= 1, until_step) pairs with rising steps "
          "ending at num_steps=4, got ((2, 2), (5, 3))",
      "--config.model.cell=gru": "error: --config.model.cell='gru': unknown; known: lstm, rnn, tnvpf",
      "--config.features.mode=end_to_end":
          "error: features.mode 'end_to_end': the video level trains on cached EmoNet features "
          "only (features.mode=cached)",
  }
  for i, (arg, message) in enumerate(cases.items()):
    result = run_experiment(*base, arg, f"--workdir={tmp_path}/run{i}")
    assert result.returncode == 2, (arg, result.stderr[-2000:])
    assert result.stderr.strip().splitlines()[-1:] == [message], arg
