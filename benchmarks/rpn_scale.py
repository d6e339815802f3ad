"""The group proposal network's accuracy and speed against its input scale, per frame size.

Renders --frames SynthCrowd frames per frame set (the crowds of
synthcrowd/frames_small, the first frames of its validation split's RNG
streams, JPEG-encoded as the dataset stores them), runs a model directory's
RPN (built as emoflow.pipeline builds it) at each of --scales and at the
scale rpn.frame_scale picks for the frame size (the model.json rpn block's
"frame_size" rule, "rule" in the table), and prints a markdown table: frame
set, scale, network input size, mAP@0.5 and mAP@[0.5:0.95] against the
annotated group boxes, recall and precision at IoU 0.5 of the proposals
scoring >= the block's score_threshold, and seconds per frame (jit warm,
batches of --batch frames). Scoring is experiments.proposals.score (the
proposals runs' evaluation: one proposal pass at a low score threshold,
--ap-score-threshold, mAP over all its boxes), ground truth as the frames
loader gives it (group boxes clipped to the frame).

Frame sets (--sets, comma-separated): WxH renders crowds at that frame size
(SynthCrowd scales the front face size with the frame's area, within the
crowd's face_px range, so a larger frame is partly a wider scene and partly
larger faces: the per-set line gives the median face height and group box
size); WxH*F renders at WxH and upscales the frames (bilinear) and boxes F
times: the same content at F times the pixel size, as a higher-resolution
video of the same scene would show it, less the detail. Either may end in
:FIELD=LO-HI (repeatable) to replace a range of the crowd's
data_pipelines.synthcrowd.crowds.CrowdDifficulty: 1280x720:num_faces=8-160
keeps frames_small's face sizes in a 4x larger scene; 1280x720:face_px=16-240
renders scenes like frames_small's (not the same ones) at twice the
resolution, detail included.

  python benchmarks/rpn_scale.py --model DIR [--frames 100] [--scales 1,0.75,0.5]
      [--sets 640x360,1280x720,640x360*2,1280x720:face_px=16-240] [--batch 8]
      [--ap-score-threshold 0.01]
"""

import argparse
import dataclasses
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import loaders
from data_pipelines.builders import synthcrowd
from emoflow import bundle
from emoflow.vision import rpn
from experiments import proposals


def proposer(block: dict, variables, input_scale: float,
             score_threshold: float) -> rpn.GroupProposer:
  """The model directory's RPN as emoflow.pipeline builds it, at input_scale and score_threshold."""
  network = rpn.RPN(num_anchors=len(block["scales"]) * len(block["ratios"]),
                    width=block["width"], dtype=jnp.dtype(block["dtype"]))
  return rpn.GroupProposer(network, variables, scales=block["scales"], ratios=block["ratios"],
                           input_scale=input_scale, score_threshold=score_threshold,
                           nms_threshold=block["nms_threshold"],
                           max_proposals=block["max_proposals"], min_size=block["min_size"])


