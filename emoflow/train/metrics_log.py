"""WORKDIR/metrics.csv: one row per logged train step or evaluation.

The whole table is kept in memory and rewritten atomically on each flush, so
the file is always complete; on resume, rows after the restored step are
dropped, so a resumed run's table equals an uninterrupted run's.
"""

import csv
import os

from emoflow.fileio import atomic_open

_LEADING = ("step", "split")


class MetricsLog:
  """Rows of {step, split, metric: value}; columns are the union of all keys."""

  def __init__(self, path: str, resume_step: int = 0):
    self.path = path
    self.rows: list[dict] = []
    if resume_step and os.path.exists(path):
      with open(path, newline="") as f:
        for row in csv.DictReader(f):
          if int(row["step"]) <= resume_step:
            self.rows.append(_parse(row))

  def append(self, step: int, split: str, metrics: dict) -> None:
    self.rows.append({"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}})

  def flush(self) -> None:
    columns = list(_LEADING) + sorted({k for r in self.rows for k in r} - set(_LEADING))
    with atomic_open(self.path, "w") as f:
      writer = csv.DictWriter(f, fieldnames=columns, restval="")
      writer.writeheader()
      writer.writerows(self.rows)


def _parse(row: dict) -> dict:
  parsed = {"step": int(row["step"]), "split": row["split"]}
  for key, value in row.items():
    if key not in _LEADING and value != "":
      parsed[key] = float(value)
  return parsed
