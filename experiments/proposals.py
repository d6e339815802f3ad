"""Train / evaluate the group proposal network (the paper's RPN) on frames with group boxes.

Training: tasks.proposals' Faster R-CNN loss through fit(), on frames batches
(loaders.train_frame_batches with max_groups: seeded flips, frames resized by
config.data.input_scale), anchors config.model.scales x config.model.ratios.

Evaluation, on config.data.eval_split, against the annotated group boxes
(clipped to the frame):
- the RPN: vision.rpn.GroupProposer (what the pipeline runs) at a low score
  threshold (eval.ap_score_threshold), NMS at eval.nms_threshold, at most
  eval.max_proposals per frame, boxes in frame pixels;
- the k-means baseline: vision.grouping.group_faces over the frame's
  annotated faces (the same rule the pipeline uses), each group's box the
  union of its faces' boxes. k-means has no confidence, so its groups are
  ranked by their number of faces.
For each: mAP@0.5 and mAP@[0.5:0.95] (emoflow.metrics.detection_ap: greedy
matching in descending score, all-point interpolated AP; one class, so mAP =
AP), and recall / precision at IoU 0.5 of the boxes scoring >=
eval.score_threshold (every k-means group).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from data_pipelines import loaders
from emoflow import metrics
from emoflow.tasks import proposals
from emoflow.train import loop, optimizer, parallel
from emoflow.train.state import TrainState
from emoflow.vision import grouping, rpn
from experiments import individual


def make_model(config) -> rpn.RPN:
  return rpn.RPN(num_anchors=len(config.model.scales) * len(config.model.ratios),
                 width=config.model.width, dtype=jnp.dtype(config.model.dtype))


def initial_state(config, model) -> TrainState:
  images = jnp.zeros((1, 64, 64, 3), jnp.float32)
  variables = jax.jit(lambda rng: model.init(rng, images, train=False))(jax.random.key(config.seed))
  return TrainState.create(variables, optimizer.make_optimizer(config.optimizer, config.num_steps))


def make_proposer(config, model, variables, score_threshold: float, max_proposals: int):
  """The GroupProposer of a run's config (the pipeline's, with its thresholds)."""
  return rpn.GroupProposer(model, variables, scales=config.model.scales,
                           ratios=config.model.ratios, input_scale=config.data.input_scale,
                           score_threshold=score_threshold,
                           nms_threshold=config.eval.nms_threshold, max_proposals=max_proposals,
                           min_size=config.eval.min_size)


def _prepare(config):
  return loaders.prepare(config.data.name, config.data.config, config.data.data_dir,
                         config.data.manual_dir)


def score(frames: list, score_threshold: float) -> dict:
  """mAP@0.5, mAP@[0.5:0.95], recall and precision at IoU 0.5 of per-frame (boxes, scores, gt)."""
  ap = metrics.detection_ap(frames)
  kept = [(b[s >= score_threshold], s[s >= score_threshold], gt) for b, s, gt in frames]
  found = [metrics.match_detections(b, s, gt, 0.5) for b, s, gt in kept]
  num_gt, num_kept = sum(len(gt) for *_, gt in frames), sum(len(b) for b, *_ in kept)
  hits = sum(int((m >= 0).sum()) for m in found)
  return {"mAP50": ap[0.5], "mAP": float(np.mean(list(ap.values()))),
          "recall": hits / num_gt if num_gt else float("nan"),
          "precision": hits / num_kept if num_kept else float("nan"),
          "boxes_per_frame": num_kept / max(len(frames), 1)}


def make_evaluate(config, model, builder, split: str):
  """evaluate(state) -> the module docstring's numbers for the RPN and (prefixed kmeans_) k-means."""
  source = loaders.split_source(builder, split)
  proposer = make_proposer(config, model, None, config.eval.ap_score_threshold,
                           config.eval.max_proposals)
  kmeans = jax.jit(jax.vmap(lambda b, v: grouping.group_faces(b, v, k_max=config.eval.k_max)))

  def evaluate(state) -> dict:
    proposer.variables = jax.device_get(state.variables)  # this process's copy, on its device
    rpn_frames, kmeans_frames = [], []
    for batch in loaders.eval_frame_batches(source, config.eval.batch_size, config.eval.max_faces,
                                            max_groups=config.eval.max_groups):
      boxes, scores, valid = jax.device_get(proposer(batch["image"]))
      groups = jax.device_get(kmeans(batch["boxes"], batch["valid"]))
      sizes = np.stack([np.sum(groups.face_group == g, -1) for g in range(config.eval.k_max)], -1)
      out = {"boxes": boxes, "scores": scores, "keep": valid, "kmeans_boxes": groups.boxes,
             "kmeans_sizes": sizes, "kmeans_keep": groups.valid, "gt": batch["group_boxes"],
             "gt_valid": batch["group_valid"], "frame_valid": batch["frame_valid"],
             "num_groups": batch["num_groups"], "num_faces": batch["num_faces"]}
      if jax.process_count() > 1:  # every process scores all frames
        out = multihost_utils.process_allgather(out, tiled=True)
      for f in np.flatnonzero(out["frame_valid"]):
        if out["num_groups"][f] > config.eval.max_groups or out["num_faces"][f] > config.eval.max_faces:
          raise ValueError(f"a frame of {split} has {out['num_groups'][f]} groups and "
                           f"{out['num_faces'][f]} faces, more than eval.max_groups="
                           f"{config.eval.max_groups} or eval.max_faces={config.eval.max_faces}")
        gt = out["gt"][f][out["gt_valid"][f]]
        keep, mine = out["keep"][f], out["kmeans_keep"][f]
        rpn_frames.append((out["boxes"][f][keep], out["scores"][f][keep], gt))
        kmeans_frames.append((out["kmeans_boxes"][f][mine],
                              out["kmeans_sizes"][f][mine].astype(np.float64), gt))
    results = score(rpn_frames, config.eval.score_threshold)
    results.update({f"kmeans_{k}": v for k, v in score(kmeans_frames, 0.0).items()})
    results["groups"] = sum(len(gt) for *_, gt in rpn_frames)
    results["frames"] = len(rpn_frames)
    return results

  return evaluate


