"""emoflow against the same architectures in PyTorch, measured in one run, alternating.

Workloads (the shipped configs' real steps on the emoflow side):
- EmoNet inference at batch 32 and 256: `emoflow.tasks.individual.predict`
  (what `emoflow predict` and feature caching run) against PyTorch eager
  channels-last and torch.compile of benchmarks/torch_reference.EmoNet.
- EmoNet training at batch 64: emonet_synthcrowd's train step (forward,
  backward, Adam) against PyTorch eager channels-last and torch.compile.
- NVPF training at batch 64: nvpf_emotiw's FeC step (the paper's 10 units of
  32 filters, 16 slots, class-Gaussian prior and cross-entropy), group sizes
  like SynthCrowd's (mostly 2-6 faces), against the same flow and loss in
  PyTorch eager (unit-variance class Gaussians: the same work), and against
  emoflow with the flow in one call over the batch (CPU_FLOW_CHUNK 0, the
  starting point of issue 11; on CPU emoflow runs it 8 groups at a time).

Every round gives each implementation a turn of back-to-back calls (about
--turn-seconds), in turn, so a slow spell of the machine hits all of them.
The table gives the median over rounds, the spread (min-max), the fraction
of the peak (a large float32 matmul measured in the same run, the best of
JAX and PyTorch) and emoflow's ratio to each.
FLOPs count 2 x MACs, training 3x the forward.

Like emoflow's commands, the script first sets glibc's malloc to keep freed
memory (emoflow.host_memory), which spares both libraries a page fault per
4 KB of every large buffer on every call; --glibc-default leaves it as is.

  pip install -e .[bench]   # PyTorch
  python benchmarks/vs_pytorch.py [--rounds 5] [--only emonet_infer,emonet_train,nvpf_train]
      [--no-compile] [--turn-seconds 0.5] [--glibc-default]
"""

import argparse
import os
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

import torch_reference
from emonet_throughput import cpu_model, median_seconds
from emoflow import host_memory
from emoflow.models.emonet import count_macs
from emoflow.tasks import group as group_task
from emoflow.tasks import individual as individual_task
from experiments import group, individual
from experiments.configs import emonet_synthcrowd, nvpf_emotiw

Runner = Callable[[], None]  # one call, blocking on its result


def torch_device() -> torch.device:
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def peak_gflops(repeats: int = 5, n: int = 4096) -> dict[str, float]:
  """Float32 n^3 matmul GFLOP/s of JAX and PyTorch on their devices (median of `repeats`)."""
  a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  ta = torch.randn(n, n, device=torch_device())

  def torch_mm():
    torch.mm(ta, ta)
    sync()

  runs = {"jax": lambda: mm(a, a).block_until_ready(), "pytorch": torch_mm}
  return {name: 2 * n**3 / median_seconds(fn, repeats) / 1e9 for name, fn in runs.items()}


def _faces(batch: int) -> np.ndarray:
  return np.random.default_rng(0).integers(0, 256, (batch, 112, 112, 3), dtype=np.uint8)


def _torch_faces(faces: np.ndarray) -> torch.Tensor:
  """uint8 NHWC -> float [-1, 1] NCHW in channels-last memory (what the JAX side reads)."""
  x = torch.from_numpy(np.array(faces)).to(torch_device()).permute(0, 3, 1, 2).float() / 127.5 - 1
  return x.contiguous(memory_format=torch.channels_last)


def emonet_inference(batch: int, compile_torch: bool) -> dict[str, Runner]:
  config = emonet_synthcrowd.get_config()
  model = individual.make_model(config)
  variables = individual.initial_state(config, model, 1).variables
  faces = jax.device_put(_faces(batch))
  predict = jax.jit(lambda v, x: individual_task.predict(model, v, x))
  reference = torch_reference.load_emonet(torch_reference.EmoNet(), variables)
  reference = reference.to(torch_device(), memory_format=torch.channels_last).eval()
  torch_faces = _torch_faces(np.asarray(faces))

  def run_torch(net):
    def run():
      with torch.inference_mode():
        net(torch_faces)
      sync()
    return run

  runners = {"emoflow": lambda: jax.block_until_ready(predict(variables, faces)),
             "PyTorch eager channels-last": run_torch(reference)}
  if compile_torch:
    runners["PyTorch torch.compile"] = run_torch(torch.compile(reference))
  return runners


