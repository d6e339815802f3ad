"""How sure a results table is: each row's accuracy with its interval, and its paired gain.

A group or video evaluation returns, beside its metrics, what it got right on
each example, under keys "examples/...":
- "examples/label" [n]: the true class, to check that two runs saw the same examples;
- "examples/<readout>correct" [n] and, for clustered readouts, "examples/<readout>total" [n]:
  per example, the items right and the items scored. Readout "" is the main one
  (a group; a video by its last frame), "mean/" a video by the mean of its frames,
  "frame/" a video's frames (clustered by video, so that the bootstrap resamples
  videos, not frames, which are not independent), "ceiling/" the majority valence of a
  group's true face emotions (emoflow.tasks.group.true_emotion_majority).
experiments.run saves them as WORKDIR/predictions_SPLIT.npz (with the row's
name); a table then prints each row's mAC with its 95% bootstrap interval and
its paired difference to the reference row (FeA for groups, FeC + RNN for
videos), resampling the same examples for both (emoflow.bootstrap).
"""

import os
from typing import NamedTuple

import numpy as np

from emoflow import bootstrap
from emoflow.fileio import atomic_open

PREFIX = "examples/"
LABEL = PREFIX + "label"
CEILING = "ceiling/"  # a group table's row of what the true face emotions allow (no model's)


class Reference(NamedTuple):
  """The row a level's differences are taken to: its config key, value and table label."""
  key: str
  value: str
  label: str


REFERENCES = {"group": Reference("model.fusion", "fea", "FeA"),
              "video": Reference("model.cell", "rnn", "FeC + RNN")}


def predictions_path(workdir: str, split: str) -> str:
  return os.path.join(workdir, f"predictions_{split}.npz")


def examples(results: dict) -> dict[str, np.ndarray]:
  """The per-example arrays of an evaluation's results, keys without the prefix."""
  return {k[len(PREFIX):]: np.asarray(v) for k, v in results.items() if k.startswith(PREFIX)}


def readouts(results: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{readout prefix: (correct [n], total [n])} of an evaluation's results (or of saved examples
  with the "examples/" prefix restored)."""
  arrays = examples(results)
  out = {}
  for key, correct in arrays.items():
    if key.endswith("correct"):
      prefix = key[:-len("correct")]
      total = arrays.get(prefix + "total", np.ones_like(correct))
      out[prefix] = (correct.astype(np.float64), np.asarray(total, np.float64))
  return out


def save(workdir: str, split: str, results: dict, name: str) -> str | None:
  """Writes the results' per-example arrays and the row's name to predictions_SPLIT.npz; the
  path, or None when the results have none."""
  arrays = {PREFIX + k: v for k, v in examples(results).items()}
  if not arrays:
    return None
  path = predictions_path(workdir, split)
  with atomic_open(path, "wb") as f:
    np.savez(f, name=np.asarray(name), **arrays)
  return path


def load(workdir: str, split: str) -> dict | None:
  """The saved results of a run ("name" and the "examples/..." arrays), or None if it has none."""
  path = predictions_path(workdir, split)
  if not os.path.exists(path):
    return None
  with np.load(path) as data:
    saved = {k: data[k] for k in data.files}
  saved["name"] = str(saved["name"])
  return saved


def same_examples(a: dict, b: dict) -> bool:
  """Whether two evaluations scored the same examples in the same order (same labels, same
  items per example)."""
  if a[LABEL].shape != b[LABEL].shape or not np.array_equal(a[LABEL], b[LABEL]):
    return False
  return all(np.array_equal(total, readouts(b)[p][1]) for p, (_, total) in readouts(a).items()
             if p in readouts(b))


def reference(workdir: str, reference_workdir: str, split: str, results: dict) -> dict:
  """The reference run for a table's differences: {"workdir", "name", "examples"...} when its
  saved predictions of `split` cover the same examples as `results`, else {"missing": why}."""
  if not reference_workdir:
    return {"missing": "no reference run configured (eval.reference_workdir)"}
  if os.path.abspath(reference_workdir) == os.path.abspath(workdir):
    return {"workdir": reference_workdir, "name": results.get("row_name", ""), "is_self": True,
            **{k: v for k, v in results.items() if k.startswith(PREFIX)}}
  saved = load(reference_workdir, split)
  if saved is None:
    return {"missing": f"no predictions of the {split} split in {reference_workdir} (train or "
                       "evaluate the reference run there first)"}
  if not same_examples(saved, results):
    return {"missing": f"{reference_workdir} was evaluated on other {split} examples "
                       f"({len(saved[LABEL])} against {len(results[LABEL])})"}
  return {"workdir": reference_workdir, **saved}


def intervals(results: dict, ref: dict | None = None) -> dict[str, float]:
  """Scalars for results.json: per readout, n, mAC's interval and, with a usable reference,
  the paired difference to it ("delta_mAC", "delta_mAC_low", "delta_mAC_high")."""
  out = {}
  ref_readouts = readouts(ref) if ref and "missing" not in ref else {}
  for prefix, (correct, total) in readouts(results).items():
    acc = bootstrap.accuracy(correct, total)
    out.update({f"{prefix}n_examples": acc.n, f"{prefix}n_items": float(total.sum()),
                f"{prefix}mAC_low": acc.low, f"{prefix}mAC_high": acc.high})
    if prefix in ref_readouts:
      delta = bootstrap.paired_difference(correct, ref_readouts[prefix][0], total)
      out.update({f"{prefix}delta_mAC": delta.estimate, f"{prefix}delta_mAC_low": delta.low,
                  f"{prefix}delta_mAC_high": delta.high})
  return out


def percent(interval: bootstrap.Interval) -> str:
  """'71.23% (70.01-72.45)'."""
  return f"{interval.estimate:.2%} ({interval.low:.2%}-{interval.high:.2%})".replace("%-", "-", 1)


def points(interval: bootstrap.Interval) -> str:
  """A difference in points: '+2.31 (+1.02 to +3.60)'."""
  return (f"{interval.estimate * 100:+.2f} ({interval.low * 100:+.2f} to "
          f"{interval.high * 100:+.2f})")


def cells(results: dict, prefix: str, ref: dict | None) -> tuple[str, str, str]:
  """(examples, mAC with interval, difference to the reference with interval) of one row."""
  found = readouts(results)
  if prefix not in found:
    return "", f"{results[prefix + 'mAC']:.2%}", ""
  correct, total = found[prefix]
  count = f"{len(total):,}" if np.all(total == 1) else f"{int(total.sum()):,} in {len(total):,}"
  ref_found = readouts(ref) if ref and "missing" not in ref else {}
  ref_prefix = "" if prefix == CEILING else prefix  # the ceiling's headroom over the reference
  if prefix != CEILING and (ref is results or (ref and ref.get("is_self"))):
    delta = "reference"
  elif ref_prefix in ref_found:
    delta = points(bootstrap.paired_difference(correct, ref_found[ref_prefix][0], total))
  else:
    delta = ""
  return count, percent(bootstrap.accuracy(correct, total)), delta


def footnote(unit: str, ref: dict | None, ref_label: str) -> str:
  """What the interval columns mean, and why a difference column is empty."""
  text = (f"Intervals: 95%, percentile bootstrap over the {unit} ({bootstrap.NUM_RESAMPLES:,} "
          f"resamples); \"{ref_label}\" is paired: both rows scored on the same resampled {unit}.")
  if ref and "missing" in ref:
    text += f" No difference column: {ref['missing']}."
  return text
