"""experiments.comparison and experiments.sweep_intervals: saved per-example results, the
reference run found or refused, the interval cells, and a sweep's pairing by seed."""

import ml_collections
import numpy as np
import pytest

from emoflow import bootstrap
from experiments import comparison, sweep_intervals


def _results(seed: int, n: int = 400, name: str = "NVPF (FeC)", accuracy: float = 0.7) -> dict:
  rng = np.random.default_rng(seed)
  labels = np.random.default_rng(0).integers(0, 3, n)  # the same examples for every seed
  return {"mAC": accuracy, "row_name": name, "examples/label": labels,
          "examples/correct": rng.random(n) < accuracy}


def _video(seed: int, clips: int = 50) -> dict:
  rng = np.random.default_rng(seed)
  total = np.random.default_rng(0).integers(1, 12, clips)
  return {"examples/label": np.zeros(clips, int), "examples/correct": rng.random(clips) < 0.5,
          "examples/frame/correct": rng.binomial(total, 0.5), "examples/frame/total": total}


def test_saved_predictions_come_back_and_readouts_pair_correct_with_totals(tmp_path):
  results = _video(1)
  assert comparison.save(str(tmp_path), "validation", results, "TNVPF").endswith(
      "predictions_validation.npz")
  loaded = comparison.load(str(tmp_path), "validation")
  assert loaded["name"] == "TNVPF"
  assert comparison.same_examples(loaded, results)
  readouts = comparison.readouts(loaded)
  assert set(readouts) == {"", "frame/"}
  np.testing.assert_array_equal(readouts["frame/"][1], results["examples/frame/total"])
  np.testing.assert_array_equal(readouts[""][1], 1)
  assert comparison.load(str(tmp_path), "test") is None
  assert comparison.save(str(tmp_path), "validation", {"mAC": 0.5}, "x") is None


def test_reference_found_refused_or_self(tmp_path):
  fea, fec = _results(1, name="averaging (FeA)"), _results(2)
  comparison.save(str(tmp_path / "fea"), "validation", fea, fea["row_name"])
  ref = comparison.reference(str(tmp_path / "fec"), str(tmp_path / "fea"), "validation", fec)
  assert ref["name"] == "averaging (FeA)" and "missing" not in ref
  scalars = comparison.intervals(fec, ref)
  want = bootstrap.paired_difference(fec["examples/correct"], fea["examples/correct"])
  assert scalars["delta_mAC"] == pytest.approx(want.estimate)
  assert (scalars["delta_mAC_low"], scalars["delta_mAC_high"]) == (want.low, want.high)
  assert scalars["n_examples"] == 400
  other = _results(2, n=300)
  assert "evaluated on other" in comparison.reference(
      str(tmp_path / "fec"), str(tmp_path / "fea"), "validation", other)["missing"]
  assert "no predictions of the test split" in comparison.reference(
      str(tmp_path / "fec"), str(tmp_path / "fea"), "test", fec)["missing"]
  assert "missing" in comparison.reference(str(tmp_path / "fec"), "", "validation", fec)
  own = comparison.reference(str(tmp_path / "fea"), str(tmp_path / "fea"), "validation", fea)
  assert comparison.cells(fea, "", own)[2] == "reference"
  assert "delta_mAC" not in comparison.intervals(fec, {"missing": "x"})


def test_cells_print_counts_intervals_and_points():
  fec, fea = _results(2), _results(1)
  count, mac, delta = comparison.cells(fec, "", fea)
  acc = bootstrap.accuracy(fec["examples/correct"])
  assert count == "400"
  assert mac == f"{acc.estimate:.2%} ({acc.low:.2%}-{acc.high:.2%})".replace("%-", "-", 1)
  assert delta.startswith("+") or delta.startswith("-")
  assert " to " in delta
  frames = comparison.cells(_video(3), "frame/", None)
  assert frames[0].endswith(" in 50") and frames[2] == ""


