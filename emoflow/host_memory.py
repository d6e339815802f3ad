"""Keeping freed host memory in the process, so XLA:CPU's buffers are not faulted in again every call.

XLA:CPU mallocs a call's buffers and frees them when it ends. glibc returns
blocks above its mmap threshold (32 MB at most) and the heap's free top to
the kernel on free, so the next call writes to fresh pages that the kernel
must fault in and zero: EmoNet's training step at batch 64 took ~710,000
page faults per step here (2.8 GB) and ran at half speed (BUILD.md). With
one arena, no mmap and no trimming, freed blocks are reused instead; the
process keeps its peak memory until it exits.
"""

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to reuse freed memory; False where the C library is not glibc.

  Call it before JAX starts (its threads pick their malloc arena when they
  first allocate). A trim threshold of -1 reads as SIZE_MAX: never trim.
  """
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.gnu_get_libc_version  # noqa: B018 - glibc only
  except (OSError, AttributeError):
    return False
  return all(libc.mallopt(param, value) == 1 for param, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