def emonet_training(batch: int, compile_torch: bool) -> dict[str, Runner]:
  config = emonet_synthcrowd.get_config()
  model = individual.make_model(config)
  state = [individual.initial_state(config, model, config.num_steps)]
  faces = _faces(batch)
  labels = np.random.default_rng(1).integers(0, 8, batch).astype(np.int32)
  data = jax.device_put({"image": faces, "label": labels})
  step = jax.jit(individual_task.make_train_step(model, np.ones(8, np.float32)),
                 donate_argnums=0)
  rng = jax.random.key(0)

  def run_emoflow():
    state[0], metrics = step(state[0], data, rng)
    jax.block_until_ready(metrics)

  reference = torch_reference.load_emonet(torch_reference.EmoNet(), state[0].variables)
  reference = reference.to(torch_device(), memory_format=torch.channels_last).train()
  torch_faces = _torch_faces(faces)
  torch_labels = torch.from_numpy(labels).long().to(torch_device())

  def torch_step(net, optimizer):
    def run():
      optimizer.zero_grad(set_to_none=True)
      logits, _ = net(torch_faces)
      torch.nn.functional.cross_entropy(logits, torch_labels).backward()
      optimizer.step()
      sync()
    return run

  runners = {"emoflow": run_emoflow,
             "PyTorch eager channels-last": torch_step(
                 reference, torch.optim.Adam(reference.parameters(), 1e-3))}
  if compile_torch:
    compiled = torch_reference.load_emonet(torch_reference.EmoNet(), state[0].variables)
    compiled = compiled.to(torch_device(), memory_format=torch.channels_last).train()
    runners["PyTorch torch.compile"] = torch_step(
        torch.compile(compiled), torch.optim.Adam(compiled.parameters(), 1e-3))
  return runners


def group_sizes(batch: int, seed: int = 0) -> np.ndarray:
  """Faces per group like SynthCrowd's groups (2-6, a few larger up to 16)."""
  rng = np.random.default_rng(seed)
  sizes = rng.integers(2, 7, batch)
  large = rng.random(batch) < 0.1
  sizes[large] = rng.integers(7, 17, large.sum())
  return sizes


def nvpf_training(batch: int, compile_torch: bool) -> dict[str, Runner]:
  del compile_torch  # the flow's Python loop over units compiles for many minutes
  m = 128
  config = nvpf_emotiw.get_config("fec")
  fusion = group_task.make_fusion(config.model)
  initial = group.initial_state(config, fusion, m)
  n = config.model.max_faces
  mask = np.arange(n)[None] < group_sizes(batch)[:, None]
  rng = np.random.default_rng(2)
  data = jax.device_put({
      "embeddings": (rng.normal(size=(batch, n, m)) * mask[..., None]).astype(np.float32),
      "mask": mask, "label": rng.integers(0, 3, batch).astype(np.int32)})
  flow_params = {"params": initial.params["flow"]}
  runners = {}
  chunks = {"emoflow": group_task.CPU_FLOW_CHUNK,
            "emoflow, flow in one call (issue 11's start)": 0}
  for name, chunk in chunks.items():
    group_task.CPU_FLOW_CHUNK = chunk  # read while tracing, so compile now
    step = jax.jit(group_task.make_train_step(fusion), donate_argnums=0).lower(
        initial, data, jax.random.key(0)).compile()
    state = [jax.tree.map(jnp.copy, initial)]

    def run(step=step, state=state):
      state[0], metrics = step(state[0], data, jax.random.key(0))
      jax.block_until_ready(metrics)

    runners[name] = run
  group_task.CPU_FLOW_CHUNK = chunks["emoflow"]

  flow = torch_reference.load_nvpf(torch_reference.NVPF(m, 10, 32, 2), flow_params)
  flow = flow.to(torch_device())
  means = torch.linspace(-1, 1, 3, device=torch_device())
  torch_mask = torch.from_numpy(np.array(data["mask"])).to(torch_device())
  features = torch.from_numpy(np.array(data["embeddings"])).to(torch_device()).transpose(1, 2)
  labels = torch.from_numpy(np.array(data["label"])).long().to(torch_device())
  optimizer = torch.optim.Adam(flow.parameters(), 1e-3)

  def run_torch():
    optimizer.zero_grad(set_to_none=True)
    h, logdet = flow(features, torch_mask)
    keep = torch_mask[:, None].float()
    # Class-Gaussian NLL (unit variance) + cross-entropy over the class scores.
    scores = -0.5 * (((h[:, None] - means[None, :, None, None]) ** 2) * keep[:, None]).sum((2, 3))
    nll = -(scores.gather(1, labels[:, None])[:, 0] + logdet)
    loss = nll.mean() + torch.nn.functional.cross_entropy(scores, labels)
    loss.backward()
    optimizer.step()
    sync()

  runners["PyTorch eager"] = run_torch
  return runners


