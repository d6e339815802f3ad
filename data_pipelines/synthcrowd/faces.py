"""Procedural faces whose expression is drawn from facial action units (AUs).

SynthCrowd's training faces for the 8-way emotion CNN. A face is drawn with
anti-aliased OpenCV primitives on a fixed high-resolution canvas, where each
AU of the emotion (paper Table 4, `emoflow.labels.EMOTION_ACTION_UNITS`)
visibly moves brows, lids, nose or lips; then the whole canvas is resized so
the face is `face_px` tall and degraded (blur, noise, JPEG) at that size. A
large face therefore shows its expression clearly, while an 8-pixel face is
as ambiguous after alignment as a real one: the information is gone, not
hidden. Everything random comes from the caller's numpy Generator, so a seed
reproduces the image bit for bit.

render_face draws a new person on a background. Crowds use the parts: a
person (sample_identity) is drawn once per expression as a cut-out
(draw_portrait without background), then resized per video frame
(resize_portrait), composited onto the scene, and the whole frame is
photographed once (photograph).
"""

import dataclasses
import math

import cv2
import numpy as np

from emoflow.labels import EMOTION_ACTION_UNITS, EMOTIONS

# The AUs the renderer draws: the union of the Table 4 AUs.
ACTION_UNITS = (1, 2, 4, 5, 7, 9, 10, 12, 15, 17, 20, 24, 25, 26)

# Face heights [low, high) in pixels that results are reported by.
FACE_SIZE_BUCKETS = ((8, 16), (16, 32), (32, 64), (64, 121))

_CANVAS = 224  # side of the drawing canvas, pixels
_FACE_H = 120  # face height on the canvas before a jaw drop lengthens it
_TOP = 44  # canvas row of the top of the head
_PIVOT_V = 0.55  # head roll turns about this height on the midline
_SHIFT = 4  # fractional bits of the fixed-point coordinates given to cv2
_FADE = 40  # bottom canvas rows over which a background-free portrait fades out
_AA = cv2.LINE_AA


@dataclasses.dataclass(frozen=True)
class FaceDifficulty:
  """How hard a rendered face is to read; the defaults are the training mix.

  Intensities are in [0, 1]; blur and noise are in output pixels and uint8
  levels, so they hit small faces harder, as a camera would.
  """

  au_intensity: tuple[float, float] = (0.4, 1.0)  # the emotion's own AUs
  distractor_prob: float = 0.08  # each other AU, independently
  distractor_intensity: tuple[float, float] = (0.05, 0.3)
  max_roll_deg: float = 15.0
  max_yaw: float = 0.3  # radians; the head turns as a cylinder
  max_light: float = 0.35  # slope of the shading gradient across the image
  occluder_prob: float = 0.15  # a hand, scarf, hat or object over the face
  blur_sigma: tuple[float, float] = (0.0, 0.8)
  noise_sigma: tuple[float, float] = (0.0, 6.0)
  jpeg_prob: float = 0.5
  jpeg_quality: tuple[int, int] = (30, 90)

  @classmethod
  def clean(cls) -> "FaceDifficulty":
    """No occluders, blur, noise or JPEG; identity, pose and AU variation stay."""
    return cls(occluder_prob=0.0, blur_sigma=(0.0, 0.0), noise_sigma=(0.0, 0.0), jpeg_prob=0.0)


@dataclasses.dataclass(frozen=True)
class RenderedFace:
  """One rendered face and its ground truth, all in `image` pixels.

  `landmarks` are left eye centre, right eye centre, nose tip, left and right
  mouth corner (image-left first, the emoflow.vision.align order).
  `action_units` maps each AU drawn to its intensity; the AUs not prototypical
  of the emotion are listed in `distractors`.
  """

  image: np.ndarray  # uint8 [H, W, 3] RGB, the face with background margin
  box: np.ndarray  # float32 [4] x0, y0, x1, y1 of the head (top of skull to chin)
  landmarks: np.ndarray  # float32 [5, 2] (x, y)
  emotion: int  # index into emoflow.labels.EMOTIONS
  face_px: int  # upright head height in pixels, the size bucket key
  action_units: dict  # AU number -> intensity in [0, 1]
  distractors: tuple = ()  # AUs in action_units that are not the emotion's


def sample_face_px(rng: np.random.Generator, low: int = 8, high: int = 120) -> int:
  """A face height in [low, high], log-uniform: each octave equally often."""
  value = math.exp(rng.uniform(math.log(low), math.log(high + 1)))
  return min(int(value), high)


