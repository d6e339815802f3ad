"""Output files that are never half-written: write to a temporary name, then rename."""

import contextlib
import os
import tempfile


def temporary_path(path: str, suffix: str = ".tmp") -> str:
  """A new empty file beside `path` with the permissions a plain open() would give it.

  (mkstemp makes files private, 0600; a renamed result should not be.)
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix,
                             dir=directory)
  os.close(fd)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  return tmp


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
  """Opens a temporary file beside `path`; on success renames it onto `path`.

  An exception (or a kill) before the end leaves any previous `path` untouched.
  """
  tmp = temporary_path(path)
  try:
    with open(tmp, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
