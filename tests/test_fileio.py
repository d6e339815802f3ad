"""Atomic outputs: all or nothing, and the permissions a plain open() would give."""

import os
import stat

import pytest

from emoflow.fileio import atomic_open


def _mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


def test_result_has_umask_permissions_not_private_ones(tmp_path):
  plain = tmp_path / "plain.txt"
  plain.write_text("x")
  with atomic_open(str(tmp_path / "atomic.txt")) as f:
    f.write("x")
  assert _mode(tmp_path / "atomic.txt") == _mode(plain)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "out.txt"
  path.write_text("old")
  with pytest.raises(RuntimeError):
    with atomic_open(str(path)) as f:
      f.write("new")
      raise RuntimeError("killed")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["out.txt"]
