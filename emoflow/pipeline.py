"""Video inference: video -> frames -> faces -> EmoNet -> groups -> NVPF -> TNVPF.

`Pipeline(bundle, detector)` holds every stage's model (emoflow.bundle) and
`run(path)` labels a video at four levels, calling the same predict
functions the tasks evaluate with:

1. frames are read in batches of `batch_frames`, every frame or the frames
   nearest to `sampling_fps` (default: the rate the video model was trained
   on, from the bundle);
2. the detector gives boxes and 5 landmarks per face (1 and 2 run in a
   reader thread, READ_AHEAD batches ahead of the rest); faces are aligned
   on the device (align.warp_faces) and the face model gives each its
   emotion and embedding, FACE_BLOCK faces a call: EmoNet, or the starter's
   FER2013 mini-Xception (`emonet.architecture` "mini_xception" in
   model.json: its embedding is its 7 logits, emoflow.starter);
3. faces are grouped per frame (`grouping`): "kmeans" by k-means over
   their centres (vision.grouping.group_faces), "rpn" by the bundle's group
   proposal network (vision.rpn, at `rpn_scale` or the scale
   rpn.frame_scale picks for the frame size) and
   vision.grouping.group_by_proposals' rule; a group's faces fill the fusion's N slots largest first (the
   records' order), and the group fusion labels each group (the untrained
   "valence" fusion reads the faces' emotion probabilities, the others their
   embeddings);
4. the frames' groups (the G with most faces, in group order) go to the
   temporal model, which labels each frame and, from the last sampled frame,
   the video; the mean of the frame probabilities is reported too. With
   `video.fusion` "mean_of_frames" there is no temporal model: a frame is its
   groups weighted by their faces and the video the mean of its frames
   (`mean_of_frames`);
5. faces are linked across sampled frames into tracks (vision.tracks).

The result is a JSON-ready dict in the layout of the annotation files
(data_pipelines/annotations.py: frames with faces and groups, boxes x0 y0 x1
y1 in pixels, emoflow.labels names) plus scores, so a predictions file can
be read back as (pseudo-)annotations. A video with no faces gives empty
lists and the video label "unknown"; so does a bundle without a video model,
for the frame and video labels ("unknown", scores null). A frame's
"dropped_faces" counts the faces its detector found beyond the max_faces
slots (the smallest or least sure ones): a crowd is never cut without a trace.
"""

import dataclasses
import functools
import time
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from emoflow import bundle as bundle_lib
from emoflow.labels import EMOTIONS, FER2013_EXPRESSIONS, GROUP_EMOTIONS
from emoflow.models import EmoNet, mini_xception
from emoflow.tasks import group as group_task
from emoflow.tasks import individual as individual_task
from emoflow.tasks import video as video_task
from emoflow.vision import align, grouping, rpn, tracks
from emoflow.vision import video as video_io

UNKNOWN = "unknown"
STAGES = ("decode", "detect", "align", "emonet", "group", "nvpf", "tnvpf")
GROUPINGS = ("kmeans", "rpn")
FACE_MODELS = ("emonet", "mini_xception")  # model.json's emonet.architecture
MEAN_OF_FRAMES = "mean_of_frames"  # model.json's video.fusion with no temporal model (module doc)


# Faces per alignment and face-model call: the calls' fixed shape (pipeline._faces). On 2 CPU cores
# EmoNet runs at the same faces/s at 32 as at 256 a call (benchmarks/pipeline_throughput.py), and a
# block this small wastes little on padding.
FACE_BLOCK = 32
READ_AHEAD = 2  # batches decoded and detected ahead of the face model (Pipeline.run)


def _bucket(n: int, smallest: int = 16) -> int:
  """n rounded up to a power of two (at least `smallest`): few distinct shapes, few compiles."""
  return max(smallest, 1 << max(n - 1, 0).bit_length())


def _pad(x: np.ndarray, n: int) -> np.ndarray:
  out = np.zeros((n, *x.shape[1:]), x.dtype)
  out[:len(x)] = x
  return out


