"""Face tracks: each face keeps one id through a clip, so its emotion can be followed over time.

Faces of consecutive analysed frames are linked by a greedy matcher on

  affinity(track, face) = iou_weight * IoU(track box, face box)
                          + (1 - iou_weight) * cos(track embedding, face embedding)

the track's box being its last seen box and its embedding a running mean of
its faces' unit embeddings (each new face weighs 1 - momentum). A pair is a
candidate only when IoU >= min_iou (the face is where the track was last
seen) and affinity >= min_affinity; candidates link in decreasing affinity
(the older track, then the lower face index, on ties), each track and each
face once. A face left over starts a new track. A track unseen for up to
`max_gap` analysed frames still links (the face gets its id back); unseen
for more, it ends. Ids count up from 0 and are never reused.

Defaults: iou_weight 0.6, min_iou 0.1, min_affinity 0.4, momentum 0.8,
max_gap 10. The box term carries a face from frame to frame and tolerates a
change of expression (EmoNet embeddings describe expressions, not who a face
is: a face in place, IoU 0.8, links even with cos 0, affinity 0.48); the
embedding term decides between faces whose boxes overlap (two people
crossing), and nothing links on the embedding alone. There is no motion
model: a face that moves more than about its own size between analysed
frames starts a new track. Greedy rather than optimal assignment: the
candidates are sparse, and scipy is not a dependency. Host-side numpy; a
frame has at most a few hundred faces.
"""

import dataclasses
from collections.abc import Iterable

import numpy as np

from emoflow import metrics


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclasses.dataclass
class Tracker:
  """Links faces frame by frame (module docstring); call `update` once per analysed frame."""

  iou_weight: float = 0.6
  min_iou: float = 0.1
  min_affinity: float = 0.4
  momentum: float = 0.8
  max_gap: int = 10

  def __post_init__(self):
    self._next_id = 0
    # Live tracks, oldest first: id, last box, unit embedding, analysed frames since last seen.
    self._ids = np.zeros(0, np.int64)
    self._boxes = np.zeros((0, 4))
    self._embeddings = None  # [tracks, M], sized by the first frame
    self._unseen = np.zeros(0, np.int64)

  def update(self, boxes: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Track ids int64 [n] of one frame's faces: boxes [n, 4] pixels, embeddings [n, M]."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    embeddings = _unit(np.asarray(embeddings, np.float64))
    if embeddings.ndim != 2 or len(embeddings) != len(boxes):
      raise ValueError(f"expected embeddings [{len(boxes)}, M], got {embeddings.shape}")
    if self._embeddings is None:
      self._embeddings = np.zeros((0, embeddings.shape[1]))
    track_of = self._match(boxes, embeddings)  # [n], -1 for a new face
    linked = track_of >= 0
    t = track_of[linked]
    self._boxes[t] = boxes[linked]
    self._embeddings[t] = _unit(self.momentum * self._embeddings[t]
                                + (1 - self.momentum) * embeddings[linked])
    self._unseen += 1
    self._unseen[t] = 0
    ids = np.full(len(boxes), -1, np.int64)
    ids[linked] = self._ids[t]
    new = ~linked
    ids[new] = np.arange(self._next_id, self._next_id + new.sum())
    self._next_id += int(new.sum())
    keep = self._unseen <= self.max_gap
    self._ids = np.concatenate([self._ids[keep], ids[new]])
    self._boxes = np.concatenate([self._boxes[keep], boxes[new]])
    self._embeddings = np.concatenate([self._embeddings[keep], embeddings[new]])
    self._unseen = np.concatenate([self._unseen[keep], np.zeros(new.sum(), np.int64)])
    return ids

  def _match(self, boxes: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """The live track (row) each face links to, -1 for none: the greedy rule of the module docstring."""
    track_of = np.full(len(boxes), -1, np.int64)
    if not len(self._ids) or not len(boxes):
      return track_of
    iou = metrics.box_iou_matrix(self._boxes, boxes)
    affinity = self.iou_weight * iou + (1 - self.iou_weight) * (self._embeddings @ embeddings.T)
    rows, cols = np.nonzero((iou >= self.min_iou) & (affinity >= self.min_affinity))
    taken = np.zeros(len(self._ids), bool)
    # Row-major candidates and a stable sort: ties go to the older track, then the lower face.
    for k in np.argsort(-affinity[rows, cols], kind="stable"):
      if not taken[rows[k]] and track_of[cols[k]] < 0:
        taken[rows[k]] = True
        track_of[cols[k]] = rows[k]
    return track_of


def track_emotions(frame_indices: Iterable[int], ids: Iterable[np.ndarray],
                   probs: Iterable[np.ndarray]) -> dict[int, list[tuple[int, np.ndarray]]]:
  """Per track, its emotion over time: {track id: [(frame index, probs [C]), ...]} in frame order.

  Takes per analysed frame its index, its faces' track ids [n] (from
  Tracker.update) and their emotion probabilities [n, C].
  """
  out: dict[int, list[tuple[int, np.ndarray]]] = {}
  for frame, frame_ids, frame_probs in zip(frame_indices, ids, probs, strict=True):
    for track, p in zip(np.asarray(frame_ids).tolist(), np.asarray(frame_probs), strict=True):
      out.setdefault(track, []).append((int(frame), p))
  return out