def test_the_ceiling_row_of_the_reference_run_shows_its_headroom_over_that_run():
  fea = _results(1)
  fea["examples/ceiling/correct"] = np.random.default_rng(5).random(400) < 0.8
  delta = comparison.cells(fea, comparison.CEILING, fea)[2]
  expected = bootstrap.paired_difference(fea["examples/ceiling/correct"], fea["examples/correct"])
  assert delta == comparison.points(expected) and expected.estimate > 0
  assert comparison.cells(fea, "", fea)[2] == "reference"
  assert comparison.cells(fea, comparison.CEILING, {"is_self": True})[2] == ""


def _sweep(tmp_path, runs, make):
  names = [",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in run.items()) for run in runs]
  for name, run in zip(names, runs):
    results = make(run)
    comparison.save(str(tmp_path / name), "validation", results, results["row_name"])
  return names


def test_a_sweep_pairs_each_seed_with_its_own_reference_and_averages_seeds(tmp_path):
  config = ml_collections.ConfigDict({"task": "group", "seed": 0,
                                      "data": {"eval_split": "validation"},
                                      "model": {"fusion": "fec", "prior": "class_gaussian"}})
  runs = [{"model.fusion": "fea", "seed": "0"}, {"model.fusion": "fea", "seed": "1"},
          {"model.prior": "a", "seed": "0"}, {"model.prior": "a", "seed": "1"},
          {"model.prior": "b", "seed": "0"}, {"model.prior": "b", "seed": "1"}]
  made = {}

  def make(run):
    key = (run.get("model.fusion", "fec"), run.get("model.prior", ""), run["seed"])
    made[key] = _results(len(made) + 10, accuracy=0.6 if key[0] == "fea" else 0.7)
    return made[key]

  names = _sweep(tmp_path, runs, make)
  assert [sweep_intervals.reference_index(runs, i, config) for i in range(6)] == [
      None, None, 0, 1, 0, 1]
  header, rows = sweep_intervals.run_rows(runs, names, str(tmp_path), config, [None] * 6)
  assert header == ["examples", "mAC (95% CI)", "mAC - FeA (points, 95% CI)"]
  want = bootstrap.paired_difference(made[("fec", "a", "1")]["examples/correct"],
                                     made[("fea", "", "1")]["examples/correct"])
  assert rows[3][2] == comparison.points(want)
  assert rows[0][2] == "reference"
  lines = sweep_intervals.seed_mean_lines(runs, names, str(tmp_path), config)
  assert lines[0].startswith("| fusion | prior | seeds | examples | mean mAC (95% CI) |")
  row_a = next(line for line in lines if line.startswith("| fec | a |"))
  mean = bootstrap.mean_difference(
      [(made[("fec", "a", s)]["examples/correct"], made[("fea", "", s)]["examples/correct"])
       for s in "01"])
  assert f"| 2 | 400 |" in row_a and comparison.points(mean) in row_a


def test_group_size_table_scores_each_size_on_its_own_groups_against_the_same_reference_groups():
  from experiments import group  # noqa: PLC0415 - loads JAX, only this test needs it
  fec, fea = _results(2), _results(1)
  faces = np.random.default_rng(5).integers(1, 9, 400)
  fec["examples/faces"] = faces
  lines = group.size_table(fec, {"workdir": "fea", **fea})
  assert lines[0].startswith("| faces in the group | groups | mAC (95% CI) | mAC - FeA")
  for line, inside in zip(lines[2:], (faces == 1, (faces >= 2) & (faces <= 3), faces >= 4)):
    acc = bootstrap.accuracy(fec["examples/correct"][inside])
    delta = bootstrap.paired_difference(fec["examples/correct"][inside],
                                        fea["examples/correct"][inside])
    assert line == (f"| {line.split(' | ')[0][2:]} | {inside.sum()} | {comparison.percent(acc)} | "
                    f"{comparison.points(delta)} |")
  assert [line.split(" | ")[0] for line in lines[2:]] == ["| 1", "| 2-3", "| 4 or more"]
  self_lines = group.size_table(fec, {"is_self": True, **fec})
  assert all(line.endswith("| reference |") for line in self_lines[2:])
  assert group.size_table(fec, {"missing": "no reference"})[2].endswith("%) |  |")
  assert group.size_table(_results(2)) == []  # saved before face counts were kept
