"""experiments.sweep: the SPEC grammar, run names, up-front checks, device slots, and sweeps of
real tiny runs (failed, finished, resumed)."""

import csv
import json
import os
import subprocess
import sys

import pytest
from assets.runner import ROOT

from experiments import configs, sweep


def _sweep(*args, timeout: int = 900) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "experiments.sweep", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def test_a_grid_is_every_combination_in_order_with_shared_single_values():
  runs = sweep.parse_spec("model.prior=a,b; seed=0,1,2 ;num_steps=5")
  assert runs[:4] == [{"model.prior": "a", "seed": "0", "num_steps": "5"},
                      {"model.prior": "a", "seed": "1", "num_steps": "5"},
                      {"model.prior": "a", "seed": "2", "num_steps": "5"},
                      {"model.prior": "b", "seed": "0", "num_steps": "5"}]
  assert len(runs) == 6
  assert sweep.run_names(runs)[:2] == ["prior=a,seed=0", "prior=a,seed=1"]


def test_json_files_give_a_grid_or_a_list(tmp_path):
  (tmp_path / "grid.json").write_text(json.dumps({"optimizer.learning_rate": [0.001, 0.003],
                                                   "data.augment": [False]}))
  (tmp_path / "list.json").write_text(json.dumps([{"seed": 0}, {"seed": 1, "model.depth": 0.5},
                                                  {"video.curriculum": [[2, 60], [5, 120]]}]))
  assert sweep.parse_spec(f"@{tmp_path}/grid.json") == [
      {"optimizer.learning_rate": "0.001", "data.augment": "False"},
      {"optimizer.learning_rate": "0.003", "data.augment": "False"}]
  assert sweep.parse_spec(f"@{tmp_path}/list.json") == [
      {"seed": "0"}, {"seed": "1", "model.depth": "0.5"},
      {"video.curriculum": "((2, 60), (5, 120))"}]


@pytest.mark.parametrize("spec, message", [
    ("seed", "'seed' is not key=v1,v2,..."),
    ("seed=", "'seed=' is not key=v1,v2,..."),
    ("", "names no runs"),
    ("@/nonexistent.json", "No such file"),
])
def test_malformed_specs_are_one_line(spec, message):
  with pytest.raises(ValueError, match=message):
    sweep.parse_spec(spec)


def test_names_use_full_keys_only_where_last_parts_clash_and_repeats_are_refused():
  runs = [{"a.lr": "1", "b.lr": "2"}, {"a.lr": "3", "b.lr": "2"}, {"a.lr": "1", "b.lr": "4"}]
  assert sweep.run_names(runs) == ["a.lr=1,b.lr=2", "a.lr=3,b.lr=2", "a.lr=1,b.lr=4"]
  assert sweep.run_names([{"seed": "0"}]) == ["run"]
  assert sweep.run_names([{"data.data_dir": "/x/y"}, {"data.data_dir": "/z"}]) == [
      "data_dir=_x_y", "data_dir=_z"]
  with pytest.raises(ValueError, match="repeats a run: seed=1"):
    sweep.run_names([{"seed": "1"}, {"seed": "2"}, {"seed": "1"}])


def test_overrides_are_checked_against_the_config_before_anything_runs():
  config = configs.load(*configs.resolve("nvpf_synthcrowd:fec")[:2])
  sweep.check_overrides(config, [{"model.prior": "student_t", "seed": "3",
                                  "optimizer.learning_rate": "1e-3"}])
  with pytest.raises(ValueError, match="^--sweep: model.prio: no key 'prio' in model; it has: "):
    sweep.check_overrides(config, [{"model.prio": "student_t"}])
  with pytest.raises(ValueError, match="^--sweep: seed=abc: "):
    sweep.check_overrides(config, [{"seed": "abc"}])


def test_gpus_are_handed_out_in_groups_and_cpu_runs_in_parallel_slots(monkeypatch):
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4")
  assert sweep.local_gpus("auto") == ["0", "1", "2", "3", "4"]
  assert sweep.local_gpus("none") == []
  assert sweep.local_gpus("3, 5") == ["3", "5"]
  slots = sweep.device_slots(sweep.local_gpus("auto"), devices_per_run=2, parallel=1)
  assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3"]
  assert sweep.device_slots([], devices_per_run=1, parallel=3) == [{"label": "CPU"}] * 3
  with pytest.raises(ValueError, match="--devices_per_run 4 but only 2 GPUs"):
    sweep.device_slots(["0", "1"], devices_per_run=4, parallel=1)


