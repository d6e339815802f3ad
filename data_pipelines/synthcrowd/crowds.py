"""Procedural crowd frames: people in spatial groups on a scene, with GECV-shaped labels.

A scene is a background (stands, street or hall) and people placed in
clusters, one cluster per group. Sizes follow a ground-plane perspective: the
face height grows linearly with the image row, from the back of the crowd to
the front, and people are drawn back to front so nearer ones occlude farther
ones. Each group has a label (positive, negative, neutral); each member shows
an emotion of that valence with the group's agreement rate and any other
emotion otherwise, so the label is a genuine aggregate that no single face
decides (and tiny faces hardly show theirs). The frame label is the
prevailing group label (`prevailing`). Everything random comes from the
caller's numpy Generator: a seed reproduces image and annotation exactly.

Faces are rendered by faces.py: each person is drawn once as a cut-out and
resized to its place, which is what lets videos.py move people cheaply.
"""

import collections
import dataclasses
import math
from typing import NamedTuple

import cv2
import numpy as np

from data_pipelines import annotations
from data_pipelines.synthcrowd import faces
from emoflow.labels import EMOTION_VALENCE, EMOTIONS, GROUP_EMOTIONS

_GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))


@dataclasses.dataclass(frozen=True)
class CrowdDifficulty:
  """Every knob of a crowd frame; the defaults are the training mix.

  Ranges are (low, high), sampled per frame (per group for agreement).
  Face sizes are head heights in frame pixels at camera zoom 1.
  """

  size: tuple[int, int] = (640, 360)  # frame (width, height)
  num_faces: tuple[int, int] = (2, 200)  # people placed, log-uniform; off-frame ones drop out
  num_groups: tuple[int, int] = (1, 6)
  spacing: tuple[float, float] = (0.9, 1.5)  # between neighbours, face heights; low = dense
  agreement: tuple[float, float] = (0.6, 0.9)  # P(a member shows the group's valence)
  face_px: tuple[float, float] = (8, 120)  # the back and front of the largest depth range
  au_intensity: tuple[float, float] = (0.4, 1.0)
  occlusion: float = 0.1  # P(a hand, scarf, hat or object over a face)
  motion_blur_prob: float = 0.15
  motion_blur_px: tuple[int, int] = (3, 11)  # length of the blur streak
  blur_sigma: tuple[float, float] = (0.0, 0.8)
  noise_sigma: tuple[float, float] = (0.0, 5.0)
  jpeg_prob: float = 0.5
  jpeg_quality: tuple[int, int] = (40, 90)

  def __post_init__(self):
    for name in ("num_faces", "num_groups", "spacing", "agreement", "face_px",
                 "au_intensity", "motion_blur_px", "blur_sigma", "noise_sigma", "jpeg_quality"):
      low, high = getattr(self, name)
      if not 0 <= low <= high:
        raise ValueError(f"CrowdDifficulty.{name} must be 0 <= low <= high, got {(low, high)}")
    if min(self.size) < 16 or self.num_faces[0] < 1 or self.num_groups[0] < 1 or self.face_px[0] < 2:
      raise ValueError("CrowdDifficulty needs a frame of at least 16 px, 1 face, 1 group and "
                       "faces of at least 2 px")
    if self.agreement[1] > 1:
      raise ValueError(f"CrowdDifficulty.agreement must lie in [0, 1], got {self.agreement}")

  def face_difficulty(self) -> faces.FaceDifficulty:
    """The face renderer's knobs: expression and occluders per face, camera per frame."""
    return faces.FaceDifficulty(
        au_intensity=self.au_intensity, occluder_prob=self.occlusion,
        blur_sigma=self.blur_sigma, noise_sigma=self.noise_sigma,
        jpeg_prob=self.jpeg_prob, jpeg_quality=self.jpeg_quality)


