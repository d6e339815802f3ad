"""The manual directory of a licence-gated dataset: find its files, or say in one line what is missing.

Every real-dataset builder checks its manual directory here before reading
anything, so a wrong or half-copied download fails with one line that names
the directory, the missing entries and the expected layout, instead of a
traceback from deep inside a reader. A builder's `check_manual_dir` runs
that check; data_pipelines.loaders.prepare calls it before TFDS starts, so
the error comes before TFDS prints or writes anything. Entry names match
case-insensitively (distributions differ: `Train` vs `train`), and a path
component may list alternatives separated by `|` (`val|validation`). Images
of a manual directory are read here too, with the same kind of one-line error.
"""

import os

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def directory(dl_manager) -> str:
  """The manual directory TFDS was given.

  Read directly: `DownloadManager.manual_dir` raises a multi-line
  AssertionError for an empty directory before our one-line check can run.
  """
  return os.fspath(dl_manager._manual_dir)  # pylint: disable=protected-access


def find(parent: str, names: str) -> str | None:
  """Path of the entry of `parent` named one of `names` ('a|b', any case), or None."""
  wanted = [n.lower() for n in names.split("|")]
  try:
    entries = {e.lower(): e for e in sorted(os.listdir(parent))}
  except (FileNotFoundError, NotADirectoryError):
    return None
  for name in wanted:
    if name in entries:
      return os.path.join(parent, entries[name])
  return None


def resolve(root: str, path: str) -> str | None:
  """Resolves a '/'-separated `path` below `root` component by component (see find), or None."""
  for component in path.split("/"):
    root = find(root, component)
    if root is None:
      return None
  return root


def missing(root: str, expected) -> list[str]:
  """The entries of `expected` (paths as in resolve) that are not below `root`."""
  return [path for path in expected if resolve(root, path) is None]


def missing_error(manual_dir: str, dataset: str, absent, layout: str) -> ValueError:
  """The one-line error for a manual directory that lacks the `absent` entries."""
  problem = f"lacks {', '.join(absent)}" if os.path.isdir(manual_dir) else "does not exist"
  return ValueError(f"{dataset}: manual directory {manual_dir} {problem}; expected {layout} "
                    f"(see MANUAL_DOWNLOAD_INSTRUCTIONS in data_pipelines/builders/{dataset}.py)")


def require(manual_dir: str, dataset: str, layout: str, expected) -> None:
  """Checks that every `expected` entry is there; a one-line ValueError naming the absent ones."""
  absent = missing(manual_dir, expected)
  if absent or not os.path.isdir(manual_dir):
    raise missing_error(manual_dir, dataset, absent, layout)


def read_rgb(path: str) -> np.ndarray:
  """An image file of the manual directory as RGB uint8; one-line error if unreadable."""
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    raise ValueError(f"{path}: cannot read as an image (missing, truncated or unknown format)")
  return np.ascontiguousarray(image[..., ::-1])
