"""emoflow.bootstrap against scipy.stats.bootstrap, the normal approximation and a plain loop."""

import numpy as np
import pytest
from scipy import stats

from emoflow import bootstrap


def _models(n, seed=0, agree=0.8):
  """Labels and two classifiers' right/wrong that agree on most examples."""
  rng = np.random.default_rng(seed)
  a = rng.random(n) < 0.7
  b = np.where(rng.random(n) < agree, a, rng.random(n) < 0.65)
  return a, b


def test_accuracy_interval_matches_scipy_percentile_bootstrap():
  a, _ = _models(1500)
  got = bootstrap.accuracy(a, num_resamples=4000)
  want = stats.bootstrap((a.astype(float),), np.mean, n_resamples=4000, method="percentile",
                         random_state=np.random.default_rng(1)).confidence_interval
  assert got.estimate == pytest.approx(a.mean())
  assert got.n == 1500
  assert got.low == pytest.approx(want.low, abs=0.004)
  assert got.high == pytest.approx(want.high, abs=0.004)


def test_paired_difference_matches_scipy_paired_bootstrap_and_mcnemar_width():
  a, b = _models(3000, seed=2)
  got = bootstrap.paired_difference(a, b, num_resamples=4000)
  diff = lambda x, y: np.mean(x) - np.mean(y)
  want = stats.bootstrap((a.astype(float), b.astype(float)), diff, paired=True,
                         n_resamples=4000, method="percentile", vectorized=False,
                         random_state=np.random.default_rng(3)).confidence_interval
  assert got.estimate == pytest.approx(a.mean() - b.mean())
  assert got.low == pytest.approx(want.low, abs=0.003)
  assert got.high == pytest.approx(want.high, abs=0.003)
  # The paired standard error: discordant pairs only (McNemar's variance).
  d = a.astype(float) - b.astype(float)
  half_width = 1.96 * d.std() / np.sqrt(len(d))
  assert got.half_width == pytest.approx(half_width, rel=0.08)
  # ... which is far narrower than the unpaired one, since the models agree on 80%.
  unpaired = 1.96 * np.sqrt(a.var() / len(a) + b.var() / len(b))
  assert got.half_width < 0.7 * unpaired


def test_clustered_examples_resample_whole_clusters():
  """Videos of frames: the interval is the ratio's over resampled videos (a plain loop)."""
  rng = np.random.default_rng(4)
  total = rng.integers(1, 13, size=60)
  correct = rng.binomial(total, rng.uniform(0.2, 0.9, size=60))
  got = bootstrap.accuracy(correct, total, num_resamples=3000, seed=5)
  loop_rng = np.random.default_rng(6)
  draws = []
  for _ in range(3000):
    pick = [int(loop_rng.integers(60)) for _ in range(60)]
    draws.append(sum(correct[i] for i in pick) / sum(total[i] for i in pick))
  low, high = np.percentile(draws, [2.5, 97.5])
  assert got.estimate == pytest.approx(correct.sum() / total.sum())
  assert got.low == pytest.approx(low, abs=0.012)
  assert got.high == pytest.approx(high, abs=0.012)
  # Frames treated as independent would claim a narrower interval than the videos allow.
  frames = np.repeat([1, 0], [correct.sum(), total.sum() - correct.sum()])
  assert bootstrap.accuracy(frames, num_resamples=3000).half_width < got.half_width


def test_seed_means_and_identities():
  a, b = _models(800, seed=7)
  c, d = _models(800, seed=8)
  same = bootstrap.paired_difference(a, a)
  assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
  mean = bootstrap.mean_difference([(a, b), (c, d)])
  assert mean.estimate == pytest.approx(((a.mean() - b.mean()) + (c.mean() - d.mean())) / 2)
  assert mean.low <= mean.estimate <= mean.high
  avg = bootstrap.mean_accuracy([a, c])
  assert avg.estimate == pytest.approx((a.mean() + c.mean()) / 2)
  assert bootstrap.accuracy(a) == bootstrap.accuracy(a)  # a fixed seed: reproducible digits


@pytest.mark.parametrize("call", [
    lambda: bootstrap.accuracy([]),
    lambda: bootstrap.paired_difference([1, 0], [1]),
    lambda: bootstrap.accuracy([2, 1], [1, 1]),
    lambda: bootstrap.mean_difference([]),
])
def test_bad_input_is_a_one_line_error(call):
  with pytest.raises(ValueError):
    call()
