"""Size and memory of the video-level models: parameters and peak memory of one training step.

For the paper's configuration (tnvpf_gecv: hidden 4096, flows of 10 units x
32 filters, 6 groups x 16 faces, batch 64 clips of 5 frames) and the CPU one
(tnvpf_synthcrowd), for each cell (tnvpf, rnn, lstm): the parameter count
(from jax.eval_shape, nothing allocated), and the memory XLA plans for the
jitted train step on the local device (compiled.memory_analysis(): the
arguments — state and batch —, the outputs and the temporaries; the step
donates nothing, so peak <= their sum). `--time` also times the CPU
configuration's step (median of 5 after a warm-up).

  python benchmarks/tnvpf_memory.py [--time]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from emoflow.models.tnvpf import count_params
from emoflow.tasks import video as video_task
from experiments import video
from experiments.configs import tnvpf_gecv, tnvpf_synthcrowd

EMBED_DIM = 128  # EmoNet's embedding size M
CONFIGS = {"paper (tnvpf_gecv)": tnvpf_gecv.get_config,
           "CPU (tnvpf_synthcrowd)": tnvpf_synthcrowd.get_config}


def _batch(config) -> dict:
  """A full training batch at the curriculum's longest window, every slot valid."""
  b, t = config.batch_size, max(int(n) for n, _ in config.clip.curriculum)
  g, n = config.model.max_groups, config.model.max_faces
  return {"embeddings": jax.ShapeDtypeStruct((b, t, g, n, EMBED_DIM), jnp.float32),
          "face_mask": jax.ShapeDtypeStruct((b, t, g, n), bool),
          "group_mask": jax.ShapeDtypeStruct((b, t, g), bool),
          "frame_mask": jax.ShapeDtypeStruct((b, t), bool),
          "frame_labels": jax.ShapeDtypeStruct((b, t), jnp.int32)}


def _filled(shape: jax.ShapeDtypeStruct) -> jax.Array:
  """An array of `shape`: 0.01 for floats, 1 (True) otherwise; enough for a timing."""
  fill = 0.01 if jnp.issubdtype(shape.dtype, jnp.floating) else 1
  return jnp.full(shape.shape, fill, shape.dtype)


def measure(config, time_it: bool) -> dict:
  fusion = video_task.make_fusion(config.model)
  state = jax.eval_shape(lambda: video.initial_state(config, fusion, EMBED_DIM))
  batch = _batch(config)
  step = jax.jit(video_task.make_train_step(fusion))
  compiled = step.lower(state, batch, jax.random.key(0)).compile()
  memory = compiled.memory_analysis()
  row = {"params": count_params(state.params),
         "arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
         "temporaries": memory.temp_size_in_bytes}
  if time_it:
    real_state, real_batch = jax.tree.map(_filled, (state, batch))
    times = []
    for i in range(6):
      start = time.perf_counter()
      jax.block_until_ready(compiled(real_state, real_batch, jax.random.key(i)))
      times.append(time.perf_counter() - start)
    row["seconds_per_step"] = statistics.median(times[1:])
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--time", action="store_true", help="also time the CPU configuration's step")
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}\n")
  print("| configuration | cell | batch x T x G x N | parameters | parameters MB | arguments MB "
        "| outputs MB | temporaries MB | peak <= MB | s/step |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for name, get_config in CONFIGS.items():
    for cell in ("tnvpf", "rnn", "lstm"):
      config = get_config(cell)
      row = measure(config, args.time and name.startswith("CPU"))
      shape = (f"{config.batch_size} x {max(int(n) for n, _ in config.clip.curriculum)} x "
               f"{config.model.max_groups} x {config.model.max_faces}")
      mb = {k: row[k] / 2**20 for k in ("arguments", "outputs", "temporaries")}
      seconds = f"{row['seconds_per_step']:.2f}" if "seconds_per_step" in row else "-"
      print(f"| {name} | {cell} | {shape} | {row['params']:,} | {4 * row['params'] / 2**20:.1f} | "
            f"{mb['arguments']:.1f} | {mb['outputs']:.1f} | {mb['temporaries']:.1f} | "
            f"{sum(mb.values()):.1f} | {seconds} |")


if __name__ == "__main__":
  main()