@dataclasses.dataclass(frozen=True)
class Person:
  """One member of the crowd: who, where (scene pixels) and the emotion shown first."""

  identity: faces.Identity
  x: float  # head centre, scene pixels
  y: float
  stature: float  # face height relative to the perspective at its row
  group: int
  emotion: int  # index into EMOTIONS


@dataclasses.dataclass(frozen=True)
class Perspective:
  """Face height as a linear function of the image row (a ground plane), clipped to [low, high]."""

  row_back: float
  row_front: float
  px_back: float
  px_front: float
  low: float
  high: float

  @property
  def slope(self) -> float:
    return (self.px_front - self.px_back) / (self.row_front - self.row_back)

  def __call__(self, y: float, stature: float = 1.0) -> float:
    """Face height in pixels of a head centred on row y."""
    px = self.px_back + self.slope * (y - self.row_back)
    return float(np.clip(px * stature, self.low, self.high))


@dataclasses.dataclass(frozen=True)
class Scene:
  """A crowd to photograph: background, people (index = track id) and group labels."""

  background: np.ndarray  # uint8 [H, W, 3]
  people: tuple  # (Person,)
  labels: tuple  # group label per group
  agreement: tuple  # per group
  perspective: Perspective


def member_emotion(rng: np.random.Generator, label: str, agreement: float) -> int:
  """A group member's emotion: of the group's valence with P(agreement), else any other."""
  agree = rng.uniform() < agreement
  pool = [i for i, e in enumerate(EMOTIONS) if (EMOTION_VALENCE[e] == label) == agree]
  return pool[rng.integers(len(pool))]


def prevailing(counts: dict, tiebreak: dict) -> str | None:
  """The label with the most `counts`; ties go to the larger `tiebreak`, then GROUP_EMOTIONS order.

  None when nothing was counted.
  """
  if not counts:
    return None
  return max(counts, key=lambda k: (counts[k], tiebreak.get(k, 0), -GROUP_EMOTIONS.index(k)))


def frame_annotation(index: int, faces_shown: list, groups: list, labels) -> annotations.Frame:
  """The Frame of the visible faces (annotations.Face) and their group indices.

  A group appears when any member is visible; its box encloses its visible
  faces. The frame label is the prevailing group label by number of visible
  faces; a tie goes to the label whose faces cover more area (nearer faces
  are the salient ones).
  """
  members = collections.defaultdict(list)
  for i, group in enumerate(groups):
    members[group].append(i)
  frame_groups, counts, area = [], collections.Counter(), collections.Counter()
  for group, indices in sorted(members.items()):
    boxes = np.array([faces_shown[i].box for i in indices])
    label = labels[group]
    frame_groups.append(annotations.Group(
        box=[*map(float, boxes[:, :2].min(0)), *map(float, boxes[:, 2:].max(0))],
        label=label, faces=indices))
    counts[label] += len(indices)
    area[label] += float(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1).sum())
  return annotations.Frame(index=index, label=prevailing(counts, area), faces=faces_shown,
                           groups=frame_groups)


# --- scene ---------------------------------------------------------------------


def _log_uniform(rng, low, high):
  return math.exp(rng.uniform(math.log(low), math.log(high)))


def _shade(rng, img):
  """Low-frequency lighting variation over a background."""
  h, w = img.shape[:2]
  field = rng.uniform(0.8, 1.15, (3, 5)).astype(np.float32)
  return np.clip(img * cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)[..., None], 0, 255)


def _converging(img, vanish, rows, xs, colour, width):
  """Lines from the vanishing point through (xs, rows[0]) down to rows[1]."""
  vx, vy = vanish
  t = (rows[1] - vy) / max(rows[0] - vy, 1e-3)
  for x in xs:
    end = (round(vx + (x - vx) * t), round(rows[1]))
    cv2.line(img, (round(x), round(rows[0])), end, colour, width, cv2.LINE_AA)


