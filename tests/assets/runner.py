"""`python -m experiments.run ARGS` from the repository root, as a user types it."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_experiment(*args, timeout: int = 600) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "experiments.run", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)