def _repeat_last(x: np.ndarray, n: int) -> np.ndarray:
  """x [k, ...] made n long by repeating its last entry: a short batch in a full batch's shape
  (a frame's stages depend on that frame alone, so the copies change nothing of the others)."""
  return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


def _scores(probs, names) -> dict:
  return {name: round(float(p), 5) for name, p in zip(names, probs)}


@dataclasses.dataclass
class FrameResult:
  """One sampled frame's outputs, host side."""

  index: int
  boxes: np.ndarray  # [n, 4]
  landmarks: np.ndarray  # [n, 5, 2]
  detection_scores: np.ndarray  # [n]
  face_probs: np.ndarray  # [n, 8]
  embeddings: np.ndarray  # [n, M]
  face_group: np.ndarray  # [n], -1 if no group
  group_boxes: np.ndarray  # [g, 4]
  group_probs: np.ndarray  # [g, 3]
  group_slots: list  # per group: its faces in slot order (largest first)
  dropped_faces: int = 0  # faces the detector found beyond its max_faces slots
  tracks: np.ndarray | None = None  # [n]


def _bundled_proposer(model: bundle_lib.Bundle, input_scale: float) -> rpn.GroupProposer:
  """The group proposal network stored in a model directory, at its run's thresholds."""
  block = model.config.get("rpn")
  network = rpn.RPN(num_anchors=len(block["scales"]) * len(block["ratios"]),
                    width=block["width"], dtype=jnp.dtype(block["dtype"]))
  return rpn.GroupProposer(network, model.variables["rpn"], scales=block["scales"],
                           ratios=block["ratios"], input_scale=input_scale,
                           score_threshold=block["score_threshold"],
                           nms_threshold=block["nms_threshold"],
                           max_proposals=block["max_proposals"], min_size=block["min_size"])


def _make_grouping(model: bundle_lib.Bundle, name: str, k_max: int, rpn_scale: float | None):
  """grouping(frames, boxes [F, K, 4], valid [F, K]) -> Groups per frame, for `name` in GROUPINGS.

  The RPN runs at `rpn_scale`, else at the scale rpn.frame_scale picks for the frames' size.
  """
  if name == "kmeans":
    kmeans = jax.jit(jax.vmap(functools.partial(grouping.group_faces, k_max=k_max)))
    return lambda frames, boxes, valid: kmeans(boxes, valid)
  if name == "rpn":
    block = model.config.get("rpn")
    if block is None:
      raise ValueError("the model directory holds no group proposal network; add one with "
                       "`experiments.export_model --rpn=RUN` or use --grouping kmeans")
    proposers = {}  # per frame size
    by_proposals = jax.jit(jax.vmap(functools.partial(grouping.group_by_proposals, k_max=k_max)))

    def group(frames, boxes, valid):
      size = frames.shape[1:3]
      if size not in proposers:
        proposers[size] = _bundled_proposer(model, rpn_scale or rpn.frame_scale(block, *size))
      proposal_boxes, _, proposal_valid = proposers[size](frames)
      return by_proposals(boxes, valid, proposal_boxes, proposal_valid)
    return group
  raise ValueError(f"unknown grouping {name!r}; known: {', '.join(GROUPINGS)}")


def preprocessing(architecture: str = "emonet") -> dict:
  """How this code turns a frame into the face model's input; a model directory records it.

  Every face model gets the 112x112 RGB crop on the ArcFace template; the
  mini-Xception then makes its own 64x64 grey input of it (`model_input`).
  """
  record = {"channels": "RGB", "face_size": align.FACE_SIZE,
            "alignment": [[round(float(v), 4) for v in p] for p in align.ARCFACE_TEMPLATE]}
  if architecture == "mini_xception":
    size = mini_xception.INPUT_SIZE
    record["model_input"] = f"grey {size}x{size} resized from the crop, (x / 255 - 0.5) * 2"
  return record


