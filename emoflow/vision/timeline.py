"""The timeline picture of a predictions document: group emotion over time, and each track.

Top panel: the frame-level probabilities of positive / neutral / negative
over the video's time (the temporal model's), with the video label in the
title. Bottom panel: one row per face track, a dot per sampled frame in the
colour of the face's emotion, so the crowd's members can be followed.
"""

from emoflow.figures import save_png  # first: it selects matplotlib's Agg backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from emoflow.labels import GROUP_EMOTIONS  # noqa: E402
from emoflow.vision.draw import COLOURS  # noqa: E402

_MAX_TRACK_ROWS = 40  # the longest tracks; a crowd's hundreds would be unreadable


def _colour(label: str) -> tuple:
  return tuple(c / 255 for c in COLOURS.get(label, (128, 128, 128)))


def plot_timeline(doc: dict, path: str) -> None:
  """Writes the timeline PNG of predictions `doc` (emoflow.pipeline.document) to `path`."""
  fps = doc["fps"] or 1.0
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                    gridspec_kw={"height_ratios": [1, 1.4]})
  scored = [f for f in doc["frames"] if f["scores"]]
  times = [f["index"] / fps for f in scored]
  for name in GROUP_EMOTIONS:
    top.plot(times, [f["scores"][name] for f in scored], marker=".", color=_colour(name),
             label=name)
  top.set_ylim(0, 1)
  top.set_ylabel("frame probability")
  top.legend(loc="upper right", fontsize=8)
  top.set_title(f"{doc['video']}: video label {doc['label']}")
  rows = sorted(doc["tracks"], key=lambda t: -len(t["frames"]))[:_MAX_TRACK_ROWS]
  for row, track in enumerate(rows):
    bottom.scatter(np.asarray(track["frames"]) / fps, np.full(len(track["frames"]), row), s=12,
                   c=[_colour(e) for e in track["emotions"]])
  bottom.set_yticks(range(len(rows)), [str(t["track"]) for t in rows], fontsize=6)
  bottom.set_ylabel(f"face track ({len(rows)} longest)")
  bottom.set_xlabel("time (s)")
  save_png(fig, path)
