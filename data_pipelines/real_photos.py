"""Real faces for tests and demos: three portraits shipped with scikit-image and matplotlib, and
a crowd clip composed of them.

No licensed dataset is needed, and no download: the photos come with the
packages (scikit-image is in emoflow's `dev` extra, matplotlib a dependency).

- astronaut: skimage.data.astronaut(), Eileen Collins (NASA; public domain);
- camera: skimage.data.camera(), a cameraman in three-quarter view (CC0, grey);
- grace_hopper: matplotlib's sample_data/grace_hopper.jpg (US Navy; public domain).

`FACE_BOXES` are the faces' boxes (x0, y0, x1, y1 pixels, brows to chin, ear
to ear), drawn by eye on the photos: ground truth independent of any detector.
`compose_clip` pastes the faces at chosen heights (30-200 px) on a panning
texture (skimage's grass and brick, CC0), each drifting a little, and returns
every frame's true boxes: a clip whose detection recall and precision can be
measured by face size.
"""

import dataclasses
import os

import cv2
import numpy as np

from data_pipelines.builders import manual
from emoflow.vision import video as video_io

FACE_BOXES = {"astronaut": (178, 85, 268, 182), "camera": (178, 102, 255, 200),
              "grace_hopper": (160, 140, 368, 345)}


def load(name: str) -> np.ndarray:
  """The photo `name` (FACE_BOXES' keys) as uint8 RGB [H, W, 3]."""
  import skimage.data  # noqa: PLC0415 - the dev extra; only tests and demos need it
  if name == "astronaut":
    return skimage.data.astronaut()
  if name == "camera":
    return np.repeat(skimage.data.camera()[..., None], 3, axis=-1)
  if name == "grace_hopper":
    import matplotlib  # noqa: PLC0415
    return manual.read_rgb(os.path.join(matplotlib.get_data_path(), "sample_data",
                                        "grace_hopper.jpg"))
  raise ValueError(f"unknown photo {name!r}; known: {', '.join(FACE_BOXES)}")


@dataclasses.dataclass(frozen=True)
class Placement:
  """One pasted face: its photo, face height in pixels, mirrored or not, and top-left corner of
  its patch in the first frame."""

  photo: str
  height: int
  mirrored: bool
  x: int
  y: int


def face_patch(name: str, height: int, mirrored: bool) -> tuple[np.ndarray, np.ndarray, tuple]:
  """(RGB patch, alpha [0, 1], face box in the patch) with the face `height` px tall.

  The patch is a square twice the face's larger side around its centre (the
  photo's edge repeated where it runs out), resized, with an elliptical
  alpha that fades over its outer fifth so no hard edge frames the face.
  """
  photo = load(name)
  x0, y0, x1, y1 = FACE_BOXES[name]
  side = 2 * max(x1 - x0, y1 - y0)
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  scale = height / (y1 - y0)
  size = max(4, round(side * scale))
  matrix = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]])
  patch = cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_AREA,
                         borderMode=cv2.BORDER_REPLICATE)
  box = [size / 2 + (x0 - cx) * scale, size / 2 + (y0 - cy) * scale,
         size / 2 + (x1 - cx) * scale, size / 2 + (y1 - cy) * scale]
  if mirrored:
    patch = patch[:, ::-1]
    box = [size - box[2], box[1], size - box[0], box[3]]
  grid = (np.arange(size) + 0.5) / size * 2 - 1
  radius = np.sqrt(grid[None, :] ** 2 + grid[:, None] ** 2)
  alpha = np.clip((1 - radius) / 0.2, 0, 1)
  return np.ascontiguousarray(patch), alpha, tuple(box)


def layout(heights, frame_size: tuple[int, int], seed: int = 0) -> list[Placement]:
  """Placements of faces of `heights` (tallest first) in rows across a (width, height) frame,
  photos in turn, every other one mirrored; a one-line error if they do not fit."""
  rng = np.random.default_rng(seed)
  width, frame_height = frame_size
  names = list(FACE_BOXES)
  placements, x, y, row = [], 8, 8, 0
  for i, h in enumerate(sorted(heights, reverse=True)):
    name = names[i % len(names)]
    x0, y0, x1, y1 = FACE_BOXES[name]
    side = round(2 * max(x1 - x0, y1 - y0) * h / (y1 - y0))
    if x + side > width - 8:
      x, y, row = 8, y + row + 8, 0
    if y + side > frame_height - 8:
      raise ValueError(f"faces of heights {sorted(heights)} do not fit in {width}x{frame_height}")
    jitter = int(rng.integers(0, 8))
    placements.append(Placement(name, int(h), bool(i % 2), x + jitter, y + jitter))
    x, row = x + side + 16, max(row, side + 8)
  return placements


def background(frame_size: tuple[int, int], shift: int) -> np.ndarray:
  """A textured RGB background, panned `shift` pixels to the left."""
  import skimage.data  # noqa: PLC0415
  width, height = frame_size
  texture = np.concatenate([skimage.data.grass(), skimage.data.brick()], axis=1)
  reps = (-(-height // texture.shape[0]), -(-(width + shift + 1) // texture.shape[1]))
  tiled = np.tile(texture, reps)[:height, shift:shift + width].astype(np.float32)
  tint = np.array([0.85, 1.0, 0.8], np.float32)
  return np.clip(tiled[..., None] * tint * 0.8 + 25, 0, 255).astype(np.uint8)


def compose_frame(placements: list[Placement], patches: list, frame_size: tuple[int, int],
                  t: int) -> tuple[np.ndarray, list[dict]]:
  """Frame t (uint8 RGB) and its faces: {"box", "photo", "height"} each."""
  frame = background(frame_size, 3 * t).astype(np.float32)
  faces = []
  for p, (patch, alpha, box) in zip(placements, patches):
    dx, dy = round(4 * np.sin(0.3 * t + p.x)), round(3 * np.cos(0.25 * t + p.y))
    x, y = p.x + dx, p.y + dy
    size = patch.shape[0]
    region = frame[y:y + size, x:x + size]
    a = alpha[:region.shape[0], :region.shape[1], None]
    region[:] = a * patch[:region.shape[0], :region.shape[1]] + (1 - a) * region
    faces.append({"box": [box[0] + x, box[1] + y, box[2] + x, box[3] + y], "photo": p.photo,
                  "height": p.height})
  return np.clip(frame + 0.5, 0, 255).astype(np.uint8), faces


def compose_clip(path: str, heights=(200, 150, 115, 90, 80, 70, 60, 55, 50, 45, 40, 36, 33, 30), *,
                 frame_size: tuple[int, int] = (1280, 720), seconds: float = 3.0,
                 fps: float = 10.0, seed: int = 0) -> list[list[dict]]:
  """Writes the composed clip to `path` (mp4); returns each frame's true faces."""
  placements = layout(heights, frame_size, seed)
  patches = [face_patch(p.photo, p.height, p.mirrored) for p in placements]
  truth = []
  with video_io.write_video(path, fps, frame_size) as write:
    for t in range(round(seconds * fps)):
      frame, faces = compose_frame(placements, patches, frame_size, t)
      write(frame)
      truth.append(faces)
  return truth
