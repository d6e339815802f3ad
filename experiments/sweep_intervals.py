"""A sweep's runs with intervals: each run's mAC and its paired gain over its reference run, and,
when seeds vary, the seed means with intervals over the shared evaluation examples.

A run's reference is found in the sweep itself: a run whose reference key has the
reference value (model.fusion=fea for groups, model.cell=rnn for videos;
experiments.comparison.REFERENCES) and that agrees with the run on every other
key it sets. So a grid over fusion x seed pairs each seed's FeC with that seed's
FeA, and a list of runs may hold one FeA per seed for many FeC variants. A run
with no such partner in the sweep keeps the difference to the reference its
own config named (eval.reference_workdir), if it found one.
"""

import functools
import os

import numpy as np

from emoflow import bootstrap
from experiments import comparison


def _value(run: dict[str, str], key: str, config) -> str:
  """The run's value of `key`: its override, else the base config's, as override text."""
  if key in run:
    return run[key]
  try:
    return str(functools.reduce(lambda node, k: node[k], key.split("."), config))
  except (KeyError, AttributeError):
    return ""


def reference_index(runs: list[dict[str, str]], i: int, config) -> int | None:
  """The index of run i's reference run in the sweep (module docstring), or None."""
  ref = comparison.REFERENCES.get(config.get("task", ""))
  if ref is None or _value(runs[i], ref.key, config) == ref.value:
    return None
  for j, run in enumerate(runs):
    if _value(run, ref.key, config) == ref.value and all(
        _value(runs[i], k, config) == v for k, v in run.items() if k != ref.key):
      return j
  return None


def _loaded(sweep_dir: str, names: list[str], runs: list[dict[str, str]], config) -> list:
  """Each run's saved predictions of its evaluation split, or None."""
  out = []
  for name, run in zip(names, runs):
    split = _value(run, "data.eval_split", config) or "validation"
    out.append(comparison.load(os.path.join(sweep_dir, name), split))
  return out


def run_rows(runs: list[dict[str, str]], names: list[str], sweep_dir: str, config,
             results: list[dict | None]) -> tuple[list[str], list[list[str]]]:
  """(header cells, one row of cells per run) with each readout's examples, mAC interval and
  paired difference to the run's reference."""
  saved = _loaded(sweep_dir, names, runs, config)
  prefixes = list(dict.fromkeys(p for s in saved if s for p in comparison.readouts(s)
                                if p != comparison.CEILING))
  ref = comparison.REFERENCES.get(config.get("task", ""))
  label = ref.label if ref else "reference"
  header = []
  for p in prefixes:
    header += [f"{p}examples", f"{p}mAC (95% CI)", f"{p}mAC - {label} (points, 95% CI)"]
  rows = []
  for i, own in enumerate(saved):
    if own is None:
      rows.append([""] * len(header))
      continue
    j = reference_index(runs, i, config)
    partner = saved[j] if j is not None and saved[j] is not None else None
    if partner is not None and not comparison.same_examples(own, partner):
      partner = None
    is_ref = ref is not None and _value(runs[i], ref.key, config) == ref.value
    row = []
    for p in prefixes:
      count, mac, delta = comparison.cells(own, p, partner or ({"is_self": True} if is_ref else None))
      if not delta and results[i] and f"{p}delta_mAC" in results[i]:
        r = results[i]
        delta = comparison.points(bootstrap.Interval(
            r[f"{p}delta_mAC"], r[f"{p}delta_mAC_low"], r[f"{p}delta_mAC_high"], 0)) + " (own)"
      row += [count, mac, delta]
    rows.append(row)
  return header, rows


def seed_mean_lines(runs: list[dict[str, str]], names: list[str], sweep_dir: str,
                    config) -> list[str]:
  """Markdown: per setting of the keys other than seed, the mean over its seeds of mAC and of
  the paired difference to each seed's reference, intervals over the shared examples."""
  if len({_value(r, "seed", config) for r in runs}) < 2:
    return []
  saved = _loaded(sweep_dir, names, runs, config)
  keys = [k for k in dict.fromkeys(k for r in runs for k in r) if k != "seed"
          and len({_value(r, k, config) for r in runs}) > 1]
  settings: dict[tuple, list[int]] = {}
  for i, run in enumerate(runs):
    settings.setdefault(tuple(_value(run, k, config) for k in keys), []).append(i)
  ref = comparison.REFERENCES.get(config.get("task", ""))
  label = ref.label if ref else "reference"
  lines = ["| " + " | ".join([*(k.rsplit(".", 1)[-1] for k in keys), "seeds", "examples",
                              "mean mAC (95% CI)", f"mean mAC - {label} (points, 95% CI)",
                              "per seed mAC"]) + " |",
           "|" + "---|" * (len(keys) + 5)]
  for setting, members in settings.items():
    done = [i for i in members if saved[i] is not None]
    if not done or not all(comparison.same_examples(saved[done[0]], saved[i]) for i in done):
      continue
    correct, total = comparison.readouts(saved[done[0]])[""]
    corrects = [comparison.readouts(saved[i])[""][0] for i in done]
    mean = bootstrap.mean_accuracy(corrects, total)
    pairs = []
    for i in done:
      j = reference_index(runs, i, config)
      if j is not None and saved[j] is not None and comparison.same_examples(saved[i], saved[j]):
        pairs.append((comparison.readouts(saved[i])[""][0], comparison.readouts(saved[j])[""][0]))
    delta = comparison.points(bootstrap.mean_difference(pairs, total)) \
        if pairs and len(pairs) == len(done) else ""
    per_seed = " / ".join(f"{np.sum(c) / np.sum(total):.2%}" for c in corrects)
    lines.append("| " + " | ".join([*setting, str(len(done)), f"{len(total):,}",
                                     comparison.percent(mean), delta, per_seed]) + " |")
  return lines if len(lines) > 2 else []
