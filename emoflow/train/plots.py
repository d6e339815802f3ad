"""Training pictures: metric curves from metrics.csv rows and a confusion matrix."""

from emoflow.figures import save_png  # first: it selects matplotlib's Agg backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _panel(name: str) -> tuple[str, str]:
  """'acc/happy' -> ('acc/', 'happy'), 'acc@8-15px' -> ('acc@', '8-15px'), 'loss' -> ('loss', '')."""
  for sep in ("/", "@"):
    if sep in name:
      head, tail = name.split(sep, 1)
      return head + sep, tail
  return name, ""


def plot_curves(rows: list[dict], path: str) -> None:
  """Metric curves against step: one panel per metric family ('acc/*' share one), one line
  per split and member. Series that never change (e.g. example counts) are left out."""
  series: dict[tuple, list] = {}
  for row in rows:
    for name, value in row.items():
      if name not in ("step", "split") and np.isfinite(value):
        series.setdefault((row["split"], name), []).append((row["step"], value))
  series = {k: v for k, v in series.items() if len({value for _, value in v}) > 1}
  panels = sorted({_panel(name)[0] for _, name in series})
  if not panels:
    return
  cols = min(3, len(panels))
  nrows = -(-len(panels) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.2 * nrows), squeeze=False)
  for ax, panel in zip(axes.flat, panels):
    for (split, name), points in sorted(series.items()):
      head, member = _panel(name)
      if head == panel:
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if split != "train" else None, ms=3,
                label=f"{split} {member}".strip())
    ax.set_title(panel.rstrip("/@") + (" (per class)" if panel.endswith("/") else
                                      " (per size)" if panel.endswith("@") else ""))
    ax.set_xlabel("step")
    ax.legend(fontsize=6)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  fig.tight_layout()
  save_png(fig, path)


def _draw_confusion(ax, cm: np.ndarray, class_names, title: str) -> None:
  cm = np.asarray(cm)
  rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
  n = len(class_names)
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


def plot_confusion(cm: np.ndarray, class_names, path: str, title: str = "") -> None:
  """Row-normalised confusion matrix (true class in rows) with counts in the cells."""
  plot_confusions([(cm, title)], class_names, path)


def plot_confusions(matrices: list[tuple[np.ndarray, str]], class_names, path: str) -> None:
  """Several (confusion matrix, title) side by side, each as plot_confusion draws it."""
  n = len(class_names)
  fig, axes = plt.subplots(1, len(matrices), squeeze=False,
                           figsize=((1.0 + 0.75 * n) * len(matrices), 0.8 + 0.7 * n))
  for ax, (cm, title) in zip(axes.flat, matrices):
    _draw_confusion(ax, cm, class_names, title)
  fig.tight_layout()
  save_png(fig, path)


def plot_bars(panels: dict[str, dict[str, dict[str, float]]], path: str,
              ylabel: str = "accuracy") -> None:
  """One panel per title: {series: {category: value}} as bars grouped by category."""
  widths = [max(4.0, 0.9 * len(next(iter(series.values())))) for series in panels.values()]
  fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(sum(widths), 3.4),
                           gridspec_kw={"width_ratios": widths})
  for ax, (title, series) in zip(axes.flat, panels.items()):
    categories = list(next(iter(series.values())))
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
      x = np.arange(len(categories)) + (k - (len(series) - 1) / 2) * width
      ax.bar(x, [values[c] for c in categories], width, label=name)
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
      ax.legend(fontsize=7)
  fig.tight_layout()
  save_png(fig, path)
