"""The group level through the runner: tiny FeA / FeB / FeC runs; missing data or EmoNet in one line."""

import os
import subprocess
import sys

import pytest
from assets import tiny_records
from assets.runner import ROOT, run_experiment

from emoflow import bundle
from emoflow.models import priors
from experiments import sources
from experiments.configs import nvpf_emotiw



@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def groups(data_dir) -> str:
  """The directory of a prepared tiny groups dataset (18 train / 6 validation groups)."""
  return tiny_records.prepare("groups", data_dir).data_dir


def _tiny(config, workdir, data_dir, emonet_run, *extra):
  return [f"--config={config}", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          f"--config.features.emonet_workdir={emonet_run}", *extra]


@pytest.mark.parametrize("fusion, scheme", [("fea", "averaging (FeA)"),
                                            ("feb", "concatenation (FeB)"),
                                            ("fec", "NVPF (FeC)")])
@pytest.mark.slow
def test_tiny_run_of_each_fusion_writes_a_table_5_row(tmp_path, emonet_run, data_dir, groups,
                                                      fusion, scheme):
  # One evaluation, at the last step: training reports the last step, --mode=eval the best
  # checkpoint, and on a 4-step run two evaluations can tie on mAC.
  args = _tiny(f"nvpf_synthcrowd:{fusion},tiny", tmp_path / "run", data_dir, emonet_run,
               f"--config.data.source={groups}", "--config.eval.every=4",
               f"--config.eval.reference_workdir={tmp_path}/fea")  # not the repo's runs/
  result = run_experiment(*args)
  assert result.returncode == 0, result.stderr[-2000:]
  header = ("| model | fusion | stage | examples | mAC (95% CI) | mAC - FeA (points, 95% CI) | "
            "UAR | F1 | positive | negative | neutral |")
  assert header in result.stdout
  assert f"| EmoNet | {scheme} | " in result.stdout
  assert "No difference column: no predictions of the validation split in" in result.stdout
  for name in ("results.md", "metrics.csv", "plots/confusion_matrix.png", "checkpoints/4",
               "predictions_validation.npz"):
    assert os.path.exists(tmp_path / "run" / name), name
  if fusion == "fec":
    evaluated = run_experiment(*args, "--mode=eval")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    trained, evaluated = ((tmp_path / "run" / name).read_text().splitlines()[2:]
                          for name in ("results.md", "results_validation.md"))
    assert trained == evaluated  # the same numbers under another title
    _check_export(tmp_path, emonet_run, str(tmp_path / "run"))


def _check_export(tmp_path, emonet_run: str, group_run: str) -> None:
  """experiments.export_model gathers the runs into a model directory emoflow.bundle reads."""
  def export(*args):
    return subprocess.run([sys.executable, "-m", "experiments.export_model", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)

  result = export(f"--emonet={emonet_run}", f"--group={group_run}", f"--out={tmp_path}/model")
  assert result.returncode == 0, result.stderr[-2000:]
  model = bundle.load(str(tmp_path / "model"))
  assert model.config["group"]["fusion"] == "fec" and model.config["video"] is None
  assert model.config["sources"]["group"]["step"] == 4
  assert set(model.variables) == {"emonet", "group"}
  result = export(f"--emonet={group_run}", f"--group={group_run}", f"--out={tmp_path}/bad")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: {group_run} holds a 'group' run, not the 'individual' run needed here"]


@pytest.mark.slow
def test_tiny_end_to_end_run_fine_tunes_emonet_and_evaluates_its_checkpoint(tmp_path, emonet_run, data_dir, groups):
  args = _tiny("nvpf_synthcrowd:fea,e2e,tiny", tmp_path / "run", data_dir, emonet_run,
               f"--config.data.source={groups}", "--config.eval.every=4")  # the last step only
  result = run_experiment(*args)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| EmoNet (fine-tuned) | averaging (FeA) | score |" in result.stdout
  evaluated = run_experiment(*args, "--mode=eval")
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  trained, evaluated = ((tmp_path / "run" / name).read_text().splitlines()[2:]
                        for name in ("results.md", "results_validation.md"))
  assert trained == evaluated


def test_emotiw_without_its_download_says_what_to_get_and_to_try_synthcrowd(tmp_path, emonet_run):
  result = run_experiment(*_tiny("nvpf_emotiw", tmp_path / "run", tmp_path / "tfds", emonet_run))
  assert result.returncode == 2, result.stderr[-2000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith(f"error: emotiw_gaf: manual directory {tmp_path}/tfds/manual/emotiw_gaf "
                         "does not exist"), line
  assert "MANUAL_DOWNLOAD_INSTRUCTIONS" in line
  assert line.endswith("; or run this config on rendered data: --config.data.source=synthcrowd")
  assert not os.path.exists(tmp_path / "tfds")  # nothing written for data that is not there


@pytest.mark.slow
def test_emotiw_config_runs_on_synthcrowd(tmp_path, emonet_run, data_dir):
  result = run_experiment(*_tiny("nvpf_emotiw:tiny", tmp_path / "run", data_dir, emonet_run,
                       "--config.data.source=synthcrowd/groups_tiny"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| EmoNet | NVPF (FeC) | feature |" in result.stdout


def test_synthcrowd_is_a_shorthand_for_the_small_groups():
  config = nvpf_emotiw.get_config()
  config.data.source = "synthcrowd"
  assert sources.source(config) == "synthcrowd/groups_small"


def test_user_mistakes_are_one_line(tmp_path, groups):
  source = f"--config.data.source={groups}"
  cases = {
      ("--config=nvpf_synthcrowd:fed",):
          "error: unknown variant 'fed' of nvpf_synthcrowd; known: fea, feb, fec, e2e, tiny "
          "(combine with commas)",
      ("--config=nvpf_synthcrowd:tiny", source, f"--config.features.emonet_workdir={tmp_path}"):
          f"error: no trained EmoNet for the features ({tmp_path} holds no run (no "
          "config.json); train one with experiments.run); run `python -m experiments.run "
          "--config=emonet_synthcrowd` first or set --config.features.emonet_workdir",
      ("--config=nvpf_synthcrowd:tiny", source, "--config.features.mode=frozen"):
          "error: features.mode 'frozen' unknown; known: cached, end_to_end",
      ("--config=nvpf_synthcrowd:tiny", source, "--config.model.prior=flat"):
          f"error: --config.model.prior='flat': unknown; known: {', '.join(priors.known())}",
  }
  for i, (args, message) in enumerate(cases.items()):
    result = run_experiment(*args, f"--workdir={tmp_path}/run{i}")
    assert result.returncode == 2, (args, result.stderr[-2000:])
    assert result.stderr.strip().splitlines()[-1:] == [message], args