def _stands(rng, w, h, top, vanish, size_at):
  """Tiers of seats receding to the back, aisles converging, a roof and boards above."""
  seat, riser = rng.uniform(30, 230, 3), rng.uniform(40, 140, 3)
  img = np.empty((h, w, 3), np.float32)
  img[:] = riser
  img[:max(0, int(top))] = rng.uniform(10, 90, 3)  # roof shadow
  board = (int(top) - max(4, int(0.06 * h)), int(top))
  for x in range(0, w, int(rng.integers(40, 120))):
    cv2.rectangle(img, (x, board[0]), (x + 200, board[1]), rng.uniform(0, 255, 3).tolist(), -1)
  y = max(top, 0.0)
  while y < h:
    step = max(3.0, 0.9 * size_at(y))
    cv2.rectangle(img, (0, round(y)), (w, round(y + 0.4 * step)),
                  (seat * rng.uniform(0.85, 1.1)).tolist(), -1)
    y += step
  _converging(img, vanish, (top, h), np.linspace(-w, 2 * w, int(rng.integers(3, 9))),
              (riser * 0.7).tolist(), 3)
  return img


def _street(rng, w, h, top, vanish, size_at):
  """Sky, a row of buildings with windows, and a road whose lines converge."""
  img = np.empty((h, w, 3), np.float32)
  img[:] = rng.uniform(120, 235, 3) * [0.8, 0.9, 1.0]  # sky
  ground = int(np.clip(top + 0.5 * size_at(top), 0, h))
  x = -int(rng.integers(0, 40))
  while x < w:
    bw = int(rng.integers(40, 160))
    roof = int(rng.uniform(0, max(1, ground - 10)))
    wall = rng.uniform(50, 210, 3)
    cv2.rectangle(img, (x, roof), (x + bw, ground), wall.tolist(), -1)
    pane = max(3, int(0.35 * size_at(ground)))
    for wy in range(roof + pane, ground - pane, 2 * pane):
      for wx in range(x + pane, x + bw - pane, 2 * pane):
        cv2.rectangle(img, (wx, wy), (wx + pane, wy + pane), (wall * rng.uniform(0.3, 1.3)).tolist(), -1)
    x += bw
  img[ground:] = rng.uniform(60, 150) * np.ones(3)
  _converging(img, vanish, (ground, h), np.linspace(-w, 2 * w, 7), (225, 225, 210), 2)
  return img


def _hall(rng, w, h, top, vanish, size_at):
  """A wall with panels and lights above a tiled floor."""
  wall = rng.uniform(60, 230, 3)
  img = np.empty((h, w, 3), np.float32)
  img[:] = wall
  floor = int(np.clip(top + 0.3 * size_at(top), 0, h))
  for x in range(int(rng.integers(0, 60)), w, int(rng.integers(60, 180))):
    panel = (x, int(rng.uniform(0.1, 0.5) * max(floor, 1)))
    cv2.rectangle(img, panel, (x + int(rng.integers(20, 60)), floor), (wall * 0.8).tolist(), -1)
  for x in np.linspace(0, w, int(rng.integers(2, 7))):
    cv2.ellipse(img, (int(x), 4), (18, 6), 0, 0, 360, (255, 250, 230), -1, cv2.LINE_AA)
  img[floor:] = rng.uniform(40, 200, 3)
  _converging(img, vanish, (floor, h), np.linspace(-w, 2 * w, 15), (img[-1, 0] * 0.75).tolist(), 1)
  return img


BACKGROUNDS = {"stands": _stands, "street": _street, "hall": _hall}


def _background(rng, w, h, perspective):
  """A background of a random kind whose lines converge on the perspective's horizon."""
  p = perspective
  horizon = p.row_back - p.px_back / p.slope if p.slope > 1e-6 else -h
  top = p.row_back - 0.8 * p.px_back  # above the heads of the back row
  vanish = (rng.uniform(0.3, 0.7) * w, max(horizon, top - h))
  kind = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
  img = BACKGROUNDS[kind](rng, w, h, top, vanish, perspective)
  return _shade(rng, img).astype(np.uint8)


