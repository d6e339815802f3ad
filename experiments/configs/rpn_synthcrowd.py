"""The group proposal network (the paper's RPN, ResNet-18 trunk, 9 anchors) on SynthCrowd frames.

Run:   python -m experiments.run --config=rpn_synthcrowd
Gave:  validation (300 frames, 955 groups): RPN mAP@0.5 0.890, mAP@[0.5:0.95] 0.495,
       recall 0.919 / precision 0.752 at score >= 0.5 and IoU 0.5; k-means on the
       annotated faces 0.548, 0.482, 0.694 / 0.767. Test split (888 groups): RPN 0.913,
       0.533; k-means 0.566, 0.493. 1,000 steps in 21 minutes on 2 AMD EPYC cores
       (shared with test runs), no GPU. The paper reports 86.4% mAP on GECV.

The dataset synthcrowd/frames_small (1,500 train / 300 validation frames of
640x360, 2 to 40 faces in groups, each group boxed and labelled) is rendered
on first use into data.data_dir. The RPN is trained from scratch (no
ImageNet weights can be downloaded here) with Faster R-CNN's loss
(emoflow.tasks.proposals) and scored against the annotated group boxes, next
to k-means on the annotated faces (experiments/proposals.py).
The paper's trunk is ResNet-18 (model.width 1: 512-d maps); this CPU config
halves every channel count (256-d maps), which `rpn_gecv` does not. Anchors:
3 scales x 3 ratios per cell of the stride-32 map; the scales cover the
SynthCrowd group boxes (sqrt of area 23 to 218 px at 640x360, 5th-95th
percentile). Variants: `tiny` trains a few steps on synthcrowd/frames_tiny at a
quarter of the size with a narrow trunk (what the tests run).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "proposals"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthcrowd"
  c.data.config = "frames_small"
  c.data.data_dir = "~/tensorflow_datasets"
  c.data.manual_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.input_scale = 1.0  # frames are resized by this before the network (train and eval)
  c.data.flip = True
  c.data.read_threads = 2
  c.data.workers = 0

  c.model = ml_collections.ConfigDict()
  c.model.width = 0.5  # trunk channels x width: 1 is ResNet-18 (512-d maps)
  c.model.dtype = "float32"
  c.model.scales = (32.0, 80.0, 200.0)  # anchor sqrt(area), pixels of the network's input
  c.model.ratios = (0.5, 1.0, 2.0)  # anchor height / width
  c.model.max_groups = 32  # ground-truth group slots per training frame

  c.loss = ml_collections.ConfigDict()
  c.loss.anchors_per_image = 256  # sampled anchors per image, up to half positive (Faster R-CNN)
  c.loss.box_weight = 1.0

  c.batch_size = 8  # global: over all devices of all hosts (1 per device on 8)
  c.num_steps = 1000
  c.log_every = 20
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  c.optimizer.warmup_steps = 20
  c.optimizer.schedule = "cosine"
  c.optimizer.clip_global_norm = 10.0

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 500
  c.eval.batch_size = 16
  c.eval.max_faces = 64  # face slots per frame for the k-means baseline: must hold every face
  c.eval.max_groups = 32  # annotated group slots per frame: must hold every group (checked)
  c.eval.k_max = 10  # the k-means baseline's largest k (the pipeline's default)
  c.eval.score_threshold = 0.5  # the pipeline's: proposals kept for grouping and recall/precision
  c.eval.nms_threshold = 0.5
  c.eval.ap_score_threshold = 0.01  # the one proposal pass; mAP uses all its boxes
  c.eval.max_proposals = 32
  c.eval.min_size = 4.0  # pixels of the network's input

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep_latest = 2
  c.checkpoint.best_metric = "mAP50"
  c.checkpoint.best_mode = "max"

  if arg == "tiny":
    c.data.config = "frames_tiny"
    c.data.input_scale = 0.25
    c.model.width = 0.125
    c.model.scales = (8.0, 20.0, 50.0)
    c.num_steps = 4
    c.log_every = 2
    c.eval.every = 4  # one evaluation and checkpoint, at the end
    c.eval.batch_size = 8
    c.eval.min_size = 1.0
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of rpn_synthcrowd; known: tiny")
  return c
