"""grain pipelines over the TFDS ArrayRecord datasets: faces (this slice), groups, clips.

Training batches are a pure function of (seed, step): a per-epoch shuffle,
a per-example seeded augmentation and fixed-size batches, sliced from the
requested step, so a resumed run sees exactly the batches it would have.
Each JAX process reads only its own 1/process_count of every batch.
"""

import os

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import builders


def prepare(name: str, config: str, data_dir: str, manual_dir: str | None = None):
  """Builds dataset `name/config` under `data_dir` if absent and returns its TFDS builder."""
  builder = builders.get(name)(config=config, data_dir=os.path.expanduser(data_dir),
                               file_format="array_record")
  manual_dir = os.path.expanduser(manual_dir or os.path.join(data_dir, "manual", name))
  os.makedirs(manual_dir, exist_ok=True)  # TFDS wants it to exist even for rendered data
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def split_source(builder, split: str):
  """Random-access source over one split (decoded numpy records)."""
  if split not in builder.info.splits:
    raise ValueError(f"dataset {builder.info.full_name} has no split {split!r}; "
                     f"it has: {', '.join(builder.info.splits)}")
  return builder.as_data_source(split=split)


def augment_face(image: np.ndarray, rng: np.random.Generator, max_shift: int = 4) -> np.ndarray:
  """Horizontal flip, a shift of up to `max_shift` px (edge padded), brightness/contrast jitter."""
  if rng.random() < 0.5:
    image = image[:, ::-1]
  dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
  padded = np.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
  h, w = image.shape[:2]
  image = padded[max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]
  contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
  mean = image.mean()
  out = (image.astype(np.float32) - mean) * contrast + mean + brightness
  return np.clip(out, 0, 255).astype(np.uint8)


def _face_example(record: dict) -> dict:
  return {"image": record["image"], "label": np.int32(record["emotion"]),
          "face_px": np.int32(record["face_px"])}


def train_face_batches(source, *, batch_size: int, seed: int, num_steps: int, start_step: int = 0,
                       augment: bool = True, read_threads: int = 2, workers: int = 0):
  """Iterator over this process's share of global batches start_step .. num_steps-1."""
  process_count, process_index = jax.process_count(), jax.process_index()
  local_batch = batch_size // process_count
  epochs = -(-num_steps * batch_size // len(source)) + 1
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(epochs)
  ds = ds[: num_steps * batch_size][process_index::process_count].map(_face_example)
  if augment:
    ds = ds.random_map(lambda ex, rng: {**ex, "image": augment_face(ex["image"], rng)},
                       seed=seed + 1)
  ds = ds.batch(local_batch, drop_remainder=True)[start_step:]
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=4 * local_batch))
  if workers:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(it)


def eval_face_batches(source, batch_size: int):
  """This process's share of fixed-size batches covering the split once; padding has valid=False."""
  process_count, process_index = jax.process_count(), jax.process_index()
  local_batch = batch_size // process_count
  num_batches = -(-len(source) // batch_size)
  for b in range(num_batches):
    indices = b * batch_size + process_index * local_batch + np.arange(local_batch)
    valid = indices < len(source)
    examples = [_face_example(source[int(i)]) for i in np.where(valid, indices, 0)]
    batch = {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
    batch["valid"] = valid
    yield batch
