"""Training pictures: metric curves from metrics.csv rows and a confusion matrix."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from emoflow.fileio import atomic_open  # noqa: E402


def _save_atomically(fig, path: str) -> None:
  """Writes the figure as PNG through a temporary file, then closes it."""
  with atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)


def plot_curves(rows: list[dict], path: str) -> None:
  """One panel per metric name, train and eval rows as separate lines against step."""
  names = sorted({k for r in rows for k, v in r.items()
                  if k not in ("step", "split") and isinstance(v, (int, float)) and np.isfinite(v)})
  if not names:
    return
  cols = min(3, len(names))
  nrows = -(-len(names) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
  for ax, name in zip(axes.flat, names):
    for split in sorted({r["split"] for r in rows}):
      points = [(r["step"], r[name]) for r in rows if r["split"] == split and name in r]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if split != "train" else None, ms=3, label=split)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.tight_layout()
  _save_atomically(fig, path)


def plot_confusion(cm: np.ndarray, class_names, path: str, title: str = "") -> None:
  """Row-normalised confusion matrix (true class in rows) with counts in the cells."""
  cm = np.asarray(cm)
  rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
  n = len(class_names)
  fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
  ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
  ax.set_xticks(range(n), class_names, rotation=45, ha="right")
  ax.set_yticks(range(n), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  for i in range(n):
    for j in range(n):
      ax.text(j, i, f"{rates[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center", fontsize=6,
              color="white" if rates[i, j] > 0.5 else "black")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  _save_atomically(fig, path)