def size_bucket(face_px: int) -> str:
  """Name of the FACE_SIZE_BUCKETS entry holding face_px, e.g. '8-15px'."""
  for low, high in FACE_SIZE_BUCKETS:
    if low <= face_px < high:
      return f"{low}-{high - 1}px"
  raise ValueError(f"face_px {face_px} is outside the buckets {FACE_SIZE_BUCKETS}")


# --- drawing helpers -----------------------------------------------------------


def _fixed(points):
  return [np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32)]


def _rgb(colour):
  """An opaque cv2 colour: RGB images ignore the alpha, RGBA canvases get 255."""
  return tuple(min(255.0, max(0.0, float(c))) for c in colour) + (255.0,)


def _fill(img, points, colour):
  cv2.fillPoly(img, _fixed(points), _rgb(colour), _AA, _SHIFT)


def _line(img, points, colour, width, closed=False):
  cv2.polylines(img, _fixed(points), closed, _rgb(colour), max(1, round(width)), _AA, _SHIFT)


def _ellipse(img, centre, axes, angle, colour, width=-1):
  """A filled (width -1) or outlined ellipse; centre and axes in pixels."""
  scale = 1 << _SHIFT
  centre = (round(centre[0] * scale), round(centre[1] * scale))
  axes = (max(1, round(axes[0] * scale)), max(1, round(axes[1] * scale)))
  cv2.ellipse(img, centre, axes, float(angle), 0, 360, _rgb(colour), width, _AA, _SHIFT)


def _arc(n, y_left, y_right, y_mid, power=2.0):
  """n heights along a curve: linear between the ends plus a bump reaching y_mid."""
  t = np.linspace(-1.0, 1.0, n)
  base = y_left + (y_right - y_left) * (t + 1) / 2
  return base + (y_mid - (y_left + y_right) / 2) * (1 - np.abs(t) ** power)


def _ribbon(centre, widths):
  """Polygon of a stroke of varying width around a centreline [n, 2] (pixels)."""
  tangent = np.gradient(centre, axis=0)
  tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
  normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1) * (widths[:, None] / 2)
  return np.concatenate([centre + normal, (centre - normal)[::-1]])


