"""Run a grid (or list) of config overrides, one experiments.run per point, over the local devices.

  python -m experiments.sweep --config=NAME[:arg] --sweep=SPEC [--sweep_dir=DIR]
      [--devices_per_run=1] [--gpus=auto] [--parallel=1] [--host_shard=I/N] [--metrics=a,b]
      [--eval_split=SPLIT]

SPEC is a grid, `key=v1,v2;key2=v3,v4` (every combination; a key with one
value is an override shared by all runs), or `@FILE.json` holding a grid
({"key": [values]}) or a list of runs ([{"key": value}, ...]). Keys are the
config's dotted keys, as in --config.key=value.

Each run is `python -m experiments.run --config=NAME --workdir=DIR/RUN
--config.key=value ...`, named by the values that vary (e.g.
`prior=student_t,seed=1`), its output in DIR/RUN/sweep.log. With GPUs, each
run sees its own `--devices_per_run` of them (CUDA_VISIBLE_DEVICES) and as
many run at once as there are such groups; on CPU, `--parallel` runs at once.
When several run at once, the first run goes alone, so that it builds the
datasets and feature caches the others then share. A sweep is resumable:
runs with results.json are done and skipped, unfinished ones resume from
their checkpoints. `--host_shard=I/N` runs every N-th run from the I-th, for
one sweep spread over N hosts sharing DIR.

At the end, DIR/results.csv holds one row per run: its values, its status
and every final metric of its results.json; DIR/results.md (also printed)
shows the values that vary and the paper's mAC, UAR, F1 (or --metrics). The
exit code is 1 if a run failed, 2 for a mistake in the command (then nothing
is started).

`--eval_split=test` scores the trained runs of the same command on another
split instead of training (`experiments.run --mode=eval` in each run
directory, skipping runs that have results_SPLIT.json) and writes
DIR/results_SPLIT.md and .csv alike, paired differences included: the split
looked at once, after the choices were made on the validation split.
"""

import ast
import csv
import functools
import itertools
import json
import os
import subprocess
import sys
import time

from absl import flags

from emoflow.fileio import atomic_open
from experiments import command, configs, sweep_intervals

FLAGS = flags.FLAGS
FIRST_METRICS = ("mAC", "UAR", "F1")  # the paper's three, first in the table when present


def _define_flags() -> None:
  """Only when run as the command, so importing the functions below defines no flags."""
  flags.DEFINE_string("config", None, "experiment config: NAME[:arg] or PATH[:arg]")
  flags.DEFINE_string("sweep", None, "key=v1,v2;key2=v3 (a grid) or @FILE.json")
  flags.DEFINE_string("sweep_dir", None, "where the runs go (default runs/sweeps/NAME)")
  flags.DEFINE_integer("devices_per_run", 1, "GPUs each run sees", lower_bound=1)
  flags.DEFINE_string("gpus", "auto", "GPU indices to use (0,1,...), 'auto' or 'none'")
  flags.DEFINE_integer("parallel", 1, "runs at once without GPUs", lower_bound=1)
  flags.DEFINE_string("host_shard", "0/1", "I/N: this host runs runs I, I+N, I+2N, ...")
  flags.DEFINE_list("metrics", [], "results.json keys in results.md, or 'all' (default: mAC, "
                    "UAR, F1 when the runs have them)")
  flags.DEFINE_string("eval_split", "", "score the trained runs on this split (--mode=eval) "
                      "instead of training; summary in results_SPLIT.md")
  flags.DEFINE_bool("debug", False, "show tracebacks for user errors")


def parse_spec(spec: str) -> list[dict[str, str]]:
  """The runs of SPEC, each {key: value as a --config override string}, in grid order."""
  if spec.startswith("@"):
    try:
      with open(spec[1:]) as f:
        loaded = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"--sweep {spec}: {e}") from None
    if isinstance(loaded, list) and all(isinstance(run, dict) for run in loaded):
      return [{k: _override_text(v) for k, v in run.items()} for run in loaded]
    if isinstance(loaded, dict) and all(isinstance(v, list) for v in loaded.values()):
      axes = {k: [_override_text(v) for v in values] for k, values in loaded.items()}
    else:
      raise ValueError(f"--sweep {spec}: expected a list of {{key: value}} or a {{key: [values]}}")
  else:
    axes = {}
    for axis in filter(None, (a.strip() for a in spec.split(";"))):
      key, sep, values = axis.partition("=")
      if not sep or not key.strip() or not values.strip():
        raise ValueError(f"--sweep: {axis!r} is not key=v1,v2,...")
      axes[key.strip()] = [v.strip() for v in values.split(",")]
  if not axes or any(not values for values in axes.values()):
    raise ValueError("--sweep names no runs")
  return [dict(zip(axes, point)) for point in itertools.product(*axes.values())]


