"""The readers every dataset and video goes through: RGB channel order pinned (OpenCV works in BGR),
odd images converted, bad files a one-line error."""

import numpy as np
import pytest
import cv2

from data_pipelines.builders import manual
from emoflow.vision import video as video_io

RED_RGB = (220, 30, 40)


def test_images_read_as_rgb_whatever_their_channels(tmp_path):
  rgb = np.zeros((8, 12, 3), np.uint8)
  rgb[:] = RED_RGB
  cv2.imwrite(str(tmp_path / "red.png"), rgb[..., ::-1])  # what a BGR tool writes for red
  np.testing.assert_array_equal(manual.read_rgb(str(tmp_path / "red.png")), rgb)
  cv2.imwrite(str(tmp_path / "grey.png"), np.full((8, 12), 77, np.uint8))
  np.testing.assert_array_equal(manual.read_rgb(str(tmp_path / "grey.png")), np.full((8, 12, 3), 77))
  bgra = np.concatenate([rgb[..., ::-1], np.full((8, 12, 1), 10, np.uint8)], -1)
  cv2.imwrite(str(tmp_path / "rgba.png"), bgra)  # alpha is dropped, not blended
  np.testing.assert_array_equal(manual.read_rgb(str(tmp_path / "rgba.png")), rgb)
  (tmp_path / "été 写真").mkdir()
  cv2.imwrite(str(tmp_path / "été 写真" / "red.png"), rgb[..., ::-1])
  np.testing.assert_array_equal(manual.read_rgb(str(tmp_path / "été 写真" / "red.png")), rgb)


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "random bytes", "truncated"])
def test_unreadable_images_are_one_line_errors(tmp_path, case):
  path = tmp_path / "x.jpg"
  if case == "directory":
    path.mkdir()
  elif case == "empty":
    path.write_bytes(b"")
  elif case == "random bytes":
    path.write_bytes(np.random.default_rng(0).bytes(5000))
  elif case == "truncated":
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    path.write_bytes(data.tobytes()[:200])
  with pytest.raises(ValueError) as error:
    manual.read_rgb(str(path))
  assert str(error.value) == f"{path}: cannot read as an image (missing, truncated or unknown format)"


def test_videos_round_trip_in_rgb(tmp_path):
  frame = np.zeros((48, 64, 3), np.uint8)
  frame[:, :32] = RED_RGB
  with video_io.write_video(str(tmp_path / "v.mp4"), 5.0, (64, 48)) as write:
    write(frame)
  (_, back), = list(video_io.read_frames(str(tmp_path / "v.mp4")))
  # mp4v is lossy: compare the colour of the red half, not exact bytes.
  np.testing.assert_allclose(back[10:38, 4:28].mean((0, 1)), RED_RGB, atol=12)
  assert back[10:38, 36:60].mean() < 12