class _Frame:
  """Maps face coordinates to canvas pixels.

  Face coordinates are in face heights: dx to the right of the midline, v down
  from the top of the head. Yaw turns the features on a cylinder of the face's
  half-width (`depth`, in half-widths, moves protruding points such as the
  nose tip further sideways); roll then turns everything, body included,
  about a point on the midline. Drawing the roll, rather than warping the
  canvas, keeps every edge anti-aliased once.
  """

  def __init__(self, half_width, yaw, roll_deg, jaw):
    self.half_width = half_width
    self.yaw = yaw
    self.roll = roll_deg  # degrees, clockwise on screen like cv2.ellipse angles
    self.jaw = jaw  # extra chin length from a jaw drop, face heights
    self._sin_yaw = math.sin(yaw)
    self._cos = _FACE_H * math.cos(math.radians(roll_deg))
    self._sin = _FACE_H * math.sin(math.radians(roll_deg))
    self._pivot = (_CANVAS / 2, _TOP + _PIVOT_V * _FACE_H)

  def plain(self, x, v):
    """Pixels of points at x, v (face heights) with roll but no yaw."""
    x = np.asarray(x, np.float64)
    v = np.asarray(v, np.float64) - _PIVOT_V
    px = self._pivot[0] + self._cos * x - self._sin * v
    py = self._pivot[1] + self._sin * x + self._cos * v
    return np.stack([px, py], -1)

  def __call__(self, dx, v, depth=0.0):
    """Pixels of face-surface points at dx, v, turned by yaw and roll."""
    u = np.minimum(np.maximum(np.asarray(dx, np.float64) / self.half_width, -1.0), 1.0)
    x = self.half_width * (np.sin(np.arcsin(u) + self.yaw) + depth * self._sin_yaw)
    return self.plain(x, v)

  def px(self, length):
    """Canvas pixels of a length in face heights."""
    return _FACE_H * length

  def head(self, taper, n=48):
    """Outline of the head: an ellipse whose lower half narrows to the chin."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    s = np.sin(theta)
    lower = s > 0
    x = self.half_width * np.cos(theta) * (1 - taper * np.where(lower, s, 0) ** 2)
    return self.plain(x, 0.5 + np.where(lower, 0.5 + self.jaw, 0.5) * s)


# --- identity and expression ---------------------------------------------------

_HAIR_COLOURS = np.array([
    [25, 20, 18], [55, 38, 28], [95, 65, 40], [185, 150, 95],
    [140, 65, 35], [150, 148, 145], [215, 212, 205], [60, 40, 90],
], np.float64)
_IRIS_COLOURS = np.array([[70, 45, 25], [40, 28, 20], [70, 110, 150], [80, 110, 70]], np.float64)
_HAIR_STYLES = ("bald", "short", "short", "long", "long", "fringe")


def _skin_tone(rng):
  tone = rng.uniform()
  skin = (1 - tone) * np.array([85.0, 57, 42]) + tone * np.array([246.0, 214, 190])
  return np.clip(skin * rng.uniform(0.93, 1.07, 3), 30, 255)


@dataclasses.dataclass(frozen=True)
class Identity:
  """Who is in the picture: everything about the face but the expression.

  Geometry is in face heights (see _Frame), colours are RGB.
  """

  half_width: float
  taper: float
  eye_v: float
  eye_dx: float
  eye_w: float
  eye_tilt: float
  brow_width: float
  nose_v: float
  nose_w: float
  mouth_v: float
  mouth_w: float
  lip_upper: float
  lip_lower: float
  fold: float  # baseline depth of the nasolabial folds
  gaze: tuple
  skin: np.ndarray
  lips: np.ndarray
  hair: np.ndarray
  iris: np.ndarray
  clothes: np.ndarray
  hair_style: str
  hairline: float  # v of the hairline on the midline; 0 when bald
  hair_volume: float
  glasses: np.ndarray | None


def sample_identity(rng: np.random.Generator) -> Identity:
  """A random person: face shape, colouring, hair and accessories."""
  skin = _skin_tone(rng)
  eye_v = rng.uniform(0.43, 0.47)
  mouth_v = eye_v + rng.uniform(0.31, 0.35)
  style = _HAIR_STYLES[rng.integers(len(_HAIR_STYLES))]
  hairline = rng.uniform(0.13, 0.22)
  return Identity(
      half_width=rng.uniform(0.35, 0.41),
      taper=rng.uniform(0.1, 0.35),
      eye_v=eye_v,
      eye_dx=rng.uniform(0.155, 0.18),
      eye_w=rng.uniform(0.07, 0.082),
      eye_tilt=rng.uniform(-0.004, 0.012),
      brow_width=rng.uniform(0.014, 0.03),
      nose_v=eye_v + rng.uniform(0.45, 0.52) * (mouth_v - eye_v),
      nose_w=rng.uniform(0.045, 0.06),
      mouth_v=mouth_v,
      mouth_w=rng.uniform(0.105, 0.13),
      lip_upper=rng.uniform(0.014, 0.024),
      lip_lower=rng.uniform(0.02, 0.032),
      fold=rng.uniform(0.0, 0.3),
      gaze=(rng.uniform(-0.15, 0.15), rng.uniform(-0.08, 0.08)),
      skin=skin,
      lips=np.clip(skin * np.array([0.82, 0.58, 0.6]) + np.array([28.0, 6, 12]), 0, 255),
      hair=_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.8, 1.15),
      iris=_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))],
      clothes=rng.uniform(20, 235, 3),
      hair_style=style,
      hairline={"bald": 0.0, "fringe": 0.24}.get(style, hairline),
      hair_volume=rng.uniform(0.02, 0.08),
      glasses=rng.uniform(10, 120, 3) if rng.uniform() < 0.15 else None,
  )


def _sample_action_units(rng, emotion, difficulty):
  """The emotion's Table 4 AUs at full range plus weak random distractors."""
  units = {au: float(rng.uniform(*difficulty.au_intensity))
           for au in EMOTION_ACTION_UNITS[EMOTIONS[emotion]]}
  distractors = []
  for au in ACTION_UNITS:
    if au not in units and rng.uniform() < difficulty.distractor_prob:
      units[au] = float(rng.uniform(*difficulty.distractor_intensity))
      distractors.append(au)
  return units, tuple(distractors)


# --- scene parts ---------------------------------------------------------------


def _background(rng):
  """A smooth colour field with a coarse texture and a few shapes."""
  coarse = rng.uniform(20, 235, (3, 3, 3)).astype(np.float32)
  coarse = coarse.mean() + (coarse - coarse.mean()) * rng.uniform(0.2, 0.9)
  img = cv2.resize(coarse, (56, 56), interpolation=cv2.INTER_CUBIC)
  cells = int(rng.integers(6, 40))
  texture = rng.normal(0, rng.uniform(0, 25), (cells, cells, 1)).astype(np.float32)
  img += cv2.resize(texture, (56, 56), interpolation=cv2.INTER_LINEAR)[..., None]
  img = np.clip(img, 0, 255).astype(np.uint8)
  img = cv2.resize(img, (_CANVAS, _CANVAS), interpolation=cv2.INTER_LINEAR)
  for _ in range(int(rng.integers(0, 5))):
    colour = rng.uniform(0, 255, 3)
    centre = rng.uniform(0, _CANVAS, 2)
    size = rng.uniform(10, 70, 2)
    if rng.uniform() < 0.5:
      _ellipse(img, centre, size, rng.uniform(0, 180), colour)
    else:
      corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]])
      _fill(img, centre + corners * size, colour)
  return img