def sample_scene(rng: np.random.Generator, difficulty: CrowdDifficulty = CrowdDifficulty()) -> Scene:
  """Background, perspective, groups and their people, before anything is photographed.

  The number of people N is drawn first; the front face size is then chosen
  so that N people at the drawn spacing roughly fill the crowd's rows, so
  large crowds are small and a few people fill the frame.
  """
  w, h = difficulty.size
  d = difficulty
  num = int(_log_uniform(rng, d.num_faces[0], d.num_faces[1] + 1))
  num = min(num, d.num_faces[1])
  num_groups = int(rng.integers(d.num_groups[0], min(d.num_groups[1], num) + 1))
  spacing = rng.uniform(*d.spacing)
  row_back, row_front = rng.uniform(0.12, 0.45) * h, rng.uniform(0.8, 1.0) * h
  ratio = _log_uniform(rng, 0.08, 0.7)  # back face size / front face size
  fill = w * (row_front - row_back) * rng.uniform(0.25, 0.7)
  px_front = math.sqrt(fill / num) / (spacing * (1 + ratio) / 2)
  px_front = float(np.clip(px_front, *d.face_px))
  px_back = float(np.clip(ratio * px_front, d.face_px[0], px_front))
  size_at = Perspective(row_back, row_front, px_back, px_front, *map(float, d.face_px))
  background = _background(rng, w, h, size_at)
  shares = rng.dirichlet(np.full(num_groups, 2.0))
  sizes = 1 + rng.multinomial(num - num_groups, shares)
  labels = tuple(GROUP_EMOTIONS[i] for i in rng.integers(len(GROUP_EMOTIONS), size=num_groups))
  agreement = tuple(float(a) for a in rng.uniform(*d.agreement, num_groups))
  slope = size_at.slope
  step = 0.55 * spacing  # Vogel spiral radius step: neighbours about `spacing` apart
  centres, people = [], []
  for group, n in enumerate(sizes):
    # The farthest-from-the-others of a few candidates: separate groups.
    candidates = np.c_[rng.uniform(0, w, 12), rng.uniform(row_back, row_front, 12)]
    radii = np.array([step * math.sqrt(n) * size_at(y) for y in candidates[:, 1]])
    clearance = np.full(len(candidates), np.inf)
    for (cx, cy), radius in centres:
      gap = np.hypot(candidates[:, 0] - cx, (candidates[:, 1] - cy) / 0.7) - radius - radii
      clearance = np.minimum(clearance, gap)
    best = int(np.argmax(clearance))
    centres.append((candidates[best], radii[best]))
    cx, cy = candidates[best]
    k = np.arange(n) + 0.5
    angle = k * _GOLDEN_ANGLE + rng.uniform(0, 2 * np.pi)
    u = step * np.sqrt(k) * np.cos(angle) + rng.normal(0, 0.12, n)
    v = 0.7 * step * np.sqrt(k) * np.sin(angle) + rng.normal(0, 0.08, n)
    # Offsets are in local face heights: integrate the perspective along the column.
    s = size_at(cy)
    ys = cy + (s * np.expm1(slope * v) / slope if slope > 1e-9 else s * v)
    for x_off, y in zip(u, ys):
      people.append(Person(identity=faces.sample_identity(rng), x=float(cx + x_off * size_at(y)),
                           y=float(y), stature=float(rng.uniform(0.92, 1.08)), group=group,
                           emotion=member_emotion(rng, labels[group], agreement[group])))
  return Scene(background=background, people=tuple(people), labels=labels, agreement=agreement,
               perspective=size_at)


# --- photographing -------------------------------------------------------------


class Cutout(NamedTuple):
  """A person resized for compositing: premultiplied colour, what shows through, head geometry."""

  colour: np.ndarray  # float32 [h, w, 3], premultiplied by alpha
  keep: np.ndarray  # float32 [h, w, 3], 1 - alpha per channel (a broadcast multiply is 8x slower)
  box: np.ndarray  # float32 [4], head box in cut-out pixels
  landmarks: np.ndarray  # float32 [5, 2]