def architecture(config: dict) -> str:
  """The face model a model.json holds (`emonet.architecture`, EmoNet when absent)."""
  name = config["emonet"].get("architecture", "emonet")
  if name not in FACE_MODELS:
    raise ValueError(f"the model's face stage is {name!r}; this emoflow knows "
                     f"{', '.join(FACE_MODELS)}")
  return name


def face_model(config: dict):
  """(predict(variables, faces uint8 [n, 112, 112, 3]) -> (probs [n, 8], embeddings [n, M]), M)
  of a model.json's face stage."""
  block = config["emonet"]
  if architecture(config) == "mini_xception":
    return (functools.partial(mini_xception.predict, mini_xception.MiniXception()),
            len(FER2013_EXPRESSIONS))
  network = EmoNet(num_classes=block["num_classes"], embed_dim=block["embed_dim"],
                   width=block.get("width", 1.0), depth=block.get("depth", 1.0))
  return functools.partial(individual_task.predict, network), block["embed_dim"]


def vocabulary(emotions) -> dict:
  """The labels block of model.json: the EmoNet's class names and the group classes."""
  return {"emotions": list(emotions), "groups": list(GROUP_EMOTIONS)}


def check_model(config: dict) -> None:
  """A one-line ValueError unless the model's labels and preprocessing are this code's."""
  if "labels" not in config or "preprocessing" not in config:
    raise ValueError("the model directory records no label vocabulary or preprocessing (it was "
                     "exported by an older emoflow); export it again with experiments.export_model")
  ours = {"labels": vocabulary(EMOTIONS[:config["emonet"]["num_classes"]]),
          "preprocessing": preprocessing(architecture(config))}
  for block, expected in ours.items():
    for key, value in expected.items():
      if config[block].get(key) != value:
        raise ValueError(f"the model's {block}.{key} is {config[block].get(key)}, emoflow's is "
                         f"{value}; predictions would be mislabelled or misaligned, so predict "
                         "refuses the model")


