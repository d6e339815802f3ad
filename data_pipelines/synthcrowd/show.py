"""Render one SynthCrowd picture with its ground truth drawn on it.

    python -m data_pipelines.synthcrowd.show --out=frame.png [--seed=N] [--kind=frame|video]
        [--faces=N|LO-HI] [--scale=2]

--kind=frame renders one crowds.render_crowd frame; --kind=video renders a
4-second clip (videos.render_video, in a temporary directory) and shows its
middle frame as decoded from the mp4. Face boxes are coloured by emotion,
group boxes by group label, the frame label is top left
(emoflow.vision.draw). The PNG is written atomically. A bad flag ends with
one line on stderr and exit code 2.
"""

import argparse
import dataclasses
import sys
import tempfile

import cv2
import numpy as np

from data_pipelines import annotations
from data_pipelines.synthcrowd import crowds, videos
from emoflow.fileio import atomic_open
from emoflow.vision.draw import draw_annotations
from emoflow.vision.video import read_frames


def draw_frame(image: np.ndarray, frame: annotations.Frame, scale: float = 1.0) -> np.ndarray:
  """`image` resized by `scale` with `frame`'s faces, groups and label drawn on it."""
  if scale != 1:
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)

  def scaled(box):
    return [(v + 0.5) * scale - 0.5 for v in box]

  return draw_annotations(image, [scaled(f.box) for f in frame.faces], [f.emotion for f in frame.faces],
                          [scaled(g.box) for g in frame.groups], [g.label for g in frame.groups],
                          frame.label)


def render(seed: int, kind: str, crowd: crowds.CrowdDifficulty) -> tuple[np.ndarray, annotations.Frame]:
  """The picture and its annotation: a crowd frame, or a video's middle frame."""
  rng = np.random.default_rng(seed)
  if kind == "frame":
    return crowds.render_crowd(rng, crowd)
  with tempfile.TemporaryDirectory() as directory:
    spec = videos.VideoSpec(duration_s=(4.0, 4.0))
    video = videos.render_video(rng, directory, "clip", crowd, spec)
    middle = video.num_frames // 2
    (_, image), = read_frames(f"{directory}/{video.video}", [middle])
  return image, video.frames[middle]


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    self.exit(2, f"show: {message}\n")


def _faces(text: str) -> tuple[int, int]:
  low, _, high = text.partition("-")
  try:
    bounds = int(low), int(high or low)
  except ValueError:
    raise argparse.ArgumentTypeError(f"want N or LO-HI, got {text!r}") from None
  if not 1 <= bounds[0] <= bounds[1]:
    raise argparse.ArgumentTypeError(f"want 1 <= LO <= HI, got {text!r}")
  return bounds


def main(argv=None) -> int:
  parser = _Parser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="PNG file to write")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--kind", choices=("frame", "video"), default="frame")
  parser.add_argument("--faces", type=_faces, help="people placed: N or LO-HI (default 2-200)")
  parser.add_argument("--scale", type=float, default=2.0, help="enlarge before drawing, for legible text")
  args = parser.parse_args(argv)
  if not args.out.lower().endswith(".png"):
    parser.error(f"--out must name a .png file, got {args.out!r}")
  if not 0.25 <= args.scale <= 8:
    parser.error(f"--scale must lie in [0.25, 8], got {args.scale}")
  crowd = crowds.CrowdDifficulty()
  if args.faces:
    crowd = dataclasses.replace(crowd, num_faces=args.faces)
  image, frame = render(args.seed, args.kind, crowd)
  _, png = cv2.imencode(".png", draw_frame(image, frame, args.scale)[..., ::-1])
  try:
    with atomic_open(args.out, "wb") as f:
      f.write(png.tobytes())
  except OSError as e:
    print(f"show: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
    return 1
  print(f"{args.out}: {len(frame.faces)} faces, {len(frame.groups)} groups, frame label {frame.label}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