WORKLOADS = {
    # key: (title, unit, batch, forward MACs per unit, training?, make runners)
    "emonet_infer": [("EmoNet inference, batch 32", "faces/s", 32, count_macs(), False,
                      emonet_inference),
                     ("EmoNet inference, batch 256", "faces/s", 256, count_macs(), False,
                      emonet_inference)],
    "emonet_train": [("EmoNet training step, batch 64", "faces/s", 64, count_macs(), True,
                      emonet_training)],
    "nvpf_train": [("NVPF training step (FeC), batch 64", "groups/s", 64, None, True,
                    nvpf_training)],
}


def nvpf_macs_per_group(num_units: int = 10, width: int = 32, blocks: int = 2,
                        m: int = 128, n: int = 16) -> int:
  """Conv MACs of one group through the flow at n slots (T1 and T2 of every unit)."""
  per_net = m * n * 9 * (width + 2 * blocks * width * width + width)
  return 2 * num_units * per_net


def measure(runners: dict[str, Runner], rounds: int, turn_seconds: float) -> dict[str, list[float]]:
  """Seconds per call of each runner, per round, the runners taking turns.

  A turn is as many back-to-back calls as fill about `turn_seconds` (at
  least one), so it measures steady throughput: the first call after
  another library ran or the machine idled is slower (JAX's by up to 40%
  at batch 32 here, PyTorch's by ~15%; BUILD.md).
  """
  calls = {}
  for name, fn in runners.items():  # compile, warm up, size the turn
    fn()
    start = time.perf_counter()
    fn()
    calls[name] = max(1, round(turn_seconds / (time.perf_counter() - start)))
  seconds = {name: [] for name in runners}
  for _ in range(rounds):
    for name, fn in runners.items():
      start = time.perf_counter()
      for _ in range(calls[name]):
        fn()
      seconds[name].append((time.perf_counter() - start) / calls[name])
  return seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--only", default=",".join(WORKLOADS),
                      help=f"comma list of {', '.join(WORKLOADS)}")
  parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
  parser.add_argument("--turn-seconds", type=float, default=0.5,
                      help="each implementation's turn in a round: back-to-back calls filling this")
  parser.add_argument("--glibc-default", action="store_true",
                      help="leave glibc's malloc as it is (freed blocks go back to the kernel)")
  args = parser.parse_args()
  unknown = set(args.only.split(",")) - set(WORKLOADS)
  if unknown:
    parser.error(f"unknown workloads {sorted(unknown)}; known: {', '.join(WORKLOADS)}")
  if not args.glibc_default:  # what emoflow's commands do; PyTorch gains from it as much
    host_memory.keep_freed_memory()
  torch.set_num_threads(os.cpu_count())

  dev = jax.devices()[0]
  peaks = peak_gflops()
  peak = max(peaks.values())
  print(f"device: jax {dev.platform} / {dev.device_kind}, PyTorch {torch_device()} "
        f"({torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_model()}), "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} PyTorch threads | jax "
        f"{jax.__version__}, PyTorch {torch.__version__}")
  print(f"peak: float32 4096^3 matmul, JAX {peaks['jax']:.0f} GFLOP/s, PyTorch "
        f"{peaks['pytorch']:.0f} GFLOP/s; fractions below are of {peak:.0f} | "
        f"{args.rounds} rounds, median (min-max) | malloc: "
        f"{'glibc default' if args.glibc_default else 'keeps freed memory'}\n")
  print("| workload | implementation | units/s median (min-max) | GFLOP/s | of peak | "
        "emoflow / this |")
  print("|---|---|---:|---:|---:|---:|")
  for key in args.only.split(","):
    for title, unit, batch, macs, training, make in WORKLOADS[key]:
      macs = macs or nvpf_macs_per_group()
      runners = make(batch, not args.no_compile)
      seconds = measure(runners, args.rounds, args.turn_seconds)
      rates = {name: [batch / s for s in times] for name, times in seconds.items()}
      ours = statistics.median(rates["emoflow"])
      for name, values in rates.items():
        median = statistics.median(values)
        gflops = 2 * macs * median * (3 if training else 1) / 1e9
        print(f"| {title} | {name} | {median:.1f} {unit} ({min(values):.1f}-{max(values):.1f}) "
              f"| {gflops:.0f} | {gflops / peak:.0%} | {ours / median:.2f}x |", flush=True)
  print("\nNVPF GFLOP/s count every group at its 16 slots, as both implementations compute.")


if __name__ == "__main__":
  main()
