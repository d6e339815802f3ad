"""Paired bootstrap intervals of accuracy, and of the accuracy difference of two models.

A results table compares models evaluated on the same examples, so the
interval that matters is the one of the difference, resampled in pairs: each
bootstrap draw takes n examples with replacement and scores both models on
that same draw (Efron and Tibshirani 1993, ch. 13; the percentile interval).
The difference of two models that agree on most examples is then far better
known than either accuracy alone.

Examples may be clusters: example i holds `total[i]` items of which model a
got `correct_a[i]` right (a video's frames). Resampling whole clusters keeps
the items of one video together, which a frame-level bootstrap would wrongly
treat as independent. Plain examples have total 1 and correct 0 or 1.

Draws come from a fixed seed, so a table is reproducible to the digit.
"""

import dataclasses

import numpy as np

NUM_RESAMPLES = 2000
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
  """An estimate with its bootstrap interval [low, high] at `level`, over `n` examples."""
  estimate: float
  low: float
  high: float
  n: int
  level: float = LEVEL

  @property
  def half_width(self) -> float:
    return (self.high - self.low) / 2


def _resampled_ratio(value: np.ndarray, total: np.ndarray, num_resamples: int,
                     seed: int) -> np.ndarray:
  """[num_resamples] ratios sum(value) / sum(total) over draws of len(total) examples with
  replacement (value and total drawn together: the pairing)."""
  n = len(total)
  rng = np.random.default_rng(seed)
  out = np.empty(num_resamples)
  chunk = max(1, 2_000_000 // n)  # bounded memory: chunk x n indices at a time
  for start in range(0, num_resamples, chunk):
    stop = min(start + chunk, num_resamples)
    idx = rng.integers(0, n, size=(stop - start, n))
    out[start:stop] = value[idx].sum(1) / np.maximum(total[idx].sum(1), 1e-12)
  return out


def _checked(correct, total, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  correct = np.asarray(correct, np.float64).ravel()
  total = np.ones_like(correct) if total is None else np.asarray(total, np.float64).ravel()
  if correct.shape != total.shape or (n is not None and len(correct) != n):
    raise ValueError(f"per-example arrays differ in length: {correct.shape}, {total.shape}"
                     + (f", expected {n}" if n is not None else ""))
  if not len(correct):
    raise ValueError("no examples to bootstrap")
  if np.any(correct < 0) or np.any(correct > total):
    raise ValueError("correct counts must lie in [0, total] per example")
  return correct, total


def _interval(estimate: float, draws: np.ndarray, n: int, level: float) -> Interval:
  tail = (1 - level) / 2 * 100
  low, high = np.percentile(draws, [tail, 100 - tail])
  return Interval(float(estimate), float(low), float(high), n, level)


def mean_accuracy(corrects: list, total=None, *, num_resamples: int = NUM_RESAMPLES,
                  level: float = LEVEL, seed: int = 0) -> Interval:
  """The mean accuracy of one or more models (say, seeds) on the same examples, resampled
  jointly: sum(correct) / sum(total), averaged over the models."""
  if not len(corrects):
    raise ValueError("no models to average")
  total = _checked(corrects[0], total)[1]
  value = np.mean([_checked(c, total, len(total))[0] for c in corrects], 0)
  draws = _resampled_ratio(value, total, num_resamples, seed)
  return _interval(value.sum() / total.sum(), draws, len(total), level)


def mean_difference(pairs: list, total=None, *, num_resamples: int = NUM_RESAMPLES,
                    level: float = LEVEL, seed: int = 0) -> Interval:
  """accuracy(a) - accuracy(b) on the same examples, averaged over one or more pairs (a, b)
  (say, seeds), with the paired interval: every model is scored on the same draws."""
  if not len(pairs):
    raise ValueError("no pairs to average")
  total = _checked(pairs[0][0], total)[1]
  value = np.mean([_checked(a, total, len(total))[0] - _checked(b, total, len(total))[0]
                   for a, b in pairs], 0)
  draws = _resampled_ratio(value, total, num_resamples, seed)
  return _interval(value.sum() / total.sum(), draws, len(total), level)


def accuracy(correct, total=None, **kwargs) -> Interval:
  """One model's accuracy with its percentile bootstrap interval."""
  return mean_accuracy([correct], total, **kwargs)


def paired_difference(correct_a, correct_b, total=None, **kwargs) -> Interval:
  """accuracy(a) - accuracy(b) on the same examples, with its paired bootstrap interval."""
  return mean_difference([(correct_a, correct_b)], total, **kwargs)