def _draw_body(img, frame, ident):
  """Shoulders, neck and long hair: what lies behind the head."""
  _ellipse(img, frame.plain(0, 1.42), (frame.px(0.85), frame.px(0.32)), frame.roll,
           ident.clothes)
  neck = 0.5 * ident.half_width
  _fill(img, frame.plain([-neck, neck, neck, -neck], [0.7, 0.7, 1.4, 1.4]), ident.skin * 0.82)
  if ident.hair_style == "long":
    w = ident.half_width + 0.06
    theta = np.linspace(np.pi, 2 * np.pi, 16)
    cap_x = np.append(w * np.cos(theta), [1.05 * w, -1.05 * w])
    bottom = 1.0 + 0.3 * ident.hair_volume / 0.08
    cap_v = np.append(0.5 + (0.5 + ident.hair_volume) * np.sin(theta), [bottom, bottom])
    _fill(img, frame.plain(cap_x, cap_v), ident.hair)


def _draw_head(img, frame, ident):
  """Ears, the skin of the face and the hair on top; returns the head outline."""
  for side in (-1, 1):
    ear = frame.plain(side * (ident.half_width - 0.01), ident.eye_v + 0.07)
    _ellipse(img, ear, (frame.px(0.045), frame.px(0.085)), frame.roll, ident.skin * 0.9)
  outline = frame.head(ident.taper)
  _fill(img, outline, ident.skin)
  _line(img, outline, ident.skin * 0.72, 2, closed=True)
  if ident.hair_style == "bald":
    return outline
  w = ident.half_width + 0.02
  rise = 0.5 + ident.hair_volume
  side_v = ident.eye_v - 0.02
  start = math.asin((0.5 - side_v) / rise)
  theta = np.linspace(np.pi + start, 2 * np.pi - start, 24)
  power = 8.0 if ident.hair_style == "fringe" else 3.5
  xs = np.linspace(1, -1, 17)
  hairline = ident.hairline + (side_v - ident.hairline) * np.abs(xs) ** power
  cap_x = np.concatenate([w * np.cos(theta), 0.99 * w * xs])
  cap_v = np.concatenate([0.5 + rise * np.sin(theta), hairline])
  _fill(img, frame.plain(cap_x, cap_v), ident.hair)
  return outline


def _draw_eye(img, frame, ident, au, side):
  """Sclera, iris and lids of one eye; AU5 widens it, AU7 (AU4, AU9) narrow it."""
  w = ident.eye_w
  upper = w * (0.5 + 0.5 * au[5] - 0.22 * au[7] - 0.08 * au[4] - 0.06 * au[9])
  lower = w * (0.36 + 0.1 * au[5] - 0.2 * au[7])
  dx = side * ident.eye_dx
  xs = np.linspace(-1, 1, 13)
  v = ident.eye_v - ident.eye_tilt * xs * side  # outer corner higher
  top_v = v - upper * (1 - xs**2) ** 0.7
  bottom_v = v + lower * (1 - xs**2) ** 0.9
  top, bottom = frame(dx + xs * w, top_v), frame(dx + xs * w, bottom_v)
  _fill(img, np.concatenate([top, bottom[::-1]]), (238, 236, 228))
  iris_v = ident.eye_v + ident.gaze[1] * w
  radius = 0.5 * w
  centre = frame(dx + ident.gaze[0] * w, iris_v)
  r = frame.px(radius)
  _ellipse(img, centre, (r, r), 0, ident.iris)
  _ellipse(img, centre, (0.45 * r, 0.45 * r), 0, (12, 10, 10))
  _ellipse(img, centre + [-0.3 * r, -0.35 * r], (0.18 * r, 0.18 * r), 0, (250, 250, 250))
  # Skin over whatever of the iris lies outside the lids.
  ceiling = min(top_v.min(), iris_v - radius) - 0.01
  floor = max(bottom_v.max(), iris_v + radius) + 0.01
  ends = dx + np.array([1.05, -1.05]) * w
  _fill(img, np.concatenate([top, frame(ends, ceiling)]), ident.skin)
  _fill(img, np.concatenate([bottom, frame(ends, floor)]), ident.skin)
  inner = slice(2, -2)
  crease_v = v[inner] - (upper + 0.3 * w) * (1 - xs[inner] ** 2) ** 0.7
  _line(img, frame(dx + xs[inner] * w, crease_v), ident.skin * 0.78, 1)
  _line(img, top, (28, 20, 18), frame.px(0.018))
  _line(img, bottom, ident.skin * 0.62, 1)
  if au[7] > 0.2:  # the tightened lower lid bulges
    bag = frame(dx + xs[inner] * w, bottom_v[inner] + 0.25 * w)
    _line(img, bag, ident.skin * (1 - 0.25 * au[7]), 1)
  return frame(dx, ident.eye_v)