def _override_text(value) -> str:
  """A JSON value as --config.key= text (ml_collections parses True, 0.001, (1, 2))."""
  as_tuple = lambda v: tuple(map(as_tuple, v)) if isinstance(v, list) else v
  return value if isinstance(value, str) else repr(as_tuple(value))


def run_names(runs: list[dict[str, str]]) -> list[str]:
  """Directory names from the values that differ between runs, e.g. `prior=student_t,seed=1`."""
  varying = [k for k in dict.fromkeys(k for run in runs for k in run)
             if len({run.get(k) for run in runs}) > 1]
  last = [k.rsplit(".", 1)[-1] for k in varying]
  short = {k: s if last.count(s) == 1 else k for k, s in zip(varying, last)}
  names = [",".join(f"{short[k]}={run[k]}" for k in varying if k in run) or "run"
           for run in runs]
  names = [name.replace(os.sep, "_").replace(" ", "") for name in names]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f"--sweep repeats a run: {repeated[0]}")
  return names


def check_overrides(config, runs: list[dict[str, str]]) -> None:
  """One-line error for an override whose key the config lacks or whose value has the wrong type."""
  for key, value in {(k, v) for run in runs for k, v in run.items()}:
    configs.check_override_key(config, key, flag="--sweep: ")
    current = functools.reduce(lambda node, k: node[k], key.split("."), config)
    try:
      parsed = value if isinstance(current, str) else ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed = value  # a bare word is a string, as for --config.key=word
    try:
      config.copy_and_resolve_references().update_from_flattened_dict({key: parsed})
    except (TypeError, ValueError) as e:
      raise ValueError(f"--sweep: {key}={value}: {e}") from None


def local_gpus(spec: str) -> list[str]:
  """GPU indices to hand out: as given, CUDA_VISIBLE_DEVICES, or nvidia-smi's list (never JAX's,
  which would take the GPUs' memory in this process)."""
  if spec == "none":
    return []
  if spec != "auto":
    return [g.strip() for g in spec.split(",") if g.strip()]
  if "CUDA_VISIBLE_DEVICES" in os.environ:
    return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() not in ("", "-1")]
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return out.split()


def device_slots(gpus: list[str], devices_per_run: int, parallel: int) -> list[dict]:
  """One environment per run that may go at once: a GPU group each, or `parallel` CPU slots."""
  if not gpus:
    return [{"label": "CPU"} for _ in range(parallel)]
  if devices_per_run > len(gpus):
    raise ValueError(f"--devices_per_run {devices_per_run} but only {len(gpus)} GPUs "
                     f"({','.join(gpus)})")
  groups = [gpus[i:i + devices_per_run] for i in range(0, len(gpus) - devices_per_run + 1,
                                                          devices_per_run)]
  return [{"label": f"GPU {','.join(g)}", "CUDA_VISIBLE_DEVICES": ",".join(g)} for g in groups]


def parse_host_shard(text: str) -> tuple[int, int]:
  index, sep, count = text.partition("/")
  if not (sep and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
    raise ValueError(f"--host_shard {text!r} is not I/N with 0 <= I < N")
  return int(index), int(count)


def results_name(eval_split: str = "") -> str:
  """What experiments.run calls a run's results: results (training), results_SPLIT (--mode=eval)."""
  return f"results_{eval_split}" if eval_split else "results"


def read_results(workdir: str, eval_split: str = "") -> dict | None:
  """A finished run's results.json (or results_SPLIT.json; written last by experiments.run),
  else None."""
  try:
    with open(os.path.join(workdir, results_name(eval_split) + ".json")) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _last_error(log_path: str) -> str:
  with open(log_path, errors="replace") as f:
    lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("error:")]
  return (errors or lines or ["no output"])[-1]