class Pipeline:
  """Every stage of a model directory, jitted once per input shape."""

  def __init__(self, model: bundle_lib.Bundle, detector, *, k_max: int = 10,
               grouping: str = "kmeans", rpn_scale: float | None = None):
    check_model(model.config)
    self.model, self.detector = model, detector
    face_predict, self.embed_dim = face_model(model.config)
    self.group_fusion = group_task.make_fusion(model.model_config("group"))
    self.max_faces = model.config["group"]["max_faces"]
    video_config = model.model_config("video")
    self.mean_of_frames = video_config is not None and video_config.get("fusion") == MEAN_OF_FRAMES
    if self.mean_of_frames:
      video_config = None
    self.temporal = None if video_config is None else video_task.make_fusion(video_config)
    self.max_groups = None if video_config is None else video_config.max_groups
    self.video_max_faces = None if video_config is None else video_config.max_faces
    self.sampling_fps = model.config.get("sampling_fps")
    self._emonet = jax.jit(face_predict)
    self._face_variables = jax.device_put(model.variables["emonet"])  # once, not once per block
    self._group = jax.jit(functools.partial(group_task.predict, self.group_fusion))
    self._grouping = _make_grouping(model, grouping, k_max, rpn_scale)
    self._warp = jax.jit(align.warp_faces)
    self._temporal = (None if self.temporal is None
                      else jax.jit(functools.partial(video_task.predict, self.temporal)))
    self.timings = defaultdict(float)  # seconds per stage, over every run()

  def _timed(self, stage: str, fn, *args):
    """fn(*args) with its wall time, to its results' completion, added to the stage's."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    self.timings[stage] += time.perf_counter() - start
    return out

  def _faces(self, frames: np.ndarray, detections, count: int):
    """Aligned faces of the valid detections in the first `count` frames -> (frame of each,
    probs [n, 8], embeddings [n, M]).

    The faces go through alignment and the face model FACE_BLOCK at a time,
    the last block padded: one program per stage for any face count, and at
    most FACE_BLOCK - 1 faces of wasted work per batch of frames.
    """
    frame_of, slot = np.nonzero(np.asarray(detections.valid)[:count])
    n = len(frame_of)
    if n == 0:
      return frame_of, slot, np.zeros((0, len(EMOTIONS))), np.zeros((0, self.embed_dim))
    size = -(-n // FACE_BLOCK) * FACE_BLOCK
    blocks = [slice(start, start + FACE_BLOCK) for start in range(0, size, FACE_BLOCK)]
    frame_of_padded = _pad(frame_of.astype(np.int32), size)
    landmarks = _pad(np.asarray(detections.landmarks)[frame_of, slot], size)
    frames = jax.device_put(frames)
    faces = self._timed("align", lambda: [self._warp(frames, frame_of_padded[b], landmarks[b])
                                          for b in blocks])
    outputs = self._timed("emonet", lambda: [self._emonet(self._face_variables, f) for f in faces])
    probs, embeddings = (np.concatenate([np.asarray(out[k]) for out in outputs])[:n]
                         for k in range(2))
    return frame_of, slot, probs, embeddings

  def slots(self, members: np.ndarray, boxes: np.ndarray) -> list:
    """A group's faces in slot order: largest first, ties by the left edge (the records' order)."""
    area = (boxes[members, 2] - boxes[members, 0]) * (boxes[members, 3] - boxes[members, 1])
    return [int(i) for i in members[np.lexsort((boxes[members, 0], -area))]]

  def _group_batch(self, embeddings: np.ndarray, slots: list, max_faces: int):
    """[groups, N, M] embeddings and [groups, N] mask of the faces `slots` list per group."""
    out = np.zeros((len(slots), max_faces, embeddings.shape[-1]), np.float32)
    mask = np.zeros((len(slots), max_faces), bool)
    for g, members in enumerate(slots):
      kept = members[:max_faces]
      out[g, :len(kept)] = embeddings[kept]
      mask[g, :len(kept)] = True
    return out, mask

  def detect(self, indices, frames: np.ndarray):
    """The detector's faces of a batch of frames, on the host."""
    return jax.device_get(self._timed("detect", self.detector, frames, list(indices)))

  def analyse(self, indices, frames: np.ndarray, detections=None,
              count: int | None = None) -> list[FrameResult]:
    """The per-frame stages (detect .. group fusion) for a batch of sampled frames; `detections`
    when the batch was detected already (run's reader thread). Only the first `count` frames
    (default all) are analysed: the others pad a short batch to the programs' shape."""
    count = len(indices) if count is None else count
    if detections is None:
      detections = self.detect(indices, frames)
    frame_of, slot, probs, embeddings = self._faces(frames, detections, count)
    groups = self._timed("group", self._grouping, frames, detections.boxes, detections.valid)
    face_group = np.asarray(groups.face_group)
    results = []
    for f, index in enumerate(indices[:count]):
      mine = np.flatnonzero(frame_of == f)
      boxes = np.asarray(detections.boxes)[f, slot[mine]]
      ids = face_group[f, slot[mine]]
      num_groups = int(groups.num_groups[f])
      slots = [self.slots(np.flatnonzero(ids == g), boxes) for g in range(num_groups)]
      results.append(FrameResult(
          index=int(index), boxes=boxes, landmarks=np.asarray(detections.landmarks)[f, slot[mine]],
          detection_scores=np.asarray(detections.scores)[f, slot[mine]],
          face_probs=probs[mine], embeddings=embeddings[mine], face_group=ids,
          group_boxes=np.asarray(groups.boxes)[f, :num_groups], group_probs=None,
          group_slots=slots, dropped_faces=int(np.asarray(detections.dropped)[f])))
    return self.fuse_groups(results)

  def fuse_groups(self, results: list[FrameResult]) -> list[FrameResult]:
    """Every group of the batch through the group fusion in one call."""
    slots = [s for r in results for s in r.group_slots]
    if not slots:
      for r in results:
        r.group_probs = np.zeros((0, len(GROUP_EMOTIONS)))
      return results
    offsets = np.cumsum([0] + [len(r.boxes) for r in results])
    on_probs = self.group_fusion.input_key == "probs"
    inputs = np.concatenate([r.face_probs if on_probs else r.embeddings for r in results])
    shifted = [[int(i) + offsets[k] for i in s] for k, r in enumerate(results) for s in r.group_slots]
    batch, mask = self._group_batch(inputs, shifted, self.max_faces)
    size = _bucket(len(slots))
    probs = self._timed("nvpf", self._group, self.model.variables["group"], _pad(batch, size),
                        _pad(mask, size))
    probs, start = np.asarray(probs)[:len(slots)], 0
    for r in results:
      r.group_probs = probs[start:start + len(r.group_slots)]
      start += len(r.group_slots)
    return results

  def temporal_probs(self, results: list[FrameResult]) -> dict | None:
    """The temporal model over all sampled frames: frame [T, 3], last [3], mean [3]; None without
    a video model or frames."""
    if self.mean_of_frames and results:
      return mean_of_frames(results)
    if self.temporal is None or not results:
      return None
    t, g, n = _bucket(len(results)), self.max_groups, self.video_max_faces
    m = self.embed_dim
    embeddings = np.zeros((1, t, g, n, m), np.float32)
    face_mask = np.zeros((1, t, g, n), bool)
    group_mask = np.zeros((1, t, g), bool)
    frame_mask = np.arange(t)[None] < len(results)  # padded frames carry the state: same result
    for i, r in enumerate(results):
      sizes = [len(s) for s in r.group_slots]
      kept = sorted(sorted(range(len(sizes)), key=lambda j: (-sizes[j], j))[:g])
      batch, mask = self._group_batch(r.embeddings, [r.group_slots[j] for j in kept], n)
      embeddings[0, i, :len(kept)], face_mask[0, i, :len(kept)] = batch, mask
      group_mask[0, i, :len(kept)] = True
    probs = self._timed("tnvpf", self._temporal, self.model.variables["video"], embeddings,
                        face_mask, group_mask, frame_mask)
    return {"frame": np.asarray(probs["frame"])[0, :len(results)],
            "last": np.asarray(probs["last"])[0], "mean": np.asarray(probs["mean"])[0]}

  def _detected_batches(self, path: str, indices, batch_frames: int):
    """(count, indices, frames, detections) per batch: decoded and detected ahead of the caller in
    a reader thread (video.prefetch), so both overlap the face model's work. The last batch is
    padded to a full one (its first `count` frames are real) to reuse the full batches' programs."""
    def batches():
      reader = video_io.read_batches(path, indices, batch_frames)
      while True:
        start = time.perf_counter()
        batch = next(reader, None)
        self.timings["decode"] += time.perf_counter() - start
        if batch is None:
          return
        yield batch

    for batch_number, (batch_indices, frames) in enumerate(batches()):
      count = len(batch_indices)
      if batch_number and count < batch_frames:
        batch_indices, frames = (_repeat_last(batch_indices, batch_frames),
                                 _repeat_last(frames, batch_frames))
      yield count, batch_indices, frames, self.detect(batch_indices, frames)

  def run(self, path: str, *, sampling_fps: float | None = None, batch_frames: int = 8,
          progress: bool = True, read_ahead: int = READ_AHEAD) -> dict:
    """Predictions for the video at `path` (module docstring), as a JSON-ready dict.

    self.timings gains each stage's seconds. Decode and detect run in a reader thread
    `read_ahead` batches ahead, beside the other stages (which then share the cores with them,
    and the stages may add up to more than the wall time); 0 runs them in line.
    """
    info = video_io.probe(path)
    fps = sampling_fps or self.sampling_fps
    indices = video_io.sample_indices(info.num_frames, info.fps, fps)
    results, tracker = [], tracks.Tracker()
    bar = tqdm.tqdm(total=len(indices), desc="frames", unit="frame", disable=not progress)
    batches = self._detected_batches(path, indices, batch_frames)
    if read_ahead:
      batches = video_io.prefetch(batches, depth=read_ahead)
    for count, batch_indices, frames, detections in batches:
      for r in self.analyse(batch_indices, frames, detections, count):
        r.tracks = tracker.update(r.boxes, r.embeddings)
        results.append(r)
      bar.update(count)
    bar.close()
    return document(path, info, results, self.temporal_probs(results), self.model.config,
                    sampled_fps=fps)


