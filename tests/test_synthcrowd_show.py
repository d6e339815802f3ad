"""Tests of the SynthCrowd picture command and the shared annotation drawing."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from emoflow.vision.draw import COLOURS, draw_annotations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _show(*flags):
  return subprocess.run([sys.executable, "-m", "data_pipelines.synthcrowd.show", *flags],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["frame", "video"])
def test_show_writes_a_png(tmp_path, kind):
  out = tmp_path / "pic.png"
  result = _show(f"--out={out}", "--seed=3", f"--kind={kind}", "--faces=6-12", "--scale=1")
  assert result.returncode == 0, result.stderr
  image = cv2.imread(str(out))
  assert image.shape == (360, 640, 3)
  assert os.listdir(tmp_path) == ["pic.png"]  # no temporary file left behind


@pytest.mark.parametrize("flags", [["--faces=abc"], ["--kind=movie"], ["--faces=5-2"],
                                   ["--scale=0"], []])
def test_bad_flags_exit_nonzero_with_one_line(tmp_path, flags):
  out = [f"--out={tmp_path / 'x.png'}"] if flags else []
  result = _show(*out, *flags)
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("show: ")
  assert not os.listdir(tmp_path)


def test_draw_annotations_colours_boxes_by_label():
  image = np.zeros((100, 200, 3), np.uint8)
  drawn = draw_annotations(image, [[10, 10, 40, 50]], ["angry"], [[5, 30, 190, 95]], ["positive"],
                           frame_label="positive")
  assert not image.any()  # the input is left alone
  assert tuple(drawn[30, 10]) == COLOURS["angry"]  # left edge of the face box
  assert tuple(drawn[70, 190]) == COLOURS["positive"]  # right edge of the group box
