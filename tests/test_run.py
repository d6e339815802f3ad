"""The runner end to end: config resolution, one-line errors, a tiny training run, kill + resume."""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from assets.runner import ROOT, checkpoint_params, run_experiment, run_experiment_subprocess


def test_unknown_config_lists_known_ones():
  result = run_experiment("--config=nope")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: unknown config 'nope'; known: emonet_affectnet, emonet_synthcrowd, nvpf_emotiw, "
      "nvpf_gecv, nvpf_synthcrowd, quickstart, retinaface_synthcrowd, rpn_gecv, rpn_synthcrowd, "
      "tnvpf_gecv, tnvpf_synthcrowd, tnvpf_vgaf"]


def _assert_is_help(text):
  assert text.startswith("Run a named experiment: `python -m experiments.run --config=NAME"), text
  assert "quickstart" in text and "tnvpf_synthcrowd" in text  # the known configs
  assert "--workdir" in text and "--mode" in text  # the command's flags


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--config=quickstart", "--help"],
                                  ["--config=nope", "-h"]])
def test_help_prints_usage_configs_and_flags(args):
  """Help comes before --config is resolved (it is not needed) and nothing runs."""
  result = run_experiment(*args)
  assert result.returncode == 0
  _assert_is_help(result.stdout)
  assert result.stderr == ""


def test_help_as_a_user_types_it():
  result = run_experiment_subprocess("--help")
  assert result.returncode == 0, result.stderr
  _assert_is_help(result.stdout)


def test_unknown_variant_is_one_line(tmp_path):
  result = run_experiment("--config=emonet_synthcrowd:huge", f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: unknown variant 'huge' of emonet_synthcrowd; known: tiny"]


def test_unknown_override_key_names_the_key(tmp_path):
  result = run_experiment("--config=emonet_synthcrowd", "--config.optimizer.nam=adam",
                          f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: --config.optimizer.nam: no key 'nam' in optimizer; it has: clip_global_norm, "
      "learning_rate, name, schedule, warmup_steps"]


def test_missing_real_dataset_is_one_line(tmp_path):
  result = run_experiment("--config=emonet_affectnet", f"--workdir={tmp_path}/run",
                          f"--config.data.data_dir={tmp_path}/tfds")
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith(f"error: affectnet: manual directory {tmp_path}/tfds/manual/affectnet "
                              "does not exist"), lines[-3:]
  assert not os.path.exists(tmp_path / "tfds")


def _tiny(data_dir, workdir, *extra):
  return ["--config=emonet_synthcrowd:tiny", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", *extra]


@pytest.mark.slow
def test_tiny_training_run_writes_its_workdir(tmp_path, synthcrowd_dir):
  (tmp_path / "run").mkdir()  # a run that stopped before its first checkpoint: nothing to resume
  (tmp_path / "run" / "config.json").write_text('{"seed": 99}')
  result = run_experiment(*_tiny(synthcrowd_dir, tmp_path / "run"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| mAC | UAR | F1 |" in result.stdout
  for name in ("config.json", "metrics.csv", "results.md", "results.json", "plots/curves.png",
               "plots/confusion_matrix.png", "checkpoints/6"):
    assert os.path.exists(tmp_path / "run" / name), name
  evaluated = run_experiment(*_tiny(synthcrowd_dir, tmp_path / "run"), "--mode=eval",
                   "--config.data.eval_split=test")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  assert os.path.exists(tmp_path / "run" / "results_test.md")
  changed = run_experiment(*_tiny(synthcrowd_dir, tmp_path / "run"),
                           "--config.optimizer.learning_rate=0.5")
  assert changed.returncode == 2
  assert "holds a run with a different config (optimizer.learning_rate" in changed.stderr


def _metrics_rows(workdir):
  """metrics.csv without the timing column: losses to full float precision per logged step."""
  with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
    return [{k: v for k, v in row.items() if k != "seconds_per_step"} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_then_rerun_ends_like_an_uninterrupted_run(tmp_path):
  """SIGKILL at a random moment after the first checkpoint (two seeded moments): each rerun
  resumes and ends with the uninterrupted run's parameters, metrics and results (data order, RNG
  and Adam restored)."""
  steps = ["--config.num_steps=12", "--config.eval.every=4", "--config.log_every=1"]
  reference = run_experiment_subprocess(*_tiny(tmp_path / "tfds", tmp_path / "reference", *steps))
  assert reference.returncode == 0, reference.stderr[-2000:]
  for seed in (0, 1):
    workdir = tmp_path / f"killed_{seed}"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run",
                             *_tiny(tmp_path / "tfds", workdir, *steps)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not os.path.isdir(workdir / "checkpoints" / "4") and time.time() < deadline:
      time.sleep(0.05)
    delay = random.Random(seed).uniform(0, 1.5)  # mid-step, mid-eval or mid-checkpoint
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not os.path.exists(workdir / "results.md"), f"killed too late ({delay:.2f} s) to resume"
    resumed = run_experiment_subprocess(*_tiny(tmp_path / "tfds", workdir, *steps))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for a, b in zip(checkpoint_params(workdir, 12), checkpoint_params(tmp_path / "reference", 12),
                    strict=True):
      np.testing.assert_array_equal(a, b)
    assert _metrics_rows(workdir) == _metrics_rows(tmp_path / "reference")
    with open(workdir / "results.md") as a, open(tmp_path / "reference" / "results.md") as b:
      assert a.read() == b.read()