class Scheduler:
  """Starts runs in free device slots and reports each as it starts and ends."""

  def __init__(self, config_spec: str, sweep_dir: str, slots: list[dict], total: int,
               eval_split: str = ""):
    self.config_spec, self.sweep_dir, self.total = config_spec, sweep_dir, total
    self.eval_split = eval_split
    self.free = list(slots)
    self.running: dict = {}  # Popen -> (name, slot, start time, log file)
    self.outcome: dict[str, dict] = {}

  def start(self, index: int, name: str, overrides: dict[str, str]) -> None:
    slot = self.free.pop(0)
    workdir = os.path.join(self.sweep_dir, name)
    os.makedirs(workdir, exist_ok=True)
    log_name = f"sweep_{self.eval_split}.log" if self.eval_split else "sweep.log"
    log = open(os.path.join(workdir, log_name), "w")  # noqa: SIM115 - closed when it ends
    env = {**os.environ, **{k: v for k, v in slot.items() if k != "label"}}
    mode = ["--mode=eval", f"--config.data.eval_split={self.eval_split}"] if self.eval_split \
        else []
    argv = [sys.executable, "-m", "experiments.run", f"--config={self.config_spec}",
            f"--workdir={workdir}", *mode, *(f"--config.{k}={v}" for k, v in overrides.items())]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    self.running[proc] = (name, slot, time.perf_counter(), log)
    print(f"[{index}/{self.total}] {name}: started on {slot['label']}", flush=True)

  def wait_one(self) -> None:
    """Blocks until a run ends; records its outcome and frees its slot."""
    while True:
      for proc, (name, slot, start, log) in list(self.running.items()):
        if proc.poll() is None:
          continue
        del self.running[proc]
        log.close()
        self.free.append(slot)
        seconds = time.perf_counter() - start
        if proc.returncode == 0:
          status, detail = "done", ""
        else:
          status, detail = "failed", f": {_last_error(log.name)} (log: {log.name})"
        self.outcome[name] = {"status": status, "seconds": seconds}
        print(f"{name}: {status} in {seconds:.0f} s{detail}", flush=True)
        return
      time.sleep(0.2)

  def stop(self) -> None:
    """Ends runs still going (an interrupted sweep); they resume when it is started again."""
    for proc, (_, _, _, log) in self.running.items():
      proc.terminate()
      proc.wait()
      log.close()


def run_sweep(config_spec: str, runs: list[dict[str, str]], sweep_dir: str, slots: list[dict],
              host_shard: tuple[int, int] = (0, 1), eval_split: str = "") -> dict[str, dict]:
  """Runs (or, with `eval_split`, scores) what is not done yet; {name: {"status", "seconds"?,
  "results"?}} of every run."""
  names = run_names(runs)
  shard_index, shard_count = host_shard
  mine = [i for i in range(len(runs)) if i % shard_count == shard_index]
  todo = [i for i in mine if read_results(os.path.join(sweep_dir, names[i]), eval_split) is None]
  untrained = [names[i] for i in todo if eval_split and read_results(
      os.path.join(sweep_dir, names[i])) is None]
  if untrained:
    raise ValueError(f"--eval_split: run {untrained[0]} of {sweep_dir} has not finished training "
                     f"({len(untrained)} such); run the sweep without --eval_split first")
  print(f"sweep of {len(runs)} runs in {sweep_dir}: {len(mine) - len(todo)} done before, "
        f"{len(todo)} to run" + (f" (host {shard_index} of {shard_count})" if shard_count > 1
                                 else ""), flush=True)
  scheduler = Scheduler(config_spec, sweep_dir, slots, len(runs), eval_split)
  try:
    for position, i in enumerate(todo):
      if not scheduler.free or (position == 1 and scheduler.running):
        scheduler.wait_one()  # the first run goes alone: it builds what the others share
      scheduler.start(i + 1, names[i], runs[i])
    while scheduler.running:
      scheduler.wait_one()
  finally:
    scheduler.stop()
  summary = {}
  for name in names:
    results = read_results(os.path.join(sweep_dir, name), eval_split)
    row = dict(scheduler.outcome.get(name, {"status": "pending"}))
    if results is not None:
      row.update(status="done", results=results)
    summary[name] = row
  return summary


