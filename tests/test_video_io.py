"""Tests of frame sampling by target fps, batched frame reading and the prefetching reader."""

import threading

import numpy as np
import pytest

from emoflow.vision import video

NUM_FRAMES, WIDTH, HEIGHT = 11, 32, 24


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  """A small mp4 whose frame i is flat grey 20 * i, so a frame tells its index."""
  path = str(tmp_path_factory.mktemp("video") / "clip.mp4")
  with video.write_video(path, fps=10, size=(WIDTH, HEIGHT)) as write:
    for i in range(NUM_FRAMES):
      write(np.full((HEIGHT, WIDTH, 3), 20 * i, np.uint8))
  return path


def test_sample_indices_every_frame():
  np.testing.assert_array_equal(video.sample_indices(5, 30.0, None), np.arange(5))
  np.testing.assert_array_equal(video.sample_indices(5, 30.0, 30.0), np.arange(5))
  np.testing.assert_array_equal(video.sample_indices(5, 30.0, 60.0), np.arange(5))
  np.testing.assert_array_equal(video.sample_indices(5, 0.0, 5.0), np.arange(5))  # fps unknown
  assert video.sample_indices(0, 30.0, 5.0).shape == (0,)


def test_sample_indices_nearest_frames():
  np.testing.assert_array_equal(video.sample_indices(30, 30.0, 10.0), np.arange(0, 30, 3))
  np.testing.assert_array_equal(video.sample_indices(30, 30.0, 7.0), [0, 4, 9, 13, 17, 21, 26])
  # NTSC: t = k / 10 s is frame 2.997 k, nearest 3 k.
  np.testing.assert_array_equal(video.sample_indices(100, 29.97, 10.0), np.arange(0, 100, 3))


@pytest.mark.parametrize("fps,target", [(25.0, 24.0), (30.0, 7.0), (29.97, 12.5), (60.0, 1.0)])
def test_sample_indices_match_brute_force(fps, target):
  """Nearest frames to the times k / target before the end, the later on ties (25 / 24 has ties)."""
  num = 97
  times = np.arange(0, num / fps, 1 / target)
  frame_times = np.arange(num) / fps
  distance = np.abs(frame_times[None] - times[:, None])
  expected = np.unique(np.argmin(distance - 1e-9 * frame_times[None], 1))
  np.testing.assert_array_equal(video.sample_indices(num, fps, target), expected)


def test_sample_indices_rejects_nonpositive_target():
  with pytest.raises(ValueError):
    video.sample_indices(10, 30.0, 0.0)


def test_read_batches(clip):
  info = video.probe(clip)
  assert (info.num_frames, info.width, info.height) == (NUM_FRAMES, WIDTH, HEIGHT)
  batches = list(video.read_batches(clip, None, batch_size=4))
  assert [len(i) for i, _ in batches] == [4, 4, 3]
  indices = np.concatenate([i for i, _ in batches])
  frames = np.concatenate([f for _, f in batches])
  np.testing.assert_array_equal(indices, np.arange(NUM_FRAMES))
  assert frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
  np.testing.assert_allclose(frames.mean((1, 2, 3)), 20 * indices, atol=4)


def test_read_batches_sampled(clip):
  wanted = video.sample_indices(NUM_FRAMES, 10.0, 4.0)  # 0, 3, 5, 8, 10
  np.testing.assert_array_equal(wanted, [0, 3, 5, 8, 10])
  batches = list(video.read_batches(clip, wanted, batch_size=2))
  assert [i.tolist() for i, _ in batches] == [[0, 3], [5, 8], [10]]
  for indices, frames in batches:
    assert frames.shape == (len(indices), HEIGHT, WIDTH, 3)
    np.testing.assert_allclose(frames.mean((1, 2, 3)), 20 * indices, atol=4)


def test_read_batches_rejects_bad_batch_size(clip):
  with pytest.raises(ValueError):
    next(video.read_batches(clip, None, batch_size=0))


def test_prefetch_yields_in_order_and_raises_where_the_producer_failed():
  assert list(video.prefetch(range(7), depth=2)) == list(range(7))

  def failing():
    yield from range(3)
    raise ValueError("frame 3 is unreadable")

  got = []
  with pytest.raises(ValueError, match="frame 3"):
    for item in video.prefetch(failing()):
      got.append(item)
  assert got == [0, 1, 2]
  with pytest.raises(ValueError):
    next(video.prefetch(range(3), depth=0))


def test_prefetch_stops_and_closes_its_source_when_the_consumer_stops():
  produced, closed = [], threading.Event()

  def source():
    try:
      for k in range(1000):
        produced.append(k)
        yield k
    finally:
      closed.set()

  items = video.prefetch(source(), depth=2)
  assert next(items) == 0
  items.close()
  assert closed.wait(5) and len(produced) <= 4  # one taken, at most depth + 1 ahead