def mean_of_frames(results: list[FrameResult]) -> dict:
  """Frame and video probabilities with no temporal model: a frame is its groups' probabilities
  weighted by their faces (for the valence average: the average over all its grouped faces), the
  video ("last" and "mean" alike) the mean of the frames that have groups; uniform without any."""
  classes = len(GROUP_EMOTIONS)
  frame = np.full((len(results), classes), 1.0 / classes)
  for t, r in enumerate(results):
    weights = np.array([len(s) for s in r.group_slots], np.float64)
    if weights.sum() > 0:
      frame[t] = weights @ r.group_probs / weights.sum()
  seen = [t for t, r in enumerate(results) if r.group_slots]
  video = frame[seen].mean(0) if seen else np.full(classes, 1.0 / classes)
  return {"frame": frame, "last": video, "mean": video}


def _label(probs, names) -> str:
  return names[int(np.argmax(probs))]


def document(path: str, info, results: list[FrameResult], temporal: dict | None, config: dict,
             sampled_fps: float | None) -> dict:
  """The predictions dict (module docstring) from the per-frame results."""
  frames, track_rows = [], defaultdict(list)
  for t, r in enumerate(results):
    faces = []
    for i in range(len(r.boxes)):
      emotion = _label(r.face_probs[i], EMOTIONS)
      track = None if r.tracks is None else int(r.tracks[i])
      faces.append({"box": [round(float(v), 2) for v in r.boxes[i]],
                    "landmarks": [[round(float(v), 2) for v in p] for p in r.landmarks[i]],
                    "emotion": emotion, "scores": _scores(r.face_probs[i], EMOTIONS),
                    "detection_score": round(float(r.detection_scores[i]), 4), "track": track})
      if track is not None:
        track_rows[track].append([r.index, emotion])
    groups = [{"box": [round(float(v), 2) for v in r.group_boxes[g]],
               "label": _label(r.group_probs[g], GROUP_EMOTIONS),
               "scores": _scores(r.group_probs[g], GROUP_EMOTIONS), "faces": r.group_slots[g]}
              for g in range(len(r.group_slots))]
    has_faces = len(r.boxes) > 0
    frame_probs = None if temporal is None or not has_faces else temporal["frame"][t]
    frames.append({"index": r.index, "time": round(r.index / info.fps, 4) if info.fps else None,
                   "label": UNKNOWN if frame_probs is None else _label(frame_probs, GROUP_EMOTIONS),
                   "scores": None if frame_probs is None else _scores(frame_probs, GROUP_EMOTIONS),
                   "faces": faces, "groups": groups, "dropped_faces": r.dropped_faces})
  any_faces = any(len(r.boxes) for r in results)
  video_probs = None if temporal is None or not any_faces else temporal
  return {
      "video": path.rsplit("/", 1)[-1], "fps": info.fps, "num_frames": info.num_frames,
      "width": info.width, "height": info.height, "sampled_fps": sampled_fps,
      "label": UNKNOWN if video_probs is None else _label(video_probs["last"], GROUP_EMOTIONS),
      "scores": None if video_probs is None else _scores(video_probs["last"], GROUP_EMOTIONS),
      "scores_mean_of_frames": (None if video_probs is None
                                else _scores(video_probs["mean"], GROUP_EMOTIONS)),
      "frames": frames,
      "tracks": [{"track": k, "frames": [row[0] for row in rows],
                  "emotions": [row[1] for row in rows]} for k, rows in sorted(track_rows.items())],
      "model": config.get("sources", {}),
  }
