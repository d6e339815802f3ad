"""Training pictures are written (atomically) and group metric families into panels."""

import numpy as np

from emoflow.train import plots


def test_panels_group_metric_families():
  assert plots._panel("acc/happy") == ("acc/", "happy")
  assert plots._panel("acc@8-15px") == ("acc@", "8-15px")
  assert plots._panel("loss") == ("loss", "")


def test_curves_and_confusion_pngs(tmp_path):
  rows = [{"step": s, "split": "train", "loss": 2.0 / s} for s in (1, 2, 3)]
  rows += [{"step": s, "split": "validation", "acc/a": 0.1 * s, "n@8-15px": 7.0} for s in (2, 3)]
  plots.plot_curves(rows, str(tmp_path / "curves.png"))
  plots.plot_confusion(np.array([[3, 1], [0, 4]]), ["a", "b"], str(tmp_path / "cm.png"))
  for name in ("curves.png", "cm.png"):
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curves.png"]  # no temp files left
