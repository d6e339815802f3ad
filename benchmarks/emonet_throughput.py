"""EmoNet throughput on the local device: inference and training faces/s.

Prints a markdown table: model size, MACs per face, faces/s for inference at
several batch sizes and for a full training step (forward, backward, Adam
update; jitted, state donated), the achieved GFLOP/s (2 * MACs * faces/s)
and its fraction of the sgemm peak measured in the same run. Each number is
the median of several timed repeats after a warm-up, because CPU timings
show occasional slow rounds.

  python benchmarks/emonet_throughput.py [--quick]
"""

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from emoflow import host_memory
from emoflow.models import EmoNet
from emoflow.models.emonet import count_macs
from emoflow.tasks import individual as individual_task

INFER_BATCHES = (1, 32, 256)
TRAIN_BATCH = 64


def cpu_model() -> str:
  """The host CPU's model name (Linux), so a table says which processor it was."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
  """Median wall time of `fn()` (which must block on its result)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def sgemm_gflops(repeats: int, n: int = 2048) -> float:
  """Peak float32 matmul GFLOP/s of jnp on this device (n x n x n)."""
  a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  seconds = median_seconds(lambda: mm(a, b).block_until_ready(), repeats)
  return 2 * n**3 / seconds / 1e9


def inference_faces_per_s(net, variables, batch: int, repeats: int) -> float:
  faces = jax.random.randint(jax.random.key(3), (batch, 112, 112, 3), 0, 256).astype(jnp.uint8)
  # What emoflow predict and evaluation run (in chunks of faces on CPU).
  apply = jax.jit(lambda v, x: individual_task.predict(net, v, x))
  fn = lambda: jax.block_until_ready(apply(variables, faces))
  # Small batches are fast: time several calls per repeat for a stable clock.
  calls = max(1, 32 // batch)
  seconds = median_seconds(lambda: [fn() for _ in range(calls)], repeats)
  return batch * calls / seconds


def train_faces_per_s(net, variables, repeats: int) -> float:
  """Faces/s of a jitted train step with the whole state donated."""
  tx = optax.adam(1e-3)
  faces = jax.random.uniform(jax.random.key(4), (TRAIN_BATCH, 112, 112, 3),
                             minval=-1.0, maxval=1.0)
  labels = jax.random.randint(jax.random.key(5), (TRAIN_BATCH,), 0, 8)

  def step(state, faces, labels):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      (logits, _), updates = net.apply(
          {"params": params, "batch_stats": batch_stats}, faces, train=True,
          mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return loss.mean(), updates["batch_stats"]

    (_, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  step = jax.jit(step, donate_argnums=0)
  params = variables["params"]
  # Copies: donation frees the state's buffers, which `variables` must keep.
  state = [jax.tree.map(jnp.copy,
                        (params, variables["batch_stats"], tx.init(params)))]

  def run():
    state[0] = step(state[0], faces, labels)
    jax.block_until_ready(state[0])

  return TRAIN_BATCH / median_seconds(run, repeats, warmup=2)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="fewer repeats (noisier numbers)")
  args = parser.parse_args()
  host_memory.keep_freed_memory()  # as emoflow's commands do
  repeats = 3 if args.quick else 7

  net = EmoNet(num_classes=8, embed_dim=128)
  variables = net.init(jax.random.key(0), jnp.zeros((1, 112, 112, 3)),
                       train=False)
  n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
  model_mb = sum(x.nbytes for x in jax.tree.leaves(variables)) / 1e6
  macs = count_macs()
  peak = sgemm_gflops(repeats)

  rows = []
  for batch in INFER_BATCHES:
    rows.append((f"inference, batch {batch}",
                 inference_faces_per_s(net, variables, batch, repeats)))
  rows.append((f"training step, batch {TRAIN_BATCH} (fwd+bwd+adam)",
               train_faces_per_s(net, variables, repeats)))

  dev = jax.devices()[0]
  print(f"device: {dev.platform} / {dev.device_kind} ({cpu_model()}), {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}")
  print(f"parameters: {n_params:,} | model: {model_mb:.2f} MB (float32 params"
        f" + batch_stats) | MACs/face: {macs / 1e6:.1f} M | sgemm peak: "
        f"{peak:.0f} GFLOP/s | median of {repeats} repeats\n")
  print("| workload | faces/s | ms/face | GFLOP/s | of sgemm peak |")
  print("|---|---:|---:|---:|---:|")
  for name, fps in rows:
    # A training step is ~3x the forward MACs (forward + two backward GEMMs).
    flops = 2 * macs * fps * (3 if name.startswith("training") else 1) / 1e9
    print(f"| {name} | {fps:.1f} | {1e3 / fps:.2f} | {flops:.1f} | "
          f"{flops / peak:.0%} |")
  print(f"\nsgemm peak: jnp.matmul 2048x2048 float32 = {peak:.1f} GFLOP/s. "
        "Training GFLOP/s counts 3x the forward MACs.")


if __name__ == "__main__":
  main()
