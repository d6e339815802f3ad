"""Video files in and out through OpenCV's FFmpeg backend, frames as RGB uint8.

Writing uses the `mp4v` codec (OpenCV wheels cannot write H.264) into a
temporary file that is renamed on success, so a killed writer never leaves a
truncated video under the final name.
"""

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from emoflow.fileio import temporary_path


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  fps: float
  num_frames: int
  width: int
  height: int


def _open(path: str) -> cv2.VideoCapture:
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise ValueError(f"{path}: cannot open as a video (missing file or unknown format)")
  return capture


def probe(path: str) -> VideoInfo:
  """Frame rate, frame count and size from the container header."""
  capture = _open(path)
  try:
    return VideoInfo(fps=float(capture.get(cv2.CAP_PROP_FPS)),
                     num_frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                     width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
  finally:
    capture.release()


def read_frames(path: str, indices: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (index, RGB frame) for the wanted frame indices (all when None), in ascending order.

  Decodes sequentially (seeking is unreliable across codecs) and stops after
  the last wanted frame. A wanted index past the end of the video is an error.
  """
  wanted = None if indices is None else set(int(i) for i in indices)
  last = None if wanted is None else max(wanted, default=-1)
  capture = _open(path)
  try:
    index = 0
    while last is None or index <= last:
      ok, frame = capture.read()
      if not ok:
        if last is None:
          return
        raise ValueError(f"{path}: frame {last} is past the end of the video ({index} frames)")
      if wanted is None or index in wanted:
        yield index, np.ascontiguousarray(frame[..., ::-1])
      index += 1
  finally:
    capture.release()


@contextlib.contextmanager
def write_video(path: str, fps: float, size: tuple[int, int]):
  """Context manager giving `write(rgb_frame)`; the file appears at `path` only on success.

  size: (width, height) of every frame.
  """
  tmp = temporary_path(path, suffix=os.path.splitext(path)[1] or ".mp4")
  writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), tuple(size))
  try:
    if not writer.isOpened():
      raise ValueError(f"{path}: OpenCV cannot write an mp4v video here")

    def write(frame: np.ndarray) -> None:
      if frame.shape[:2] != (size[1], size[0]):
        raise ValueError(f"frame of shape {frame.shape} does not match the video size {size}")
      writer.write(np.ascontiguousarray(frame[..., ::-1]))

    yield write
    writer.release()
    os.replace(tmp, path)
  finally:
    writer.release()
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
