"""Cache a trained EmoNet's per-face outputs for group and clip training.

  python -m experiments.cache_features --workdir=RUN --dataset=NAME/CONFIG
      [--data_dir=DIR] [--out_dir=DIR] [--batch_size=256]

Restores the run in RUN (its config.json; the best checkpoint, else the
latest), runs EmoNet once over every split of the dataset and writes
OUT_DIR/emonet_features/<NAME>_<CONFIG>_v<VERSION>_step<S>_<DIGEST>/1.0.0, the records
with embeddings and logits in place of face pixels
(data_pipelines/builders/features.py). --dataset is NAME/CONFIG of the
builders registry (built under --data_dir first if absent) or the directory
of a prepared TFDS dataset. A cache that exists already is reused; a
multi-host job only reads caches, written before by this command. A user
mistake ends with one line on stderr and exit code 2 (--debug: traceback).
"""

import hashlib
import os
import time

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from data_pipelines import loaders
from data_pipelines.builders import features
from emoflow.tasks import individual as individual_task
from emoflow.train import parallel
from experiments import command, individual
from experiments.workdir import load_config

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as the command, so importing the functions below defines no flags."""
  flags.DEFINE_string("workdir", None, "run directory of a trained EmoNet")
  flags.DEFINE_string("dataset", None, "NAME/CONFIG, or a prepared TFDS dataset directory")
  flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "where NAME/CONFIG lives")
  flags.DEFINE_string("out_dir", None, "where the cache goes (default: --data_dir)")
  flags.DEFINE_integer("batch_size", 256, "faces per EmoNet call", lower_bound=1)
  flags.DEFINE_bool("debug", False, "show tracebacks for user errors")


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of the EmoNet run in `workdir`; one-line errors if it holds no such run."""
  return load_config(workdir, "individual")


def restore(workdir: str, mesh):
  """(config, model, state on `mesh`, step) of the EmoNet run in `workdir`: best, else latest."""
  config = run_config(workdir)
  model, state, step = individual.restore(config, workdir, mesh)
  return config, model, state, step


def digest(tree) -> str:
  """sha256 of a pytree's leaves (shape, dtype, bytes), in tree order."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    leaf = np.asarray(leaf)
    h.update(f"{leaf.shape}{leaf.dtype}".encode())
    h.update(leaf.tobytes())
  return h.hexdigest()


def make_embed(model, state, mesh, batch_size: int) -> features.EmbedFn:
  """faces uint8 [K, 112, 112, 3] -> (embeddings, logits), run on `mesh` in padded batches."""
  def outputs(state, faces):  # (logits, embeddings)
    return individual_task.infer(model, state.variables, faces)

  apply = parallel.jit_eval_step(outputs, mesh)

  def embed(faces: np.ndarray):
    parts = []
    for start in range(0, len(faces), batch_size):
      chunk = faces[start:start + batch_size]
      padded = np.zeros((batch_size, *chunk.shape[1:]), np.uint8)
      padded[:len(chunk)] = chunk
      logits, embeddings = apply(state, parallel.shard_batch(padded, mesh))
      parts.append((np.asarray(embeddings)[:len(chunk)], np.asarray(logits)[:len(chunk)]))
    return tuple(np.concatenate(p) for p in zip(*parts))

  return embed


def source_builder(dataset: str, data_dir: str):
  """The TFDS builder of a prepared dataset directory, or of NAME/CONFIG (built if absent)."""
  if os.path.isdir(dataset):
    return tfds.builder_from_directory(dataset)
  name, sep, config = dataset.partition("/")
  if not (sep and name and config) or "/" in config:
    raise ValueError(f"--dataset must be NAME/CONFIG or a prepared dataset directory, "
                     f"got {dataset!r}")
  return loaders.prepare(name, config, data_dir)


def cache(workdir: str, dataset: str, *, data_dir: str, out_dir: str,
          batch_size: int) -> tuple[features.EmonetFeatures, bool]:
  """Writes (or finds) the cache of `dataset` by the run in `workdir`; (builder, written now)."""
  mesh = parallel.make_data_mesh()
  parallel.check_batch_size(batch_size, mesh, "--batch_size")
  config, model, state, step = restore(workdir, mesh)  # checks the run before touching data
  builder = features.EmonetFeatures(
      source=source_builder(dataset, data_dir), embed=make_embed(model, state, mesh, batch_size),
      embed_dim=config.model.embed_dim, num_classes=config.model.num_classes, step=step,
      digest=digest(state.variables), metadata={"workdir": os.path.abspath(workdir)},
      data_dir=out_dir)
  written = not builder.is_prepared()
  if written and jax.process_count() > 1:
    raise ValueError(f"no EmoNet feature cache of {dataset} for {workdir} under {out_dir}; "
                     "write it with one process first: python -m experiments.cache_features "
                     f"--workdir={workdir} --dataset={dataset} --data_dir={data_dir}")
  builder.download_and_prepare()
  return builder, written


def main() -> None:
  for name in ("workdir", "dataset"):
    if not FLAGS[name].value:
      raise ValueError(f"--{name} is required")
  if not os.path.isdir(FLAGS.workdir):
    raise FileNotFoundError(f"--workdir {FLAGS.workdir} does not exist")
  start = time.perf_counter()
  data_dir = os.path.expanduser(FLAGS.data_dir)
  builder, written = cache(FLAGS.workdir, FLAGS.dataset, data_dir=data_dir,
                           out_dir=os.path.expanduser(FLAGS.out_dir or data_dir),
                           batch_size=FLAGS.batch_size)
  sizes = ", ".join(f"{name} {split.num_examples}" for name, split in builder.info.splits.items())
  verb = f"wrote in {time.perf_counter() - start:.1f} s" if written else "exists"
  print(f"{builder.info.full_name} ({sizes}) {verb}: {builder.data_dir}")


if __name__ == "__main__":
  _define_flags()
  command.run(main)