def summary_table(runs: list[dict[str, str]], summary: dict[str, dict], keys: list[str],
                  metrics: list[str]) -> list[list[str]]:
  """Header and one row per run: its values of `keys`, status, `metrics`, seconds this time."""
  rows = [["run", *keys, "status", *metrics, "seconds"]]
  for run, (name, row) in zip(runs, summary.items()):
    results = row.get("results", {})
    values = [f"{results[m]:.6g}" if m in results else "" for m in metrics]
    seconds = f"{row['seconds']:.0f}" if "seconds" in row else ""
    rows.append([name, *(run.get(k, "") for k in keys), row["status"], *values, seconds])
  return rows


def write_summary(runs: list[dict[str, str]], summary: dict[str, dict], sweep_dir: str,
                  metrics: list[str], config=None, eval_split: str = "") -> str:
  """DIR/results.csv (every key and metric) and DIR/results.md (returned: the keys that vary,
  `metrics` or else the paper's three; for group and video runs of `config`, each run's mAC
  interval and paired difference to its reference run, and the means over seeds), each
  written whole; results_SPLIT.* for the runs scored on `eval_split`."""
  if eval_split:
    runs = [{**run, "data.eval_split": eval_split} for run in runs]  # whose predictions to read
  name = results_name(eval_split)
  keys = list(dict.fromkeys(k for run in runs for k in run))
  found = list(dict.fromkeys(k for row in summary.values() for k in row.get("results", {})))
  with atomic_open(os.path.join(sweep_dir, name + ".csv"), "w") as f:
    csv.writer(f).writerows(summary_table(runs, summary, keys, sorted(found)))
  shared = {k: runs[0][k] for k in keys if all(run.get(k) == runs[0].get(k) for run in runs)}
  if metrics == ["all"]:
    metrics = sorted(found)
  rows = summary_table(runs, summary, [k for k in keys if k not in shared],
                       metrics or [m for m in FIRST_METRICS if m in found] or sorted(found))
  if config is not None:
    header, extra = sweep_intervals.run_rows(runs, list(summary), sweep_dir, config,
                                             [row.get("results") for row in summary.values()])
    if header:
      rows = [rows[0] + header] + [row + cells for row, cells in zip(rows[1:], extra)]
  lines = [f"shared: {', '.join(f'{k}={v}' for k, v in shared.items())}", ""] if shared else []
  lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
  lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
  means = sweep_intervals.seed_mean_lines(runs, list(summary), sweep_dir, config) \
      if config is not None else []
  if means:
    lines += ["", "Means over seeds (intervals: the seeds' models scored on the same "
              "resampled examples):", "", *means]
  text = "\n".join(lines) + "\n"
  with atomic_open(os.path.join(sweep_dir, name + ".md")) as f:
    f.write(text)
  return text


def main() -> None:
  for name in ("config", "sweep"):
    if not FLAGS[name].value:
      raise ValueError(f"--{name} is required")
  path, arg, run_name = configs.resolve(FLAGS.config)
  runs = parse_spec(FLAGS.sweep)
  check_overrides(configs.load(path, arg), runs)
  run_names(runs)
  slots = device_slots(local_gpus(FLAGS.gpus), FLAGS.devices_per_run, FLAGS.parallel)
  host_shard = parse_host_shard(FLAGS.host_shard)
  sweep_dir = FLAGS.sweep_dir or os.path.join("runs", "sweeps", run_name)
  try:
    summary = run_sweep(FLAGS.config, runs, sweep_dir, slots, host_shard, FLAGS.eval_split)
  except KeyboardInterrupt:
    print(f"interrupted; the same command resumes the sweep in {sweep_dir}", file=sys.stderr)
    sys.exit(130)
  text = write_summary(runs, summary, sweep_dir, FLAGS.metrics, configs.load(path, arg),
                       FLAGS.eval_split)
  split = f" ({FLAGS.eval_split} split)" if FLAGS.eval_split else ""
  print(f"\n## sweep of {run_name}{split}\n\n{text}\nsweep_dir: {sweep_dir}")
  if any(row["status"] == "failed" for row in summary.values()):
    sys.exit(1)


if __name__ == "__main__":
  _define_flags()
  command.run(main)