def test_a_host_runs_its_shard_and_the_summary_covers_every_run(tmp_path, capsys):
  runs = sweep.parse_spec("seed=0,1,2,3")
  for name in ("seed=1", "seed=3"):  # host 1 of 2 owns runs 1 and 3; both finished before
    (tmp_path / name).mkdir()
    (tmp_path / name / "results.json").write_text(json.dumps({"mAC": 0.5, "UAR": 0.25}))
  summary = sweep.run_sweep("emonet_synthcrowd:tiny", runs, str(tmp_path), [{"label": "CPU"}],
                            host_shard=(1, 2))
  assert "2 done before, 0 to run (host 1 of 2)" in capsys.readouterr().out
  assert [row["status"] for row in summary.values()] == ["pending", "done", "pending", "done"]
  text = sweep.write_summary(runs, summary, str(tmp_path), metrics=[])
  assert "| seed=1 | 1 | done | 0.5 | 0.25 |  |" in text and "| seed=0 | 0 | pending |" in text
  with pytest.raises(ValueError, match="--host_shard '2/2' is not I/N"):
    sweep.parse_host_shard("2/2")


def test_scoring_on_another_split_reads_its_own_results_and_needs_trained_runs(tmp_path, capsys):
  runs = sweep.parse_spec("seed=0,1")
  for name, mac in (("seed=0", 0.5), ("seed=1", 0.75)):
    (tmp_path / name).mkdir()
    (tmp_path / name / "results.json").write_text(json.dumps({"mAC": 0.1}))
    (tmp_path / name / "results_test.json").write_text(json.dumps({"mAC": mac}))
  summary = sweep.run_sweep("emonet_synthcrowd:tiny", runs, str(tmp_path), [{"label": "CPU"}],
                            eval_split="test")
  assert "2 done before, 0 to run" in capsys.readouterr().out
  text = sweep.write_summary(runs, summary, str(tmp_path), metrics=["mAC"], eval_split="test")
  assert "| seed=0 | 0 | done | 0.5 |" in text and "| seed=1 | 1 | done | 0.75 |" in text
  assert (tmp_path / "results_test.md").read_text() == text
  assert not (tmp_path / "results.md").exists()
  (tmp_path / "seed=1" / "results_test.json").unlink()
  (tmp_path / "seed=1" / "results.json").unlink()
  with pytest.raises(ValueError, match="run seed=1 of .* has not finished training"):
    sweep.run_sweep("emonet_synthcrowd:tiny", runs, str(tmp_path), [{"label": "CPU"}],
                    eval_split="test")


def test_a_bad_key_ends_the_command_in_one_line_before_any_run(tmp_path):
  result = _sweep("--config=emonet_synthcrowd:tiny", "--sweep=optimizer.lr=1,2",
                  f"--sweep_dir={tmp_path}/sweep")
  assert (result.returncode, result.stderr.count("\n")) == (2, 1)
  assert result.stderr.startswith("error: --sweep: optimizer.lr: no key 'lr' in optimizer; it has: ")
  assert not os.path.exists(tmp_path / "sweep")


@pytest.mark.slow
def test_a_failed_run_is_reported_with_its_error_and_exit_code_1(tmp_path):
  result = _sweep("--config=emonet_synthcrowd:tiny", "--sweep=data.config=nope,nada",
                  f"--sweep_dir={tmp_path}/sweep", timeout=300)
  assert result.returncode == 1, result.stderr[-2000:]
  assert "config=nope: failed in" in result.stdout
  assert "error: " in result.stdout.split("config=nope: failed in", 1)[1].splitlines()[0]
  assert "| config=nada | nada | failed |" in result.stdout
  assert os.path.exists(tmp_path / "sweep" / "config=nope" / "sweep.log")


@pytest.mark.slow
def test_a_sweep_of_four_tiny_runs_summarises_and_resumes(tmp_path, synthcrowd_dir):
  spec = ("optimizer.learning_rate=1e-3,3e-3;seed=0,1;num_steps=2;eval.every=2;"
          f"data.data_dir={synthcrowd_dir}")
  args = ["--config=emonet_synthcrowd:tiny", f"--sweep={spec}", f"--sweep_dir={tmp_path}/sweep",
          "--parallel=2"]
  first = _sweep(*args)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
  assert "0 done before, 4 to run" in first.stdout
  header = "| run | optimizer.learning_rate | seed | status | mAC | UAR | F1 | seconds |"
  assert header in first.stdout
  names = ["learning_rate=1e-3,seed=0", "learning_rate=1e-3,seed=1", "learning_rate=3e-3,seed=0",
           "learning_rate=3e-3,seed=1"]
  with open(tmp_path / "sweep" / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["run"] for r in rows] == names
  for row in rows:
    with open(tmp_path / "sweep" / row["run"] / "results.json") as f:
      assert float(row["mAC"]) == pytest.approx(json.load(f)["mAC"], rel=1e-5)
    with open(tmp_path / "sweep" / row["run"] / "config.json") as f:
      saved = json.load(f)
    assert (saved["optimizer"]["learning_rate"], saved["seed"], saved["num_steps"]) == (
        float(row["optimizer.learning_rate"]), int(row["seed"]), 2)
    assert row["status"] == "done" and float(row["seconds"]) > 0

  again = _sweep(*args)
  assert again.returncode == 0
  assert "4 done before, 0 to run" in again.stdout and "started" not in again.stdout
  table = lambda out: [line.rsplit("|", 2)[0] for line in out.splitlines() if line.startswith("| ")]
  assert table(again.stdout) == table(first.stdout)  # the same rows, but for this time's seconds
