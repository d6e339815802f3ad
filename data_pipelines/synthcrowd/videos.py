"""Procedural crowd videos: a crowd scene filmed by a moving camera, every frame annotated.

A clip films one crowds.Scene. People sway and some groups walk; they keep
their identity (track id = person index) all through. Expressions change in
segments: a member now and then switches to a new emotion drawn from its
group's mixture, and a group may shift its label once, its members following
within two seconds. The camera pans and zooms within the scene, and cuts to
another view of it now and then; bad frames (bursts of heavy motion blur,
something passing right in front of the lens) keep their annotation, since
the crowd is still there.

Speed comes from drawing each person once per expression segment
(faces.draw_portrait) and per frame only resizing and compositing; the
background is drawn once and warped by the camera.

Labels: each frame's groups carry their current label; the frame label is
crowds.prevailing over its visible faces (crowds.frame_annotation); the video
label is the most frequent frame label, a tie going to the label with more
faces summed over all frames.
"""

import collections
import dataclasses
import math
import os

import cv2
import numpy as np

from data_pipelines import annotations
from data_pipelines.synthcrowd import crowds, faces
from emoflow.labels import GROUP_EMOTIONS
from emoflow.vision.video import write_video


@dataclasses.dataclass(frozen=True)
class VideoSpec:
  """How a clip is filmed and how its crowd changes; the defaults are the training mix.

  Per-second rates give the same number of events per second at any frame
  rate; per-frame probabilities (bad frames, cuts) give more at higher ones.
  """

  duration_s: tuple[float, float] = (10.0, 20.0)
  fps: tuple[int, int] = (5, 25)  # integer frame rate, uniform
  pan: float = 0.15  # most the view centre travels per shot, fraction of the frame width
  zoom: tuple[float, float] = (1.0, 1.3)  # camera magnification; each shot starts and ends in it
  sway: float = 0.06  # head sway amplitude, face heights
  walk_prob: float = 0.3  # P(a group walks)
  walk_speed: float = 0.15  # a walking group's speed up to, face heights per second
  member_change: float = 0.05  # per member per second: a new expression from the group's mixture
  group_shift: float = 0.3  # per group per clip: its label changes once
  blur_prob: float = 0.02  # per frame: a burst of heavy motion blur starts
  occlusion_prob: float = 0.02  # per frame: something starts passing in front of the lens
  cut_prob: float = 0.01  # per frame: the camera cuts to another view of the crowd

  def __post_init__(self):
    if not (0 < self.duration_s[0] <= self.duration_s[1] and 1 <= self.fps[0] <= self.fps[1]
            and 1 <= self.zoom[0] <= self.zoom[1]):
      raise ValueError("VideoSpec needs 0 < duration, 1 <= fps and 1 <= zoom ranges with low <= high")


def _bursts(rng, n, prob, longest):
  """Per frame, the frame's position in a burst as (start, length), or None outside bursts."""
  out = [None] * n
  f = 0
  while f < n:
    if rng.uniform() < prob:
      length = int(rng.integers(1, longest + 1))
      for g in range(f, min(n, f + length)):
        out[g] = (f, length)
      f += length
    else:
      f += 1
  return out


def _camera_path(rng, n, spec, scene, size):
  """Per frame (scale, centre x, centre y) in scene pixels; cuts restart the path."""
  w, h = size
  cuts = [0] + [f for f in range(1, n) if rng.uniform() < spec.cut_prob] + [n]

  def clamp(s, c):
    half = np.array([w, h]) / (2 * s)
    return np.clip(c, half, np.array([w, h]) - half)

  path = []
  for start, stop in zip(cuts[:-1], cuts[1:]):
    s0, s1 = rng.uniform(*spec.zoom, 2)
    person = scene.people[rng.integers(len(scene.people))]
    c0 = clamp(s0, np.array([person.x, person.y]))
    c1 = clamp(s1, c0 + rng.uniform(-1, 1, 2) * spec.pan * np.array([w, w / 3]))
    for f in range(start, stop):
      t = (f - start) / max(1, stop - start - 1)
      t = t * t * (3 - 2 * t)  # ease in and out
      s = s0 + (s1 - s0) * t
      path.append((s, *clamp(s, c0 + (c1 - c0) * t)))
  return path


