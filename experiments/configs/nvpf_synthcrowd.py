"""Group level (paper Sec. 3.2, Table 5) on SynthCrowd groups, sized for 2 CPU cores.

Run:   python -m experiments.run --config=nvpf_synthcrowd        (FeC; `:fea`, `:feb`)
Gave:  seeds 0-2 (--config.seed), 800 steps each, on the features of the
       EmoNet of emonet_synthcrowd (step 450, 69.3% mAC on faces), mAC with
       95% intervals and the paired difference to FeA of the same seed
       (emoflow.bootstrap), mean over the seeds, scored on the same
       resampled groups (`experiments.sweep --sweep=@runs.json`, one fea, feb
       and fec run per seed; then `--eval_split=test`, looked at once):

       | fusion | validation (5,971 groups) | - FeA (points) | test (5,995 groups) | - FeA (points) |
       |---|---|---|---|---|
       | FeA | 70.09% (68.94-71.22) | | 70.89% (69.72-72.00) | |
       | FeB | 70.99% (69.90-72.10) | +0.90 (+0.35 to +1.46) | 71.21% (70.07-72.28) | +0.32 (-0.31 to +0.92) |
       | FeB, 1200 steps at 1e-3 | 71.03% (69.94-72.13) | +0.94 (+0.35 to +1.55) | 71.60% (70.49-72.65) | +0.72 (+0.03 to +1.39) |
       | FeC (this config) | 71.74% (70.66-72.86) | +1.65 (+1.02 to +2.31) | 72.33% (71.24-73.44) | +1.45 (+0.73 to +2.16) |
       | true face emotions, majority valence (ceiling) | 80.87% (79.85-81.88) | | 81.17% (80.17-82.12) | |

       Per seed, FeC's mAC is 71.73 / 71.70 / 71.80% (validation), 72.34 /
       72.39 / 72.26% (test). FeC beats both baselines with the interval of
       its gain over FeA above 0, but by less than the paper's +2.4 points
       (and the +2.0 the study aimed at).
       By faces in the group (the same runs' saved per-group results and
       each group's face count, seed means; a run's results.md now prints
       this table for itself, experiments.group.size_table), FeC - FeA:

       | faces | validation groups | - FeA | test groups | - FeA |
       |---|---|---|---|---|
       | 1 | 2,130 (36%) | +1.00 (+0.17 to +1.88) | 2,159 | +0.85 (-0.08 to +1.78) |
       | 2-3 | 1,843 | +2.51 (+1.27 to +3.83) | 1,800 | +1.96 (+0.61 to +3.33) |
       | 4 or more | 1,998 | +1.55 (+0.38 to +2.79) | 2,036 | +1.62 (+0.28 to +2.90) |
       | 2 or more | 3,841 | +2.01 (+1.11 to +2.90) | 3,836 | +1.78 (+0.83 to +2.69) |

       So the missing +2 is not only the one-face groups: on groups of two
       or more faces the gain is +2.0 (validation) and +1.8 (test).
       FeC takes about 13 minutes alone on 2 AMD EPYC cores (jax 0.10.2: 1.5 min
       compiling, then ~1.1 steps/s); FeA and FeB about 1 minute each.

The FeC recipe, from the study below: learned_gaussian class locations
separation 1.0 apart per group whatever M and the number of faces n
(prior_geometry simplex, prior_scaling group: the locations of a group of n
faces are the stored ones over sqrt(n), as IB-INN keeps class distances
independent of the dimension), loss = NLL per entry (Eq. 7, nll_weight 1) +
cross-entropy of the class log-likelihoods (ce_weight 1), Adam at 3e-3.
As printed (class_gaussian means -2 / 0 / +2 on every entry: two classes
2 * 2 * sqrt(M n) apart, log-likelihoods thousands of nats apart, a saturated
cross-entropy) is `--config.model.prior=class_gaussian
--config.model.prior_separation=2.0 --config.model.prior_geometry=line
--config.model.prior_scaling=entry`.

The study (validation, seed 0, paired difference to FeA of the same
features and seed; 4 units x 8 filters unless said; steps at lr 1e-3 unless said):

| train groups | prior | geometry / scaling / separation | other | mAC | - FeA (points) |
|---|---|---|---|---|---|
| 5,920 | class_gaussian | line / entry / 2 (as printed) | 400 steps | 47.30% | -22.36 (-23.90 to -20.92) |
| 5,920 | class_gaussian | simplex / face / 2 | 400 steps | 52.92% | -16.73 (-18.14 to -15.37) |
| 5,920 | learned_gaussian | line / entry / 2 | 400 steps | 63.77% | -5.88 (-7.03 to -4.72) |
| 5,920 | learned_gaussian | line / face / 2 | 400 steps | 70.24% | +0.59 (-0.34 to +1.44) |
| 5,920 | learned_gaussian | simplex / face / 1, 2, 4 | 400 steps | 70.81, 70.56, 69.27% | +1.16, +0.90, -0.39 |
| 5,920 | learned_gaussian | simplex / face / 2 | nll_weight 0 or 0.1 | 70.66% | +1.00 (+0.22 to +1.83) |
| 5,920 | learned_gaussian | simplex / group / 2, 5 | 400 steps | 70.86, 69.84% | +1.21, +0.18 |
| 5,920 | learned_gaussian | simplex / group / 1 | 400 steps at 3e-3 | 71.33% | +1.67 (+0.85 to +2.51) |
| 5,920 | learned_gaussian | simplex / group / 1 | 1200 steps at 1e-3 | 70.73% | +1.07 (+0.23 to +1.88) |
| 5,920 | learned_gaussian | simplex / group / 1 | 1200 steps at 3e-3 | 69.40% | -0.25 (-1.16 to +0.69) |
| 23,829 | learned_gaussian | simplex / face / 1 | 400 steps at 3e-3 | 71.19% | +1.54 (+0.74 to +2.34) * |
| 23,829 | learned_gaussian | simplex / group / 1 | 400 steps at 3e-3 | 71.61% | +1.96 (+1.14 to +2.75) * |
| 23,829 | learned_gaussian | simplex / group / 1 | 800 steps at 3e-3 (default) | 71.73% | +1.73 (+1.02 to +2.43) |
| 23,829 | learned_gaussian | simplex / group / 2 | 800 steps at 3e-3 | 71.61% | +1.96 (+1.21 to +2.75) * |
| 23,829 | learned_gaussian | simplex / group / 1 | 2 units x 4 filters | 71.63% | +1.98 (+1.21 to +2.80) * |

(* against the FeA of 400 steps at 1e-3, 69.65%; FeA of 800 steps at 3e-3,
the default, is 70.01%, so these are ~0.35 points less against it.) The scale
of the class scores was the whole failure: with class distances fixed per
group, every prior, scaling and size tried lands within a point of the
others; the NLL term barely matters (its weight 0, 0.1 or 1 gives the same
mAC). On 5,920 training groups FeC overfits after ~400 steps at 3e-3 (train
accuracy 77%), hence the 23,829 of groups_small 1.4.0. The headroom is
EmoNet's: a perfect face classifier would allow 80.9% by majority valence.

Needs a trained EmoNet (`python -m experiments.run --config=emonet_synthcrowd`,
its workdir is features.emonet_workdir): the first run renders
synthcrowd/groups_small 1.4.0 (23,829 train / 5,971 validation / 5,995 test
groups; 36% have one face) and caches its embeddings; later runs read the
cache. results.md gives each number's example count and 95% interval, and the
paired difference to the FeA run of eval.reference_workdir.

Variants, combined with commas (`:fec,tiny`): `fea` score averaging, `feb`
feature concatenation, `fec` NVPF (the default), `e2e` EmoNet fine-tuned
with the fusion on the faces' pixels (features.mode=end_to_end; 100 steps of
16 groups), `tiny` a few steps of small models on synthcrowd/groups_tiny
(what the tests run).

End to end (measured before the recipe above, on groups_small 1.2.0):
`:fea,e2e` gave validation mAC 69.41%, UAR 0.6929 in 6.9 minutes, 2.6 s per
step of 16 groups x 8 slots (128 faces through EmoNet forward and backward)
on 2 cores; `:fec,e2e` with the class_gaussian prior as printed predicted one
class (mAC 33.17%) after its 100 steps.

Sizing: the paper's flow (10 units, 32 filters) trains at about 6 groups/s on
2 cores with 16 slots x 128 features (11 s per batch of 64); 4 units of 8
filters over 8 slots train at about 1.1 steps/s. The paper's settings are in
nvpf_emotiw.
"""

import ml_collections

def _tiny(c: ml_collections.ConfigDict) -> None:
  c.batch_size = 16
  c.num_steps = 4
  c.log_every = 2
  c.eval.every = 4  # one evaluation and checkpoint, at the end
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
