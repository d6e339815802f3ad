"""Multi-host: two processes on localhost (4 CPU devices each, one coordinator) render a tiny
dataset once, train a tiny run (EmoNet; RetinaFace, whose evaluation gathers detections from
both) like one process on 8 devices, and write the run's files once."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from assets.runner import ROOT, checkpoint_params, run_experiment_subprocess

from emoflow.train import distributed

# float64: in float32 this deep net's steps differ by ~1e-2 between any two summation orders
# (STACK.md), which Adam amplifies within a few steps and would hide a real mismatch.
STEPS = ["--config.num_steps=4", "--config.eval.every=2", "--config.log_every=1",
         "--config.model.dtype=float64"]


@pytest.fixture(autouse=True)
def _x64(monkeypatch):
  monkeypatch.setenv("JAX_ENABLE_X64", "1")


def _tiny(config, tmp_path, workdir):
  return [f"--config={config}", f"--workdir={workdir}", f"--config.data.data_dir={tmp_path}/tfds",
          *STEPS]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train_losses(workdir) -> np.ndarray:
  with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
    return np.array([float(r["loss"]) for r in csv.DictReader(f) if r["split"] == "train"])


@pytest.mark.slow
@pytest.mark.parametrize("config", ["emonet_synthcrowd:tiny", "retinaface_synthcrowd:tiny"])
def test_two_processes_train_like_one(config, tmp_path):
  port, workdir = _free_port(), tmp_path / "two"
  env = {**os.environ, "XLA_FLAGS": os.environ["XLA_FLAGS"].replace(
      "--xla_force_host_platform_device_count=8", "--xla_force_host_platform_device_count=4")}
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.run", *_tiny(config, tmp_path, workdir),
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  try:
    outputs = [p.communicate(timeout=420) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-2000:]
  assert "multi-host job: 2 processes via 127.0.0.1" in outputs[0][0]
  one = run_experiment_subprocess(*_tiny(config, tmp_path, tmp_path / "one"))  # process 0's data
  assert one.returncode == 0, one.stderr[-2000:]
  assert "## " in outputs[0][0] and "## " not in outputs[1][0]  # the results, from process 0

  np.testing.assert_allclose(_train_losses(workdir), _train_losses(tmp_path / "one"), rtol=1e-4)
  for a, b in zip(checkpoint_params(workdir, 4), checkpoint_params(tmp_path / "one", 4), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  with open(workdir / "results.json") as a, open(tmp_path / "one" / "results.json") as b:
    two_results, one_results = json.load(a), json.load(b)
  assert two_results.keys() == one_results.keys() and len(two_results) > 3
  for key, value in one_results.items():
    assert two_results[key] == pytest.approx(value, rel=1e-3, abs=1e-3, nan_ok=True), key
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  assert not [name for name in os.listdir(workdir) if name.startswith(".")], "temporary files left"


def test_explicit_coordinator_flags_go_together():
  with pytest.raises(ValueError, match="go together"):
    distributed.initialize("127.0.0.1:1234", None, 0, env={})
  with pytest.raises(ValueError, match="--process_id 2 is not in 0..1"):
    distributed.initialize("127.0.0.1:1234", 2, 2, env={})


@pytest.mark.parametrize("env", [{}, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"},
                                 {"SLURM_STEP_NUM_TASKS": "1"}, {"OMPI_COMM_WORLD_SIZE": "1"}])
def test_a_single_task_joins_nothing(env):
  # A batch script's own shell has SLURM_NTASKS but runs one process: no peers to wait for.
  assert distributed.initialize(env=env) is None
