#!/usr/bin/env bash
# The CUDA path and its speed, on a GPU machine with emoflow's environment already set up
# (pip install -e .[cuda,bench]); installs nothing. Prints the card, checks that JAX and
# PyTorch see it and that an EmoNet step runs there, then the benchmark tables. About 4 minutes.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=/path/to/python to pick the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'PYEOF'
import sys
import jax
import jax.numpy as jnp
from emoflow.models import EmoNet
if jax.default_backend() != "gpu":
  sys.exit(f"JAX runs on {jax.default_backend()}, not the GPU: install emoflow[cuda]")
net = EmoNet()
variables = net.init(jax.random.key(0), jnp.zeros((2, 112, 112, 3)))
logits, _ = jax.jit(lambda v, x: net.apply(v, x))(variables, jnp.zeros((2, 112, 112, 3)))
print(f"jax {jax.__version__}: {jax.devices()}; EmoNet logits {logits.shape} on "
      f"{next(iter(logits.devices()))}")
try:
  import torch
  print(f"PyTorch {torch.__version__}: cuda {torch.cuda.is_available()}")
except ImportError:
  print("PyTorch missing (emoflow[bench]): the comparison table is skipped")
PYEOF
timeout 90 "$PY" benchmarks/emonet_throughput.py --quick
if "$PY" -c "import torch" 2>/dev/null; then
  timeout 200 "$PY" benchmarks/vs_pytorch.py --rounds 3
fi