def cut_out(portrait: faces.Portrait, face_px: float) -> Cutout:
  """A background-free portrait resized so the head is `face_px` tall."""
  rgba, box, landmarks = faces.resize_portrait(portrait, face_px)
  rgba = rgba.astype(np.float32)
  keep = np.repeat(1 - rgba[..., 3:] / 255, 3, axis=2)
  return Cutout(np.ascontiguousarray(rgba[..., :3]), keep, box, landmarks)


def paste(image: np.ndarray, cutout: Cutout, cx: float, cy: float):
  """Composites `cutout` onto `image` (float32 RGB, in place) with its head centred near (cx, cy).

  The head lands on whole pixels; the returned head box and landmarks (image
  pixels) are exact. None when the head box lies entirely outside the image
  (such faces are not annotated).
  """
  h, w = image.shape[:2]
  box = cutout.box
  dx, dy = round(cx - (box[0] + box[2]) / 2), round(cy - (box[1] + box[3]) / 2)
  x0, y0 = max(dx, 0), max(dy, 0)
  x1, y1 = min(dx + cutout.keep.shape[1], w), min(dy + cutout.keep.shape[0], h)
  if x0 < x1 and y0 < y1:
    region = image[y0:y1, x0:x1]
    region *= cutout.keep[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    region += cutout.colour[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
  box = box + np.float32([dx, dy, dx, dy])
  if box[2] < 0 or box[3] < 0 or box[0] > w - 1 or box[1] > h - 1:
    return None
  return box, cutout.landmarks + np.float32([dx, dy])


def motion_blur(rng: np.random.Generator, image: np.ndarray, length: int) -> np.ndarray:
  """A straight blur streak `length` pixels long in a random direction."""
  length = max(1, int(length))
  kernel = np.zeros((length, length), np.float32)
  c = (length - 1) / 2
  dx, dy = c * math.cos(rng.uniform(0, math.pi)), c * math.sin(rng.uniform(0, math.pi))
  cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA)
  return cv2.filter2D(image, -1, kernel / kernel.sum())


def to_face(box, landmarks, emotion: int, track: int) -> annotations.Face:
  return annotations.Face(box=[round(float(v), 2) for v in box],
                          landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in landmarks],
                          emotion=EMOTIONS[emotion], track=track)


def render_crowd(rng: np.random.Generator,
                 difficulty: CrowdDifficulty = CrowdDifficulty()) -> tuple[np.ndarray, annotations.Frame]:
  """One crowd photograph and its annotation (frame index 0, tracks = person indices).

  Returns uint8 RGB [H, W, 3] and an annotations.Frame whose faces are listed
  back to front; faces partly outside the frame keep their unclipped boxes.
  """
  scene = sample_scene(rng, difficulty)
  look = difficulty.face_difficulty()
  h, w = scene.background.shape[:2]
  image = scene.background.astype(np.float32)
  shown, groups = [], []
  for track in sorted(range(len(scene.people)), key=lambda i: scene.people[i].y):
    person = scene.people[track]
    size = scene.perspective(person.y, person.stature)
    reach = size * 1.2  # the cut-out reaches about this far beyond the head centre
    if not (-reach < person.x < w + reach and -reach < person.y < h + reach):
      continue
    portrait = faces.draw_portrait(rng, person.identity, person.emotion, look, background=False)
    placed = paste(image, cut_out(portrait, size), person.x, person.y)
    if placed is not None:
      shown.append(to_face(*placed, person.emotion, track))
      groups.append(person.group)
  image = np.clip(image, 0, 255).astype(np.uint8)
  if rng.uniform() < difficulty.motion_blur_prob:
    image = motion_blur(rng, image, rng.integers(difficulty.motion_blur_px[0],
                                                 difficulty.motion_blur_px[1] + 1))
  image = faces.photograph(rng, image, look)
  return image, frame_annotation(0, shown, groups, scene.labels)