def render(size: tuple[int, int], count: int, upscale: int = 1, seed: int = 0,
           split: str = "validation", **crowd_fields) -> dict:
  """count frames of frames_small's crowd (with crowd_fields replaced) at size (W, H), upscaled
  `upscale` times: images [count, H', W', 3] uint8, group boxes per frame (clipped as the frames
  loader clips them) and every face's height."""
  small = synthcrowd.Synthcrowd.builder_configs["frames_small"]
  crowd = dataclasses.replace(small.crowd, size=size, **crowd_fields)
  images, gt, face_px = [], [], []
  for index in range(count):
    [(_, record)] = synthcrowd.render_frame_record(seed, split, index, crowd)
    image = cv2.imdecode(np.frombuffer(record["image"], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    example = loaders._frame_example({**record, "image": image}, None, max_faces=1, scale=1.0,
                                     flip=False, max_groups=256)
    boxes = example["group_boxes"][example["group_valid"]]
    if upscale != 1:
      height, width = image.shape[:2]
      image = cv2.resize(image, (width * upscale, height * upscale),
                         interpolation=cv2.INTER_LINEAR)
      boxes = boxes * upscale
    images.append(np.ascontiguousarray(image))
    gt.append(boxes)
    face_px.extend(np.asarray(record["face_px"]) * upscale)
  return {"images": np.stack(images), "gt": gt, "face_px": np.asarray(face_px)}


def evaluate(block: dict, variables, frames: dict, scale: float, batch: int,
             ap_score_threshold: float) -> dict:
  """proposals.score of the RPN at `scale` on the frames, and its seconds per frame (jit warm)."""
  propose = proposer(block, variables, scale, ap_score_threshold)
  images = frames["images"]
  count = len(images)
  padded = -(-count // batch) * batch
  images = np.concatenate([images, np.zeros((padded - count, *images.shape[1:]), np.uint8)])
  jax.block_until_ready(propose(images[:batch]))  # compiles
  outputs = []
  start = time.perf_counter()
  for first in range(0, padded, batch):
    outputs.append(jax.block_until_ready(propose(images[first:first + batch])))
  seconds = time.perf_counter() - start
  boxes, scores, valid = (np.concatenate([np.asarray(out[k]) for out in outputs])[:count]
                          for k in range(3))
  scored = [(boxes[f][valid[f]], scores[f][valid[f]], frames["gt"][f]) for f in range(count)]
  return {**proposals.score(scored, block["score_threshold"]), "seconds_per_frame": seconds / count}


def parse_set(spec: str) -> tuple[tuple[int, int], int, dict]:
  """WxH[*F][:FIELD=LO-HI...] -> ((W, H), F, {FIELD: (LO, HI)}) (module docstring)."""
  frames, *fields = spec.split(":")
  size, _, factor = frames.partition("*")
  width, height = map(int, size.split("x"))
  number = lambda text: int(text) if text.isdigit() else float(text)
  overrides = {}
  for field in fields:
    name, _, values = field.partition("=")
    overrides[name] = tuple(number(v) for v in values.split("-"))
  return (width, height), int(factor or 1), overrides


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="a model directory with an rpn block")
  parser.add_argument("--frames", type=int, default=100, help="frames rendered per frame set")
  parser.add_argument("--scales", default="1,0.75,0.5", help="input scales, besides the rule's")
  parser.add_argument("--sets", default="640x360,1280x720,640x360*2,1280x720:face_px=16-240",
                      help="frame sets: WxH rendered, WxH*F rendered and upscaled F times, each "
                           "with :FIELD=LO-HI crowd overrides (module docstring)")
  parser.add_argument("--batch", type=int, default=8, help="frames per RPN call")
  parser.add_argument("--ap-score-threshold", type=float, default=0.01,
                      help="the one proposal pass's score threshold (rpn_synthcrowd's)")
  args = parser.parse_args()
  model = bundle.load(args.model)
  block = model.config.get("rpn")
  if block is None:
    raise SystemExit(f"error: {args.model} holds no group proposal network (model.json rpn)")
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s), "
        f"jax {jax.__version__}; model {args.model}: RPN width {block['width']}, trained at "
        f"input_scale {block['input_scale']} on frames of "
        f"{'x'.join(map(str, block['frame_size'])) if 'frame_size' in block else 'unknown size'}; "
        f"score threshold {block['score_threshold']}, NMS {block['nms_threshold']}, at most "
        f"{block['max_proposals']} proposals; batches of {args.batch} frames\n")
  rows, notes = [], []
  for spec in args.sets.split(","):
    size, factor, overrides = parse_set(spec)
    start = time.perf_counter()
    frames = render(size, args.frames, factor, **overrides)
    height, width = frames["images"].shape[1:3]
    gt = np.concatenate(frames["gt"])
    sides = np.sqrt((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))
    notes.append(f"- {spec}: {len(frames['images'])} frames of {width}x{height}, {len(gt)} groups, "
                 f"{len(frames['face_px'])} faces; median face height "
                 f"{np.median(frames['face_px']):.0f} px, median group box sqrt(area) "
                 f"{np.median(sides):.0f} px (rendered in {time.perf_counter() - start:.0f} s)")
    rule = rpn.frame_scale(block, height, width)
    for scale in sorted({float(s) for s in args.scales.split(",")} | {rule}, reverse=True):
      result = evaluate(block, model.variables["rpn"], frames, scale, args.batch,
                        args.ap_score_threshold)
      input_size = f"{max(1, round(width * scale))}x{max(1, round(height * scale))}"
      label = f"{scale:g}" + (" (rule)" if scale == rule else "")
      rows.append(f"| {spec} | {label} | {input_size} | {result['mAP50']:.3f} | "
                  f"{result['mAP']:.3f} | {result['recall']:.3f} | {result['precision']:.3f} | "
                  f"{result['seconds_per_frame']:.3f} |")
  print("\n".join(notes) + "\n")
  threshold = f"{block['score_threshold']:g}"
  print(f"| frames | scale | network input | mAP@0.5 | mAP@[0.5:0.95] | recall@{threshold} "
        f"| precision@{threshold} | s/frame |")
  print("|---|---|---|---|---|---|---|---|")
  print("\n".join(rows))


if __name__ == "__main__":
  main()