def _expressions(rng, n, fps, scene, spec):
  """Per frame group labels [G][n] and per person (emotion, segment start frame) [P][n]."""
  labels = [[label] * n for label in scene.labels]
  shifts = {}
  for g, label in enumerate(scene.labels):
    if n > 4 and rng.uniform() < spec.group_shift:
      at = int(rng.integers(n // 5, 4 * n // 5))
      new = [x for x in GROUP_EMOTIONS if x != label][rng.integers(2)]
      labels[g][at:] = [new] * (n - at)
      shifts[g] = at
  emotions = []
  for person in scene.people:
    g = person.group
    changes = set(np.flatnonzero(rng.uniform(size=n) < spec.member_change / fps).tolist())
    if g in shifts:
      changes.add(min(n - 1, shifts[g] + int(rng.integers(0, 2 * fps))))
    row, current = [], (person.emotion, 0)
    for f in range(n):
      if f in changes:
        current = (crowds.member_emotion(rng, labels[g][f], scene.agreement[g]), f)
      row.append(current)
    emotions.append(row)
  return labels, emotions


def _occluder(image, params, progress):
  """A dark, out-of-focus blob (a head, a flag) crossing the frame; progress in [0, 1]."""
  colour, radius, y, x0, x1 = params
  h, w = image.shape[:2]
  small = np.zeros((h // 8, w // 8), np.float32)
  centre = ((x0 + (x1 - x0) * progress) * w / 8, y * h / 8)
  cv2.ellipse(small, tuple(map(round, centre)), (round(radius * w / 8), round(1.4 * radius * w / 8)),
              0, 0, 360, 1.0, -1)
  alpha = cv2.resize(cv2.GaussianBlur(small, (0, 0), 2), (w, h))[..., None]
  image *= 1 - alpha
  image += alpha * colour


def render_video(rng: np.random.Generator, directory: str, name: str,
                 crowd: crowds.CrowdDifficulty = crowds.CrowdDifficulty(),
                 spec: VideoSpec = VideoSpec()) -> annotations.Video:
  """Writes directory/name.mp4 and directory/name.json (every frame annotated); returns the annotation."""
  fps = int(rng.integers(spec.fps[0], spec.fps[1] + 1))
  n = max(1, round(rng.uniform(*spec.duration_s) * fps))
  w, h = crowd.size
  scene = crowds.sample_scene(rng, crowd)
  look = crowd.face_difficulty()
  camera = faces.sample_camera(rng, look)
  labels, emotions = _expressions(rng, n, fps, scene, spec)
  path = _camera_path(rng, n, spec, scene, crowd.size)
  blurs = _bursts(rng, n, spec.blur_prob, max(1, fps // 2))
  occlusions = _bursts(rng, n, spec.occlusion_prob, max(2, fps))
  occluders = {start: (rng.uniform(0, 80, 3), rng.uniform(0.15, 0.35), rng.uniform(0.4, 1.1),
                       *rng.choice([-0.4, 1.4], 2, replace=False))
               for start in sorted({burst[0] for burst in occlusions if burst})}
  shake = (rng.integers(crowd.motion_blur_px[0], crowd.motion_blur_px[1] + 1)
           if rng.uniform() < crowd.motion_blur_prob else 0)
  people = scene.people
  walk = [rng.uniform(-spec.walk_speed, spec.walk_speed) * (rng.uniform() < spec.walk_prob)
          for _ in scene.labels]
  sway = rng.uniform([0.1, 0.05, 0, 0], [0.5, 0.3, 2 * np.pi, 2 * np.pi], (len(people), 4))
  portrait_rngs = rng.spawn(len(people))
  portraits, resized = {}, {}
  frames, frame_counts, face_counts = [], collections.Counter(), collections.Counter()
  with write_video(os.path.join(directory, name + ".mp4"), fps, (w, h)) as write:
    for f in range(n):
      t = f / fps
      s, cx, cy = path[f]
      warp = np.float32([[s, 0, w / 2 - s * cx], [0, s, h / 2 - s * cy]])
      image = cv2.warpAffine(scene.background, warp, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT).astype(np.float32)
      placed = []
      for track, p in enumerate(people):
        base = scene.perspective(p.y, p.stature)
        freq_x, freq_y, phase_x, phase_y = sway[track]
        x = p.x + base * (walk[p.group] * t + spec.sway * math.sin(2 * np.pi * freq_x * t + phase_x))
        y = p.y + base * 0.3 * spec.sway * math.sin(2 * np.pi * freq_y * t + phase_y)
        size = s * scene.perspective(y, p.stature)
        fx, fy = s * (x - cx) + w / 2, s * (y - cy) + h / 2
        if -1.2 * size < fx < w + 1.2 * size and -1.2 * size < fy < h + 1.2 * size:
          placed.append((y, track, fx, fy, size))
      shown, groups = [], []
      for _, track, fx, fy, size in sorted(placed):
        emotion, start = emotions[track][f]
        if (track, start) not in portraits:
          portraits[track, start] = faces.draw_portrait(
              portrait_rngs[track], people[track].identity, emotion, look, background=False)
        quantised = round(size * 4) / 4
        cached = resized.get((track, start))
        if cached is None or cached[0] != quantised:
          cached = resized[track, start] = (quantised, crowds.cut_out(portraits[track, start], quantised))
        hit = crowds.paste(image, cached[1], fx, fy)
        if hit is not None:
          shown.append(crowds.to_face(*hit, emotion, track))
          groups.append(people[track].group)
      if occlusions[f]:
        start, length = occlusions[f]
        _occluder(image, occluders[start], (f - start + 0.5) / length)
      image = np.clip(image, 0, 255).astype(np.uint8)
      streak = max(shake, int(rng.integers(9, 25)) if blurs[f] else 0)
      if streak:
        image = crowds.motion_blur(rng, image, streak)
      write(faces.photograph(rng, image, look, camera))
      frame = crowds.frame_annotation(f, shown, groups, [row[f] for row in labels])
      frames.append(frame)
      if frame.label:
        frame_counts[frame.label] += 1
      for group in frame.groups:
        face_counts[group.label] += len(group.faces)
  label = (crowds.prevailing(frame_counts, face_counts)
           or crowds.prevailing(collections.Counter(labels[p.group][0] for p in people), {}))
  video = annotations.Video(video=name + ".mp4", fps=float(fps), num_frames=n, width=w, height=h,
                            label=label, frames=frames)
  annotations.save(video, os.path.join(directory, name + ".json"))
  return video