def _draw_brows(img, frame, ident, au):
  """Brows (AU1 inner up, AU2 outer up, AU4 down and together) and their wrinkles."""
  base = ident.eye_v - 0.085
  inner_v = base - 0.06 * au[1] - 0.01 * au[2] + 0.045 * au[4] + 0.012 * au[9]
  mid_v = base - 0.022 - 0.028 * au[1] - 0.04 * au[2] + 0.025 * au[4]
  outer_v = base - 0.005 * au[1] - 0.06 * au[2] + 0.012 * au[4]
  xs = np.linspace(ident.eye_dx - 0.07 - 0.025 * au[4], ident.eye_dx + 0.085, 11)
  vs = _arc(11, inner_v, outer_v, mid_v, 1.6)
  widths = frame.px(ident.brow_width) * np.linspace(1.0, 0.45, 11)
  colour = np.minimum(ident.hair, 90) * 0.8
  for side in (-1, 1):
    _fill(img, _ribbon(frame(side * xs, vs), widths), colour)
  if au[4] > 0.15:  # vertical furrows between the brows
    for dx in (-0.022, 0.022):
      _line(img, frame([dx, dx * 0.8], [inner_v - 0.015, inner_v + 0.035]),
            ident.skin * (1 - 0.38 * au[4]), 1.5)
  raised = max(au[1], au[2])
  if raised > 0.15:  # horizontal forehead lines; AU2 makes them longer
    half = 0.07 + 0.12 * au[2]
    xs = np.linspace(-half, half, 9)
    for k in range(3):
      v = mid_v - 0.04 - 0.03 * k
      if v > ident.hairline + 0.02:
        _line(img, frame(xs, v - 0.012 * (1 - (xs / half) ** 2)),
              ident.skin * (1 - 0.3 * raised), 1)


def _nose_width(ident, au):
  return ident.nose_w + 0.01 * au[9] + 0.008 * au[10]


def _draw_nose(img, frame, ident, au):
  """Nose tip, alae and nostrils; AU9 wrinkles the bridge, AU9/AU10 lift the nostrils."""
  v = ident.nose_v - 0.012 * au[9] - 0.008 * au[10]
  w = _nose_width(ident, au)
  shade = ident.skin * 0.8
  for side in (-1, 1):
    ala = frame(side * w * np.array([0.5, 0.95, 0.95, 0.6]),
                v + np.array([-0.045, -0.012, 0.012, 0.022]), 0.25)
    _line(img, ala, shade, 1)
    _ellipse(img, frame(side * w * 0.45, v + 0.014, 0.3), (frame.px(0.014), frame.px(0.0065)),
             frame.roll - side * 15, ident.skin * 0.35)
  xs = np.linspace(-0.45, 0.45, 7) * w
  _line(img, frame(xs, v + 0.024 - 0.01 * (xs / w) ** 2, 0.35), shade, 1)
  bridge_side = 1 if frame.yaw >= 0 else -1
  _line(img, frame(bridge_side * np.array([0.035, 0.04, 0.5 * w]),
                   [ident.eye_v + 0.03, v - 0.08, v - 0.045], 0.15), ident.skin * 0.9, 1)
  if au[9] > 0.15:
    xs = np.linspace(-0.04, 0.04, 5)
    for k in range(3):
      row = ident.eye_v + 0.025 + 0.022 * k
      _line(img, frame(xs, row + 0.006 * (xs / 0.04) ** 2, 0.1), ident.skin * (1 - 0.4 * au[9]), 1)
  return frame(0.0, ident.nose_v, 0.35)