def train(config, workdir: str) -> dict:
  """Builds the frames if absent, trains with fit() (resuming), returns the final evaluation."""
  mesh = parallel.make_data_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  builder = _prepare(config)
  source = loaders.split_source(builder, config.data.train_split)
  model = make_model(config)
  outcome = loop.fit(
      workdir=workdir, state=initial_state(config, model),
      train_step=proposals.make_train_step(model, scales=config.model.scales,
                                           ratios=config.model.ratios,
                                           per_image=config.loss.anchors_per_image,
                                           box_weight=config.loss.box_weight),
      train_batches=lambda start: loaders.train_frame_batches(
          source, batch_size=config.batch_size, max_faces=1, seed=config.seed,  # faces unused
          num_steps=config.num_steps, start_step=start, scale=config.data.input_scale,
          flip=config.data.flip, read_threads=config.data.read_threads,
          workers=config.data.workers, max_groups=config.model.max_groups),
      evaluate=make_evaluate(config, model, builder, config.data.eval_split),
      num_steps=config.num_steps, seed=config.seed, mesh=mesh, log_every=config.log_every,
      eval_every=config.eval.every, keep_latest=config.checkpoint.keep_latest,
      best_metric=config.checkpoint.best_metric, best_mode=config.checkpoint.best_mode)
  return outcome["eval"]


def evaluate(config, workdir: str) -> dict:
  """Evaluates the best checkpoint in `workdir` on `config.data.eval_split`."""
  mesh = parallel.make_data_mesh()
  builder = _prepare(config)
  model = make_model(config)
  state, _ = individual.restore_best(config, workdir, mesh, lambda: initial_state(config, model))
  return make_evaluate(config, model, builder, config.data.eval_split)(state)


def results_markdown(results: dict, title: str) -> str:
  """The RPN's and the k-means baseline's group boxes against the annotated ones, as markdown."""
  row = lambda name, p: (f"| {name} | {results[p + 'mAP50']:.4f} | {results[p + 'mAP']:.4f} | "
                         f"{results[p + 'recall']:.4f} | {results[p + 'precision']:.4f} | "
                         f"{results[p + 'boxes_per_frame']:.2f} |")
  return "\n".join([
      f"## {title}", "",
      f"Group boxes against the {results['groups']} annotated groups of {results['frames']} "
      "frames; recall and precision at IoU 0.5.", "",
      "| grouping | mAP@0.5 | mAP@[0.5:0.95] | recall | precision | boxes per frame |",
      "|---|---|---|---|---|---|",
      row("RPN", ""), row("k-means on the annotated faces", "kmeans_")]) + "\n"
