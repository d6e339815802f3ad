"""`emoflow predict` on bad and odd inputs, one generated file per case: a one-line error and exit
code 2, or a valid (possibly empty) result, never a traceback."""

import json
import os

import cv2
import numpy as np
import pytest
from test_pipeline import _check_schema, _save_bundle

from emoflow import cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
  directory = tmp_path_factory.mktemp("model") / "bundle"
  _save_bundle(directory, with_video=False)
  return str(directory)


def _grey_video(path, size, num_frames, fourcc="mp4v", fps=5.0):
  """num_frames frames of mid-grey; OpenCV's mp4v cannot encode 1x1, MJPG can."""
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
  assert writer.isOpened()
  for _ in range(num_frames):
    writer.write(np.full((size[1], size[0], 3), 90, np.uint8))
  writer.release()


def _annotate(path, num_frames, faces_per_frame=0, frame_size=(64, 48)):
  """The annotation JSON beside `path` (what --detector auto reads): tiny faces on a grid."""
  width, height = frame_size
  faces = []
  for k in range(faces_per_frame):
    x, y = (k * 7) % (width - 6), (k * 7) // (width - 6) * 7 % (height - 6)
    faces.append({"box": [x, y, x + 6, y + 6],
                  "landmarks": [[x + 2, y + 2], [x + 4, y + 2], [x + 3, y + 3], [x + 2, y + 5],
                                [x + 4, y + 5]]})
  frames = [{"index": i, "label": None, "faces": faces, "groups": []} for i in range(num_frames)]
  with open(os.path.splitext(str(path))[0] + ".json", "w") as f:
    json.dump({"frames": frames}, f)


def _missing(tmp):
  return tmp / "nope.mp4"


def _directory(tmp):
  (tmp / "folder.mp4").mkdir()
  return tmp / "folder.mp4"


def _empty(tmp):
  (tmp / "empty.mp4").write_bytes(b"")
  return tmp / "empty.mp4"


def _random_bytes(tmp):
  (tmp / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
  return tmp / "noise.mp4"


def _truncated(tmp):
  _grey_video(tmp / "whole.mp4", (64, 48), 10)
  data = (tmp / "whole.mp4").read_bytes()
  (tmp / "cut.mp4").write_bytes(data[:len(data) // 2])
  return tmp / "cut.mp4"


def _zero_frames(tmp):
  _grey_video(tmp / "zero.mp4", (64, 48), 0)  # OpenCV writes a header and no stream
  return tmp / "zero.mp4"


def _one_pixel(tmp):
  _grey_video(tmp / "dot.avi", (1, 1), 3, fourcc="MJPG")
  _annotate(tmp / "dot.avi", 3)
  return tmp / "dot.avi"


def _huge(tmp):
  _grey_video(tmp / "huge.avi", (8000, 8000), 1, fourcc="MJPG")
  _annotate(tmp / "huge.avi", 1, faces_per_frame=3, frame_size=(8000, 8000))
  return tmp / "huge.avi"


def _no_faces(tmp):
  _grey_video(tmp / "faceless.mp4", (64, 48), 4)
  _annotate(tmp / "faceless.mp4", 4)
  return tmp / "faceless.mp4"


def _thousand_faces(tmp):
  _grey_video(tmp / "crowd.mp4", (320, 240), 2)
  _annotate(tmp / "crowd.mp4", 2, faces_per_frame=1000, frame_size=(320, 240))
  return tmp / "crowd.mp4"


def _grey_image(tmp):
  cv2.imwrite(str(tmp / "grey.png"), np.full((48, 64), 90, np.uint8))
  _annotate(tmp / "grey.png", 1, faces_per_frame=2)
  return tmp / "grey.png"


def _four_channel_image(tmp):
  cv2.imwrite(str(tmp / "rgba.png"), np.full((48, 64, 4), 90, np.uint8))
  _annotate(tmp / "rgba.png", 1, faces_per_frame=2)
  return tmp / "rgba.png"


def _non_ascii_path(tmp):
  (tmp / "vidéo été").mkdir()
  path = tmp / "vidéo été" / "фото 群衆.mp4"
  _grey_video(path, (64, 48), 3)
  _annotate(path, 3, faces_per_frame=2)
  return path


UNREADABLE = "OpenCV cannot read it as a video or image (corrupt, truncated, or a format its " \
             "FFmpeg does not know)"
# case -> (make the input, the one error line, or None for a result with this many frames and
# faces per frame)
CASES = {
    "missing file": (_missing, "{path} does not exist"),
    "a directory": (_directory, "{path} is a directory, not a video file"),
    "empty file": (_empty, "{path} is empty"),
    "random bytes with a video extension": (_random_bytes, "{path}: " + UNREADABLE),
    "truncated video": (_truncated, "{path}: " + UNREADABLE),
    "video with zero frames": (_zero_frames, "{path}: " + UNREADABLE),
    "1x1 video": (_one_pixel, (3, 0)),
    "8000x8000 video": (_huge, (1, 3)),
    "video with no faces": (_no_faces, (4, 0)),
    "frame with 1,000 faces": (_thousand_faces, (2, 256)),
    "grey-scale image": (_grey_image, (1, 2)),
    "4-channel image": (_four_channel_image, (1, 2)),
    "non-ASCII path": (_non_ascii_path, (3, 2)),
}


HEAVY_CASES = {"8000x8000 video", "frame with 1,000 faces"}  # 12-13 s each on 2 cores: slow


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.slow)
                                  if case in HEAVY_CASES else case for case in CASES])
def test_bad_or_odd_input(case, tmp_path, model_dir, capsys):
  make, expected = CASES[case]
  path = make(tmp_path)
  out = tmp_path / "out"
  argv = ["predict", str(path), "--model", model_dir, "--out", str(out), "--quiet", "--fps", "5"]
  if isinstance(expected, str):
    with pytest.raises(SystemExit) as exited:
      cli.main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: " + expected.format(path=path)]
    assert not out.exists()
    return
  num_frames, faces_per_frame = expected
  cli.main(argv + (["--no-video"] if case == "8000x8000 video" else []))
  doc = json.loads((out / "predictions.json").read_text())
  _check_schema(doc)
  assert [len(f["faces"]) for f in doc["frames"]] == [faces_per_frame] * num_frames
  dropped = [f["dropped_faces"] for f in doc["frames"]]
  err = capsys.readouterr().err
  if case == "frame with 1,000 faces":
    assert dropped == [1000 - 256] * 2
    assert err.strip().splitlines() == ["warning: 1488 faces beyond --max-faces=256 were left out "
                                        "of 2 frames (predictions.json counts them per frame)"]
  elif case == "1x1 video":
    assert err.strip().splitlines() == ["warning: no annotated.mp4: OpenCV cannot encode 1x1 frames"]
  else:
    assert dropped == [0] * num_frames and "warning" not in err
    assert (out / "annotated.mp4").exists() != (case == "8000x8000 video")
  if faces_per_frame == 0:
    assert doc["label"] == "unknown" and all(f["groups"] == [] for f in doc["frames"])


def test_debug_shows_the_traceback(tmp_path, model_dir):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    cli.main(["predict", str(tmp_path / "nope.mp4"), "--model", model_dir, "--debug"])
