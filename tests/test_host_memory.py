"""emoflow.host_memory: after keep_freed_memory, a large block freed and allocated again is not faulted in again."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Allocates, writes and frees 64 MB ten times in a fresh process; prints the page faults it took.
CYCLES = """
import ctypes, ctypes.util, resource, sys
from emoflow import host_memory
if sys.argv[1] == "keep":
  assert host_memory.keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(ctypes.c_void_p(block))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
  out = subprocess.run([sys.executable, "-c", CYCLES, mode], cwd=ROOT, capture_output=True,
                       text=True, check=True)
  return int(out.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc only")
def test_freed_memory_is_reused_without_page_faults():
  pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
  assert _faults("default") >= 9 * pages  # every cycle faults its pages in again
  assert _faults("keep") < 2 * pages  # only the first cycle does