def _draw_mouth(img, frame, ident, au):
  """Lips, opening, teeth and the folds and chin around them; returns the corners."""
  half = (ident.mouth_w + 0.028 * au[12] - 0.006 * au[15] + 0.04 * au[20]
          - 0.014 * au[24] - 0.028 * au[26])
  corner_v = (ident.mouth_v - 0.045 * au[12] + 0.04 * au[15] + 0.012 * au[17]
              + 0.006 * au[20] + 0.012 * au[26])
  opening = (0.04 * au[25] + 0.15 * au[26]) * (1 - 0.9 * au[24])
  upper_v = ident.mouth_v - 0.055 * au[10] - 0.1 * opening
  lower_v = ident.mouth_v + 0.9 * opening - 0.012 * au[17]
  upper_v = min(upper_v, lower_v)  # AU17 pushes closed lips up together
  thin = (1 - 0.75 * au[24]) * (1 - 0.3 * au[20]) * (1 - 0.2 * au[12])
  t_upper = ident.lip_upper * thin
  t_lower = ident.lip_lower * thin * (1 + 0.3 * au[17])
  n = 17
  xs = np.linspace(-half, half, n)
  up = _arc(n, corner_v, corner_v, upper_v, 2 + 2 * au[10])
  low = _arc(n, corner_v, corner_v, lower_v, 2 + 1.5 * au[26])
  bow = 0.35 * t_upper * np.exp(-((xs / (0.3 * half)) ** 2))
  outer_up = _arc(n, corner_v, corner_v, upper_v - t_upper, 1.6) + bow
  outer_low = _arc(n, corner_v, corner_v, lower_v + t_lower, 1.8)

  def pts(vs, sl=slice(None)):
    return frame(xs[sl], vs[sl], 0.12)

  fold = min(1.0, ident.fold + 0.9 * au[12] + 0.9 * au[10] + 0.5 * au[9] + 0.3 * au[20])
  nose_w = _nose_width(ident, au)
  for side in (-1, 1):
    fold_x = side * np.array([nose_w + 0.012, nose_w + 0.03, half + 0.035])
    fold_v = np.array([ident.nose_v - 0.005, ident.nose_v + 0.05, corner_v + 0.02])
    _line(img, frame(fold_x, fold_v, 0.1), ident.skin * (1 - 0.3 * fold), 1 + fold)
  middle = slice(4, -4)
  shadow = _arc(n, corner_v, corner_v, lower_v + t_lower + 0.012, 2)
  _line(img, pts(shadow, middle), ident.skin * 0.85, 1.5)
  _fill(img, np.concatenate([pts(outer_up), pts(outer_low)[::-1]]), ident.lips)
  gap = low - up
  if frame.px(gap.max()) > 0.6:
    _fill(img, np.concatenate([pts(up), pts(low)[::-1]]), (58, 18, 24))
    if gap.max() > 0.05:
      central = slice(3, -3)
      _fill(img, np.concatenate([pts(low - 0.25 * gap, central), pts(low, central)[::-1]]),
            (170, 70, 80))
    if gap.max() > 0.03 and au[26] < 0.3:
      lower_teeth = low - np.minimum(0.3 * gap, 0.018)
      _fill(img, np.concatenate([pts(lower_teeth), pts(low)[::-1]]), (222, 218, 205))
    upper_teeth = up + np.minimum(0.6 * gap, 0.03)
    _fill(img, np.concatenate([pts(up), pts(upper_teeth)[::-1]]), (236, 232, 220))
  _line(img, pts(up), ident.lips * 0.55, 1.5)
  if au[17] > 0.15:  # the raised chin bunches up below the lower lip
    chin_x = np.linspace(-0.05, 0.05, 7)
    chin_v = lower_v + t_lower + 0.05 + 0.012 * (1 - (chin_x / 0.05) ** 2)
    _line(img, frame(chin_x, chin_v, 0.12), ident.skin * (1 - 0.35 * au[17]), 1.5)
  return frame(np.array([-half, half]), corner_v, 0.12)


def _draw_glasses(img, frame, ident):
  size = (frame.px(1.6 * ident.eye_w), frame.px(1.15 * ident.eye_w))
  rims = [frame(side * ident.eye_dx, ident.eye_v) for side in (-1, 1)]
  for rim in rims:
    _ellipse(img, rim, size, frame.roll, ident.glasses, 2)
  bridge_v = ident.eye_v - 0.35 * ident.eye_w
  bridge_dx = ident.eye_dx - 1.6 * ident.eye_w
  _line(img, frame([-bridge_dx, bridge_dx], [bridge_v, bridge_v]), ident.glasses, 2)


