"""Group level (paper Sec. 3.2, Table 5) on SynthCrowd groups, sized for 2 CPU cores.

Run:   python -m experiments.run --config=nvpf_synthcrowd:fec
Gave:  validation mAC 51.33%, UAR 0.5115, F1 0.4863 (positive 23.5%, negative
       91.5%, neutral 38.4%; chance 33.3%), on the features of the EmoNet of
       emonet_synthcrowd (step 450, 70.4% mAC). 5.6 minutes on 2 Intel Xeon
       cores, no GPU, jax 0.10.2: 1.7 min rendering groups_small, 2 min caching
       its EmoNet features (first run only), 2 min for 400 steps + 4 evaluations.
       With --config.model.ce_weight=0 (Eq. 7 alone) every group went to the
       middle class (UAR 0.3333): the NLL alone is best served by mapping all
       groups near the middle Gaussian, hence the cross-entropy term, weight 1.
       Baselines on the same cache, 18 s each: `:fea` mAC 70.46%, UAR 0.7031;
       `:feb` mAC 71.75%, UAR 0.7166 — this small FeC is well below them.
       Over seeds 0-2 (--config.seed), validation mAC mean +- std: FeA 70.43 +- 0.05,
       FeB 71.94 +- 0.33, FeC 49.80 +- 2.45, FeC with
       --config.model.prior=learned_gaussian 64.76 +- 0.68 (%).

Needs a trained EmoNet (`python -m experiments.run --config=emonet_synthcrowd`,
its workdir is features.emonet_workdir): the first run caches its embeddings
of synthcrowd/groups_small (5,920 train / 1,239 validation groups, 3.9 faces
on average, 11% with more than 8), later runs read the cache.

Variants, combined with commas (`:fec,tiny`): `fea` score averaging, `feb`
feature concatenation, `fec` NVPF (the default), `e2e` EmoNet fine-tuned
with the fusion on the faces' pixels (features.mode=end_to_end; 100 steps of
16 groups), `tiny` a few steps of small models on synthcrowd/groups_tiny
(what the tests run).

End to end: `:fea,e2e` gave validation mAC 69.41%, UAR 0.6929 (positive
64.7%, negative 71.8%, neutral 71.4%) in 6.9 minutes, 2.6 s per step of 16
groups x 8 slots (128 faces through EmoNet forward and backward) on 2 cores;
a quarter of an epoch, so below the cached FeA's 400 steps (70.46%).
`:fec,e2e` (class_gaussian prior) predicted one class (mAC 33.17%) after its
100 steps: the fixed prior needs more than this budget end to end.

Sizing: the paper's flow (10 units, 32 filters) trains at about 6 groups/s on
2 cores with 16 slots x 128 features (11 s per batch of 64); 4 units of 8
filters over 8 slots train at about 1 step/s, so 400 steps of 64 groups (4.3
epochs) take 2 minutes. The paper's settings are in nvpf_emotiw.
"""

import ml_collections

def _tiny(c: ml_collections.ConfigDict) -> None:
  c.batch_size = 16
  c.num_steps = 4
  c.log_every = 2
  c.eval.every = 2
  c.eval.batch_size = 16
  c.features.batch_size = 16
  c.model.max_faces = 4
  c.model.flow_units = 2
  c.model.flow_width = 4
  c.model.feb_hidden = 16


def _end_to_end(c: ml_collections.ConfigDict) -> None:
  c.features.mode = "end_to_end"
  c.batch_size = 16
  c.num_steps = 100
  c.log_every = 10
  c.eval.every = 50
  c.eval.batch_size = 64
  c.optimizer.warmup_steps = 10


def _fusion(name: str):
  def apply(c: ml_collections.ConfigDict) -> None:
    c.model.fusion = name
  return apply


VARIANTS = {**{name: _fusion(name) for name in ("fea", "feb", "fec")}, "e2e": _end_to_end,
            "tiny": _tiny}


def apply_variants(c: ml_collections.ConfigDict, arg: str | None, config_name: str,
                   variants: dict = VARIANTS) -> list[str]:
  """Applies the comma-separated `variants` named in `arg` in order; returns their names."""
  names = arg.split(",") if arg else []
  for name in names:
    if name not in variants:
      raise ValueError(f"unknown variant {name!r} of {config_name}; known: "
                       f"{', '.join(variants)} (combine with commas)")
    variants[name](c)
  return names


def base_config() -> ml_collections.ConfigDict:
  """Every group config's keys, at this file's CPU sizes."""
  c = ml_collections.ConfigDict()
  c.task = "group"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthcrowd/groups_small"  # NAME/CONFIG, a dataset directory, or "synthcrowd"
  c.data.data_dir = "~/tensorflow_datasets"
  c.data.manual_dir = ""  # real datasets' files (default DATA_DIR/manual/NAME)
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.read_threads = 2
  c.data.workers = 0
  c.data.augment = True  # shift/flip the faces' pixels (end_to_end only; cached features are fixed)

  c.features = ml_collections.ConfigDict()
  c.features.mode = "cached"  # EmoNet frozen, outputs cached once; or "end_to_end" (fine-tuned)
  c.features.emonet_workdir = "runs/emonet_synthcrowd"
  c.features.cache_dir = ""  # default: data.data_dir
  c.features.batch_size = 256  # faces per EmoNet call while caching
  c.features.emonet_learning_rate_scale = 0.1  # end_to_end: EmoNet's rate / the fusion's

  c.model = ml_collections.ConfigDict()
  c.model.fusion = "fec"  # fea | feb | fec (emoflow.tasks.group registry)
  c.model.num_classes = 3
  c.model.max_faces = 8  # N_max slots; larger groups keep their 8 largest faces
  c.model.flow_units = 4
  c.model.flow_width = 8
  # The class prior (emoflow.models.priors; the docstring's study): trained class locations
  # 1.0 apart per group whatever M and n. As printed: class_gaussian, 2.0, line, entry.
  c.model.prior = "learned_gaussian"  # any name in emoflow.models.priors.known()
  c.model.prior_separation = 1.0  # class locations this far apart, in units of prior_scaling
  c.model.prior_geometry = "simplex"  # line (as printed) | simplex
  c.model.prior_scaling = "group"  # entry (as printed) | face | group
  c.model.prior_fixed = ""  # params held at their start, comma-separated (e.g. "log_std")
  c.model.nll_weight = 1.0  # Eq. 7's NLL, in nats per entry
  c.model.ce_weight = 1.0  # cross-entropy beside Eq. 7's NLL; 0 = Eq. 7 alone (see above)
  c.model.feb_hidden = 256

  c.batch_size = 64  # global: over all devices of all hosts (8 per device on 8)
  c.num_steps = 400
  c.log_every = 20
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 30
  c.optimizer.schedule = "cosine"
  c.optimizer.clip_global_norm = 5.0

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 100
  c.eval.batch_size = 256
  c.eval.reference_workdir = ""  # the run results.md's paired mAC differences are taken to

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep_latest = 2
  c.checkpoint.best_metric = "UAR"
  c.checkpoint.best_mode = "max"
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config()
  c.num_steps = 800  # 2.1 epochs of the 23,829 training groups
  c.eval.every = 800  # once, at the end: the study's runs (docstring)
  c.optimizer.learning_rate = 3e-3  # FeC at 1e-3 is not converged in 800 steps (docstring)
  c.eval.reference_workdir = "runs/nvpf_synthcrowd_fea"  # paired differences to its `:fea` run
  if "tiny" in apply_variants(c, arg, "nvpf_synthcrowd"):
    c.data.source = "synthcrowd/groups_tiny"
  return c
