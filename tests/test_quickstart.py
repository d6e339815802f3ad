"""The quickstart: every stage end to end on tiny data, skipped when run again; its config."""

import json
import os

import pytest
from assets.runner import run_experiment

from experiments import quickstart as quickstart_run
from experiments.configs import emonet_synthcrowd, nvpf_synthcrowd, quickstart, tnvpf_synthcrowd


def _keys(config, prefix=""):
  return {prefix + k for k in config.keys()} | {
      key for k, v in config.items() if hasattr(v, "keys") for key in _keys(v, f"{prefix}{k}.")}


def test_stages_take_their_standalone_configs_keys_and_share_seed_and_data_dir():
  c = quickstart.get_config()
  assert _keys(c.emonet) == _keys(emonet_synthcrowd.get_config())
  assert _keys(c.group) == _keys(nvpf_synthcrowd.get_config())
  assert _keys(c.video) == _keys(tnvpf_synthcrowd.get_config())
  c.seed = 7
  c.data.data_dir = "/elsewhere"
  for stage in (c.emonet, c.group, c.video):
    assert stage.seed == 7 and stage.data.data_dir == "/elsewhere"


def test_unknown_stage_name_is_one_line(tmp_path):
  result = run_experiment("--config=quickstart:tiny", f"--workdir={tmp_path / 'run'}",
                          f"--config.data.data_dir={tmp_path / 'tfds'}",
                          "--config.group_fusions=('fea', 'fed')")
  assert result.returncode == 2
  assert result.stderr.strip().startswith("error: group_fusions must name distinct ones of")
  assert len(result.stderr.strip().splitlines()) == 1
  assert not os.path.exists(tmp_path / "tfds")  # refused before rendering anything


def test_video_stages_hold_the_fec_stages_group_flow_of_their_own_size(tmp_path):
  c = quickstart.get_config()
  c.group.model.flow_units, c.group.model.flow_width = 3, 6
  stages = {name: stage for name, _, stage in quickstart_run._stage_configs(c, str(tmp_path))}
  for name in c.video_models:
    model = stages[name].model
    assert model.group_flow_from == str(tmp_path / "fec") and not model.train_group_flow
    assert (model.group_units, model.group_width) == (3, 6)
  c.video_on_fec = False
  stages = {name: stage for name, _, stage in quickstart_run._stage_configs(c, str(tmp_path))}
  assert stages["rnn"].model.group_flow_from == "" and stages["rnn"].model.train_group_flow


def test_video_on_fec_without_a_fec_stage_is_refused():
  c = quickstart.get_config()
  c.group_fusions = ("fea", "feb")
  with pytest.raises(ValueError, match="video_on_fec: the video stages start from the fec"):
    quickstart_run._stage_configs(c, "unused")


@pytest.mark.slow
def test_tiny_quickstart_prints_three_tables_labels_a_video_and_skips_finished_stages(tmp_path):
  workdir = tmp_path / "run"
  args = ("--config=quickstart:tiny", f"--workdir={workdir}",
          f"--config.data.data_dir={tmp_path / 'tfds'}")
  first = run_experiment(*args)
  assert first.returncode == 0, first.stderr[-3000:]
  out = first.stdout
  assert "| network | parameters | size (float32) | MACs per face | mAC | UAR | F1 |" in out
  for row in ("| EmoNet | averaging (FeA) | score |", "| EmoNet | concatenation (FeB) | feature |",
              "| EmoNet | NVPF (FeC) | feature |"):
    assert row in out, row
  for name in ("FeC + RNN", "FeC + LSTM", "TNVPF"):
    assert f"| {name} | video (last frame) |" in out, name
  assert "| frame accuracy | video label |" in out  # the held-out video, scored
  for path in ("plots/fig4_emonet.png", "plots/table5_fusions.png", "plots/fig5_confusion.png",
               "model/model.json", "predict/predictions.json", "predict/timeline.png",
               "predict/annotated.mp4", "results.md"):
    assert os.path.getsize(workdir / path) > 0, path
  predictions = json.loads((workdir / "predict" / "predictions.json").read_text())
  assert predictions["label"] in ("positive", "negative", "neutral")
  tables = lambda: (workdir / "results.md").read_text().split("| stage | seconds")[0].rstrip()
  first_tables = tables()

  again = run_experiment(*args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished earlier, skipped") == 8
  assert "| stage | seconds" not in again.stdout  # nothing ran
  assert tables() == first_tables
