"""EmoNet (paper Table 2) on SynthCrowd faces, sized for 2 CPU cores: the default demonstration.

Run:   python -m experiments.run --config=emonet_synthcrowd
Gave:  validation mAC 70.44%, UAR 0.7044, F1 0.7034 (chance 12.5%); accuracy by face
       height 40.2% (8-15 px), 65.2% (16-31), 85.9% (32-63), 93.1% (64-120).
       12.5 minutes on 2 Intel Xeon cores, no GPU, jax 0.10.2, rendering the data included.

The dataset synthcrowd/faces_small (12,000 train / 1,600 validation faces,
8 to 120 px tall before alignment) is rendered on first use into
data.data_dir. Variants: `emonet_synthcrowd:tiny` trains a few steps of a
narrow, shallow EmoNet (width and depth 0.25: every layer kind, a quarter of the
channels, one block per group) on synthcrowd/faces_tiny (what the tests run).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "individual"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthcrowd"
  c.data.config = "faces_small"
  c.data.data_dir = "~/tensorflow_datasets"
  c.data.manual_dir = ""  # unused for rendered data; real builders read their files here
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.augment = True
  c.data.read_threads = 2
  c.data.workers = 0  # grain worker processes; 0 reads in threads (2 cores: JAX needs them)

  c.model = ml_collections.ConfigDict()
  c.model.num_classes = 8
  c.model.embed_dim = 128
  c.model.width = 1.0  # channel multiplier (Table 2 at 1.0)
  c.model.depth = 1.0  # multiplier of the blocks per bottleneck group (Table 2 at 1.0)
  c.model.dtype = "float32"

  c.batch_size = 64  # global: over all devices of all hosts (8 per device on 8)
  c.num_steps = 450
  c.log_every = 15
  c.class_weighting = "inverse_frequency"

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 30
  c.optimizer.schedule = "cosine"
  c.optimizer.clip_global_norm = 5.0

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 90
  c.eval.batch_size = 256
  c.eval.size_buckets = ((8, 16), (16, 32), (32, 64), (64, 121))

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep_latest = 2
  c.checkpoint.best_metric = "UAR"
  c.checkpoint.best_mode = "max"

  if arg == "tiny":
    c.data.config = "faces_tiny"
    c.model.width = 0.25
    c.model.depth = 0.25
    c.num_steps = 6
    c.log_every = 2
    c.batch_size = 16
    c.eval.every = 6  # one evaluation and checkpoint, at the end
    c.eval.batch_size = 64
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of emonet_synthcrowd; known: tiny")
  return c
