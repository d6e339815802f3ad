"""Data-parallel scaling: training throughput against the number of devices.

For n = 1, 2, 4, ... up to every local device, a ('data',) mesh over the
first n devices runs the train steps of two shipped configs exactly as fit()
does (emoflow.train.parallel.jit_train_step, state replicated and donated,
batch sharded): EmoNet of emonet_synthcrowd and the FeC NVPF of
nvpf_synthcrowd:fec on 128-d embeddings. Weak scaling keeps the batch per
device (--per-device-batch, so the global batch grows with n); strong scaling
keeps the global batch (--global-batch, split over n). Each number is the
median of timed repeats after a warm-up; the table gives examples/s, the
speed-up over one device and the efficiency (speed-up / n).

Without a GPU, XLA is asked for --cpu-devices host devices: they share this
machine's cores, so the CPU table measures what splitting a step costs, not
added compute.

  python benchmarks/scaling.py [--quick] [--per-device-batch 8] [--global-batch 64]
"""

import argparse
import os
import sys


def _force_cpu_devices(argv: list[str]) -> None:
  """XLA_FLAGS must be set before JAX starts; it only affects the CPU platform."""
  count = "8"
  for i, arg in enumerate(argv):
    if arg.startswith("--cpu-devices"):
      count = arg.split("=", 1)[1] if "=" in arg else argv[i + 1]
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={count}").strip()


_force_cpu_devices(sys.argv)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from emonet_throughput import cpu_model, median_seconds  # noqa: E402

from emoflow import host_memory  # noqa: E402
from emoflow.tasks import group as group_task  # noqa: E402
from emoflow.tasks import individual as individual_task  # noqa: E402
from emoflow.train import parallel  # noqa: E402
from experiments import group, individual  # noqa: E402
from experiments.configs import emonet_synthcrowd, nvpf_synthcrowd  # noqa: E402

EMBED_DIM = 128  # emonet_synthcrowd's embeddings, what the FeC reads


def emonet_level():
  """(name, unit, train step, initial state, batch of b examples) for EmoNet."""
  config = emonet_synthcrowd.get_config()
  model = individual.make_model(config)
  state = individual.initial_state(config, model, config.num_steps)

  def batch(b: int, rng: np.random.Generator) -> dict:
    return {"image": rng.integers(0, 256, (b, 112, 112, 3), dtype=np.uint8),
            "label": rng.integers(0, 8, b).astype(np.int32)}

  step = individual_task.make_train_step(model, np.ones(8, np.float32))
  return "EmoNet (emonet_synthcrowd)", "faces/s", step, state, batch


def nvpf_level():
  """(name, unit, train step, initial state, batch of b examples) for the FeC NVPF."""
  config = nvpf_synthcrowd.get_config("fec")
  fusion = group_task.make_fusion(config.model)
  state = group.initial_state(config, fusion, EMBED_DIM)
  n = config.model.max_faces

  def batch(b: int, rng: np.random.Generator) -> dict:
    mask = np.arange(n)[None] < rng.integers(2, n + 1, b)[:, None]
    return {"embeddings": rng.normal(size=(b, n, EMBED_DIM)).astype(np.float32) * mask[..., None],
            "mask": mask, "label": rng.integers(0, 3, b).astype(np.int32)}

  step = group_task.make_train_step(fusion)
  return "NVPF FeC (nvpf_synthcrowd:fec)", "groups/s", step, state, batch


def examples_per_second(step, state, batch: dict, devices, repeats: int) -> float:
  """Median examples/s of the jitted step on a mesh over `devices`."""
  mesh = parallel.make_data_mesh(devices)
  step_fn = parallel.jit_train_step(step, mesh)
  sharded = parallel.shard_batch(batch, mesh)
  current = [parallel.replicate(jax.tree.map(jnp.copy, state), mesh)]  # donated each step
  rng = jax.random.key(0)

  def run():
    current[0], metrics = step_fn(current[0], sharded, rng)
    jax.block_until_ready(metrics)

  return len(batch[next(iter(batch))]) / median_seconds(run, repeats, warmup=2)


def device_counts(total: int) -> list[int]:
  counts = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= total]
  return counts if counts[-1] == total else [*counts, total]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier numbers)")
  parser.add_argument("--per-device-batch", type=int, default=8, help="weak scaling")
  parser.add_argument("--global-batch", type=int, default=64, help="strong scaling")
  parser.add_argument("--cpu-devices", type=int, default=8,
                      help="host devices XLA makes when there is no GPU")
  parser.add_argument("--levels", default="emonet,nvpf", help="comma list of emonet, nvpf")
  args = parser.parse_args()
  host_memory.keep_freed_memory()  # as emoflow's commands do
  repeats = 3 if args.quick else 5
  devices = jax.devices()
  counts = device_counts(len(devices))
  if any(args.global_batch % n for n in counts):
    parser.error(f"--global-batch {args.global_batch} must divide over {counts} devices")
  dev = devices[0]
  print(f"device: {len(devices)} x {dev.platform} / {dev.device_kind} ({cpu_model()}, "
        f"{os.cpu_count()} CPUs), jax {jax.__version__}, median of {repeats} repeats")
  if dev.platform == "cpu":
    print(f"({len(devices)} forced host devices sharing {os.cpu_count()} cores)")
  makers = {"emonet": emonet_level, "nvpf": nvpf_level}
  rng = np.random.default_rng(0)
  for level in args.levels.split(","):
    name, unit, step, state, make_batch = makers[level]()
    print(f"\n### {name}\n")
    print(f"| scaling | devices | global batch | per device | {unit} | speed-up | efficiency |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode in ("weak", "strong"):
      base = None
      for n in counts:
        b = args.per_device_batch * n if mode == "weak" else args.global_batch
        rate = examples_per_second(step, state, make_batch(b, rng), devices[:n], repeats)
        base = base or rate
        print(f"| {mode} | {n} | {b} | {b // n} | {rate:.1f} | {rate / base:.2f}x | "
              f"{rate / base / n:.0%} |", flush=True)


if __name__ == "__main__":
  main()
