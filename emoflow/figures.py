"""Matplotlib on any machine: the Agg backend (no display needed) and figures saved atomically.

Shared by the training pictures (train/plots.py) and the timeline of a
prediction (vision/timeline.py), so neither imports the other.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from emoflow.fileio import atomic_open  # noqa: E402


def save_png(fig, path: str) -> None:
  """Writes the figure as PNG through a temporary file, then closes it."""
  with atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