def _draw_occluder(img, rng, frame, ident):
  """Something over part of the face: a hand, a scarf, a hat or an object."""
  kind = rng.integers(4)
  colour = rng.uniform(20, 235, 3)
  if kind == 0:  # a hand over the mouth, chin or a cheek
    skin = _skin_tone(rng)
    palm_x, palm_v = rng.uniform(-0.25, 0.25), rng.uniform(0.8, 1.0)
    size = rng.uniform(0.1, 0.16)
    tilt = rng.uniform(-30, 30)
    _ellipse(img, frame.plain(palm_x, palm_v), (frame.px(size), frame.px(0.8 * size)),
             frame.roll + tilt, skin)
    for k in range(4):
      finger = frame.plain(palm_x + (k - 1.5) * 0.45 * size, palm_v - 0.9 * size)
      axes = (frame.px(0.22 * size), frame.px(0.6 * size))
      _ellipse(img, finger, axes, frame.roll, skin)
      _ellipse(img, finger, axes, frame.roll, skin * 0.75, 1)
  elif kind == 1:  # a scarf or mask over the lower face
    top = rng.uniform(ident.mouth_v - 0.06, 0.98)
    xs = np.linspace(-0.55, 0.55, 9)
    edge_v = top - 0.03 * np.cos(xs * 2.5)
    _fill(img, frame.plain(np.append(xs, [0.55, -0.55]), np.append(edge_v, [1.6, 1.6])), colour)
  elif kind == 2:  # a hat brim down to the forehead or the brows
    low = rng.uniform(0.18, ident.eye_v - 0.07)
    w = ident.half_width + rng.uniform(0.05, 0.2)
    _fill(img, frame.plain([-w, w, 0.7 * w, -0.7 * w], [low, low, -0.4, -0.4]), colour)
  else:  # an object or another head entering from one side
    side = rng.choice([-1, 1])
    centre = frame.plain(side * rng.uniform(0.35, 0.55), rng.uniform(0.3, 0.9))
    size = frame.px(rng.uniform(0.15, 0.3, 2))
    _ellipse(img, centre, size, rng.uniform(0, 180), colour)


# --- rendering -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Portrait:
  """A person drawn once on the canvas, to be resized to any face size.

  Drawing is the expensive part (about 2 ms), resizing the cheap one, so a
  crowd video draws each person once per expression and only resizes per
  frame. With a background the canvas is RGB; without one it is RGBA with
  premultiplied colour, its alpha the anti-aliased silhouette of head, hair
  and shoulders (faded out towards the bottom edge, where the body is cut),
  ready to composite over a scene. Geometry is in canvas pixels.
  """

  canvas: np.ndarray  # uint8 [224, 224, 3] RGB or [224, 224, 4] premultiplied RGBA
  landmarks: np.ndarray  # float64 [5, 2] (x, y), the RenderedFace order
  outline: np.ndarray  # float64 [n, 2] head outline (skull to chin)
  head_px: float  # upright head height on the canvas; a jaw drop lengthens it
  emotion: int
  action_units: dict
  distractors: tuple


def draw_portrait(rng: np.random.Generator, identity: Identity, emotion: int,
                  difficulty: FaceDifficulty = FaceDifficulty(),
                  background: bool = True) -> Portrait:
  """Draws `identity` showing `emotion` in a random pose (and maybe an occluder).

  Only the expression, pose and occluder are drawn from `rng`, so one
  identity drawn twice is the same person with another expression.
  `difficulty`'s camera degradations are not applied here (see photograph).
  """
  if not 0 <= emotion < len(EMOTIONS):
    raise ValueError(f"emotion index {emotion} is not in [0, {len(EMOTIONS)})")
  units, distractors = _sample_action_units(rng, emotion, difficulty)
  au = {k: units.get(k, 0.0) for k in ACTION_UNITS}
  frame = _Frame(identity.half_width,
                 yaw=rng.uniform(-difficulty.max_yaw, difficulty.max_yaw),
                 roll_deg=rng.uniform(-difficulty.max_roll_deg, difficulty.max_roll_deg),
                 jaw=0.09 * au[26])
  occluded = rng.uniform() < difficulty.occluder_prob
  img = _background(rng) if background else np.zeros((_CANVAS, _CANVAS, 4), np.uint8)
  _draw_body(img, frame, identity)
  outline = _draw_head(img, frame, identity)
  eyes = [_draw_eye(img, frame, identity, au, side) for side in (-1, 1)]
  _draw_brows(img, frame, identity, au)
  nose = _draw_nose(img, frame, identity, au)
  mouth = _draw_mouth(img, frame, identity, au)
  if identity.glasses is not None:
    _draw_glasses(img, frame, identity)
  if occluded:
    _draw_occluder(img, rng, frame, identity)
  if not background:
    fade = np.linspace(1, 0, _FADE, dtype=np.float32)[:, None, None]
    img[-_FADE:] = (img[-_FADE:] * fade).astype(np.uint8)
  return Portrait(canvas=img, landmarks=np.stack([eyes[0], eyes[1], nose, mouth[0], mouth[1]]),
                  outline=outline, head_px=_FACE_H * (1 + frame.jaw), emotion=int(emotion),
                  action_units=units, distractors=distractors)


