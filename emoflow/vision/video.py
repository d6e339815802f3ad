"""Video files in and out through OpenCV's FFmpeg backend, frames as RGB uint8.

Writing uses the `mp4v` codec (OpenCV wheels cannot write H.264) into a
temporary file that is renamed on success, so a killed writer never leaves a
truncated video under the final name.

Inference reads a video as `read_batches(path, sample_indices(...))`: the
frames nearest to a target rate, in fixed-size batches for the device.
"""

import contextlib
import dataclasses
import os
import queue
import threading
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
  if os.path.isdir(path):
    raise ValueError(f"{path} is a directory, not a video file")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist")
  if os.path.getsize(path) == 0:
    raise ValueError(f"{path} is empty")
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    capture.release()
    raise ValueError(f"{path}: OpenCV cannot read it as a video or image (corrupt, truncated, "
                     "or a format its FFmpeg does not know)")
  return capture


def probe(path: str) -> VideoInfo:
  """Frame rate, frame count and size from the container header.

  Where the header has no frame count (a still image, some streams), the
  frames are counted by decoding them.
  """
  capture = _open(path)
  try:
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if num_frames <= 0:
      num_frames = 0
      while capture.grab():
        num_frames += 1
    return VideoInfo(fps=float(capture.get(cv2.CAP_PROP_FPS)), num_frames=num_frames,
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
        yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)  # a copy, as fast as a plain copy
      index += 1
  finally:
    capture.release()


def sample_indices(num_frames: int, fps: float, target_fps: float | None) -> np.ndarray:
  """Indices of the frames to analyse at `target_fps`: int64 [n], ascending, distinct.

  Every frame when target_fps is None or at least fps, or when the header
  gives no frame rate (fps <= 0: times are unknown). Otherwise the frame
  nearest to each time t = k / target_fps (k = 0, 1, ...) before the video's
  end, num_frames / fps: frame i shows time i / fps, so the index is
  round(t * fps), halves rounded up, and the last at most num_frames - 1.
  A 30 fps video sampled at 10 fps gives frames 0, 3, 6, ...; at 7 fps
  frames 0, 4, 9, 13, 17, 21, 26, ...
  """
  if target_fps is not None and target_fps <= 0:
    raise ValueError(f"target_fps must be positive, got {target_fps}")
  if target_fps is None or fps <= 0 or target_fps >= fps:
    return np.arange(num_frames)
  times = np.arange(int(np.ceil(num_frames / fps * target_fps))) / target_fps
  times = times[times < num_frames / fps]
  return np.unique(np.minimum(np.floor(times * fps + 0.5).astype(np.int64), num_frames - 1))


def read_batches(path: str, indices: Iterable[int] | None,
                 batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (indices int64 [b], RGB frames uint8 [b, H, W, 3]) of the wanted frames (all when None).

  Batches of `batch_size` in ascending frame order, the last one shorter;
  each wanted frame once. Built on read_frames, so it decodes sequentially.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}")
  batch: list[tuple[int, np.ndarray]] = []
  for item in read_frames(path, indices):
    batch.append(item)
    if len(batch) == batch_size:
      yield _stack(batch)
      batch = []
  if batch:
    yield _stack(batch)


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
  """Yields `items` in order while a background thread produces up to `depth` ahead.

  OpenCV decodes and encodes with the GIL released, so a reader (or a
  writer's frame source) runs beside the device work of the caller. An
  exception in the producer is raised in the consumer at its place in the
  order; a consumer that stops early ends the producer at its next item.
  """
  if depth < 1:
    raise ValueError(f"depth must be at least 1, got {depth}")
  source = iter(items)
  slots: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()
  done = object()

  def produce():
    try:
      for item in source:
        if stop.is_set():
          return
        slots.put((item, None))
      slots.put((done, None))
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
      slots.put((done, e))
    finally:
      if hasattr(source, "close"):  # a generator's own finally (a capture's release) runs here
        source.close()

  worker = threading.Thread(target=produce, daemon=True)
  worker.start()
  try:
    while True:
      item, error = slots.get()
      if error is not None:
        raise error
      if item is done:
        return
      yield item
  finally:
    stop.set()
    while worker.is_alive():  # unblock a producer waiting on a full queue
      with contextlib.suppress(queue.Empty):
        slots.get_nowait()
      worker.join(timeout=0.01)


def _stack(batch: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  return np.array([i for i, _ in batch], np.int64), np.stack([f for _, f in batch])


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
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    yield write
    writer.release()
    os.replace(tmp, path)
  finally:
    writer.release()
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
