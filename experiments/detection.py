"""Train / evaluate RetinaFace (the paper's face detector) on SynthCrowd frames: the detection level.

Training: tasks.detection's multibox loss through fit(), on frames batches
(loaders.train_frame_batches: G = config.model.max_faces largest faces,
seeded flips) resized by config.data.input_scale.

Evaluation: vision.detect.RetinaFaceDetector (the detector the pipeline
runs, at the same input_scale, boxes back in frame pixels) over the eval
split, scored against the rendered boxes clipped to the frame:
- a detection matches a face at IoU >= 0.5; per frame, detections are taken
  in descending score and each takes the unmatched face it overlaps most, so
  every face is matched at most once (the VOC / WIDER FACE rule);
- recall = matched faces / faces and precision = matched detections /
  detections, for the detections with score >= config.eval.score_threshold
  (0.5; NMS at 0.4), overall and per face height bucket (a face counts in the
  bucket of its clipped box's height; an unmatched detection in the bucket of
  its own height, a matched one in its face's);
- AP: the area under the precision/recall curve of all detections with score
  >= eval.ap_score_threshold (all-point interpolation, as VOC 2010+).
One detector pass at the low threshold gives both: greedy NMS and greedy
matching both go in descending score, so the detections above 0.5 and their
matches are exactly those of a pass at 0.5 (the slots, eval.max_detections
per frame, must not fill: `dropped` is reported).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from data_pipelines import loaders
from emoflow import metrics
from emoflow.tasks import detection
from emoflow.train import loop, optimizer, parallel
from emoflow.train.state import TrainState
from emoflow.vision import detect, retinaface
from experiments import individual

IOU_THRESHOLD = 0.5


def make_model(config) -> retinaface.RetinaFace:
  return retinaface.RetinaFace(trunk=config.model.trunk, dtype=jnp.dtype(config.model.dtype))


def initial_state(config, model) -> TrainState:
  images = jnp.zeros((1, 64, 64, 3), jnp.float32)
  variables = jax.jit(lambda rng: model.init(rng, images, train=False))(jax.random.key(config.seed))
  return TrainState.create(variables, optimizer.make_optimizer(config.optimizer, config.num_steps))


def _prepare(config):
  return loaders.prepare(config.data.name, config.data.config, config.data.data_dir)


def _bucket_name(low: int, high: int) -> str:
  return f"{low}-{high - 1}" if high < 10_000 else f"{low}+"


def score(frames: list, *, score_threshold: float, size_buckets) -> dict:
  """Recall / precision / AP (module docstring) of per-frame (boxes, scores, gt boxes)."""
  kept_scores, kept_match, det_heights, kept_above, face_heights, matched_faces = (
      [], [], [], [], [], [])
  num_faces = 0
  for boxes, scores, gt in frames:
    matched = metrics.match_detections(boxes, scores, gt, IOU_THRESHOLD)
    gt_height = gt[:, 3] - gt[:, 1]
    num_faces += len(gt)
    face_heights.append(gt_height)
    hit = np.zeros(len(gt), bool)
    above = scores >= score_threshold
    hit[matched[above & (matched >= 0)]] = True
    matched_faces.append(hit)
    kept_scores.append(scores)
    kept_match.append(matched >= 0)
    det_heights.append(np.where(matched >= 0, gt_height[np.maximum(matched, 0)] if len(gt) else 0,
                                boxes[:, 3] - boxes[:, 1]))
    kept_above.append(above)
  scores, is_tp = np.concatenate(kept_scores), np.concatenate(kept_match)
  heights, above = np.concatenate(det_heights), np.concatenate(kept_above)
  face_heights, hit = np.concatenate(face_heights), np.concatenate(matched_faces)
  ratio = lambda a, b: float(a / b) if b else float("nan")
  results = {"AP": metrics.average_precision(scores, is_tp, num_faces),
             "recall": ratio(hit.sum(), num_faces),
             "precision": ratio((is_tp & above).sum(), above.sum()),
             "faces": num_faces, "detections": int(above.sum())}
  for low, high in size_buckets:
    name = _bucket_name(low, high)
    in_faces = (face_heights >= low) & (face_heights < high)
    in_dets = above & (heights >= low) & (heights < high)
    results[f"recall@{name}"] = ratio((hit & in_faces).sum(), in_faces.sum())
    results[f"precision@{name}"] = ratio((is_tp & in_dets).sum(), in_dets.sum())
    results[f"faces@{name}"] = int(in_faces.sum())
    results[f"detections@{name}"] = int(in_dets.sum())
  return results


def make_evaluate(config, model, builder, split: str):
  """evaluate(state) -> the module docstring's metrics on `split`, plus `dropped`."""
  source = loaders.split_source(builder, split)
  detector = detect.RetinaFaceDetector(
      model, None, score_threshold=config.eval.ap_score_threshold,
      nms_threshold=config.eval.nms_threshold, max_faces=config.eval.max_detections,
      input_scale=config.data.input_scale)

  def evaluate(state) -> dict:
    # This process's copy: the detector runs on its own device, over its share of the frames.
    detector.variables = jax.device_get(state.variables)
    frames, dropped = [], 0
    for batch in loaders.eval_frame_batches(source, config.eval.batch_size,
                                            config.eval.max_faces):
      found = jax.device_get(detector(batch["image"]))
      out = {"found": found.boxes, "scores": found.scores, "keep": found.valid,
             "dropped": found.dropped, "faces": batch["boxes"], "faces_valid": batch["valid"],
             "frame_valid": batch["frame_valid"], "num_faces": batch["num_faces"]}
      if jax.process_count() > 1:  # every process scores all frames
        out = multihost_utils.process_allgather(out, tiled=True)
      for f in np.flatnonzero(out["frame_valid"]):
        if out["num_faces"][f] > config.eval.max_faces:
          raise ValueError(f"a frame of {split} has {out['num_faces'][f]} faces, more than "
                           f"eval.max_faces={config.eval.max_faces}; raise it")
        keep = out["keep"][f]
        frames.append((out["found"][f][keep], out["scores"][f][keep],
                       out["faces"][f][out["faces_valid"][f]]))
        dropped += int(out["dropped"][f])
    results = score(frames, score_threshold=config.eval.score_threshold,
                    size_buckets=tuple(tuple(b) for b in config.eval.size_buckets))
    return {**results, "dropped": dropped}

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
      train_step=detection.make_train_step(model),
      train_batches=lambda start: loaders.train_frame_batches(
          source, batch_size=config.batch_size, max_faces=config.model.max_faces,
          seed=config.seed, num_steps=config.num_steps, start_step=start,
          scale=config.data.input_scale, flip=config.data.flip,
          read_threads=config.data.read_threads, workers=config.data.workers),
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
  """Recall / precision at IoU 0.5 overall and per face height, AP, as markdown."""
  lines = [f"## {title}", "", "RetinaFace against the rendered face boxes, IoU >= 0.5.", "",
           "| faces | detections | recall | precision | AP |", "|---|---|---|---|---|",
           f"| {results['faces']} | {results['detections']} | {results['recall']:.4f} | "
           f"{results['precision']:.4f} | {results['AP']:.4f} |", "",
           "| face height (px) | faces | recall | detections | precision |",
           "|---|---|---|---|---|"]
  for name in (k[len("recall@"):] for k in results if k.startswith("recall@")):
    lines.append(f"| {name} | {results[f'faces@{name}']} | {results[f'recall@{name}']:.4f} | "
                 f"{results[f'detections@{name}']} | {results[f'precision@{name}']:.4f} |")
  if results.get("dropped"):
    lines.append(f"\nwarning: {results['dropped']} candidates beyond eval.max_detections slots")
  return "\n".join(lines) + "\n"