def resize_portrait(portrait: Portrait, face_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The canvas resized so the head is `face_px` tall: (image, box [4], landmarks [5, 2]).

  Box and landmarks are float32 in the resized image's pixels; the image
  keeps the canvas's channels.
  """
  if face_px <= 0:
    raise ValueError(f"face_px must be positive, got {face_px}")
  side = max(1, round(_CANVAS * face_px / portrait.head_px))
  scale = side / _CANVAS
  shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
  img = cv2.resize(portrait.canvas, (side, side), interpolation=shrink)
  # cv2.resize maps pixel centres: x_out = (x_in + 0.5) * scale - 0.5.
  landmarks = (portrait.landmarks + 0.5) * scale - 0.5
  outline = (portrait.outline + 0.5) * scale - 0.5
  box = np.concatenate([outline.min(0), outline.max(0)])
  return img, box.astype(np.float32), landmarks.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Camera:
  """What stays fixed while one camera films: optical blur, shading, colour gain, noise level.

  A video photographs all its frames with one Camera, so light does not
  flicker; sensor noise and compression are drawn afresh per picture.
  """

  blur_sigma: float
  shading_angle: float  # direction of the brightness gradient, radians
  shading_slope: float
  gain: np.ndarray  # float32 [3], brightness times colour balance
  noise_sigma: float  # uint8 levels


def sample_camera(rng: np.random.Generator, difficulty: FaceDifficulty) -> Camera:
  return Camera(
      blur_sigma=rng.uniform(*difficulty.blur_sigma),
      shading_angle=rng.uniform(0, 2 * np.pi),
      shading_slope=rng.uniform(0, difficulty.max_light),
      gain=(rng.uniform(0.75, 1.15) * (1 + rng.uniform(-0.06, 0.06, 3))).astype(np.float32),
      noise_sigma=rng.uniform(*difficulty.noise_sigma),
  )


def photograph(rng: np.random.Generator, img: np.ndarray, difficulty: FaceDifficulty,
               camera: Camera | None = None) -> np.ndarray:
  """What a camera adds to an RGB image, in its pixels: blur, shading, noise and JPEG.

  Shading is a linear gradient times a brightness and colour gain; noise is
  grey (one value for all channels per pixel), which halves its cost and is
  what dominates in real sensors. Without `camera` a new one is sampled.
  """
  camera = camera or sample_camera(rng, difficulty)
  if camera.blur_sigma > 0.2:
    img = cv2.GaussianBlur(img, (0, 0), camera.blur_sigma)
  h, w = img.shape[:2]
  slope = camera.shading_slope
  xs = np.linspace(-1, 1, w, dtype=np.float32) * np.float32(slope * math.cos(camera.shading_angle))
  ys = np.linspace(-1, 1, h, dtype=np.float32) * np.float32(slope * math.sin(camera.shading_angle))
  out = img.astype(np.float32)
  out *= (1 + ys[:, None] + xs[None, :])[..., None] * camera.gain
  if camera.noise_sigma > 0.5:
    out += rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(camera.noise_sigma)
  img = np.clip(out, 0, 255, out=out).astype(np.uint8)
  if rng.uniform() < difficulty.jpeg_prob:
    quality = int(rng.integers(difficulty.jpeg_quality[0], difficulty.jpeg_quality[1] + 1))
    _, data = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    img = np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
  return img


def render_face(rng: np.random.Generator, emotion: int, face_px: int,
                difficulty: FaceDifficulty = FaceDifficulty()) -> RenderedFace:
  """Renders a new person showing `emotion`, `face_px` pixels tall.

  Args:
    rng: the only source of randomness; equal states give equal images.
    emotion: index into emoflow.labels.EMOTIONS.
    face_px: upright height of the head (top of skull to chin) in output
      pixels; the image has about 0.4 face heights of background around it.
    difficulty: what varies and how much the image is degraded.

  Returns:
    The image with its face box, 5 landmarks and the AUs drawn.
  """
  if face_px < 1:
    raise ValueError(f"face_px must be positive, got {face_px}")
  portrait = draw_portrait(rng, sample_identity(rng), emotion, difficulty)
  img, box, landmarks = resize_portrait(portrait, face_px)
  return RenderedFace(
      image=photograph(rng, img, difficulty),
      box=box,
      landmarks=landmarks,
      emotion=int(emotion),
      face_px=int(face_px),
      action_units=portrait.action_units,
      distractors=portrait.distractors,
  )
