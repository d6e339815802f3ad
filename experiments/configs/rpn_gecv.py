"""The group proposal network with the paper's settings on GECV frames (paper Sec. 3.2: 86.4% mAP).

Run:   python -m experiments.run --config=rpn_gecv --config.data.manual_dir=/path/to/GECV
Gave:  not run yet (GECV is not public; without it this config stops with a
       one-line error naming the files it expects).

As rpn_synthcrowd, but the paper's full ResNet-18 trunk (512-d maps), on
gecv/group_frames: the annotated frames of GECV's videos sampled at 2/s,
with their face and group boxes. The anchor scales assume GECV frames of
about 1280x720 seen at half size; the paper's RPN batch is 256 (anchors
per image here: loss.anchors_per_image). On SynthCrowd instead: use
rpn_synthcrowd.
"""

from experiments.configs import rpn_synthcrowd


def get_config(arg: str | None = None):
  if arg:
    raise ValueError(f"unknown variant {arg!r} of rpn_gecv; it has none")
  c = rpn_synthcrowd.get_config()
  c.data.name = "gecv"
  c.data.config = "group_frames"
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.input_scale = 0.5
  c.model.width = 1.0
  c.model.scales = (64.0, 128.0, 256.0)
  c.batch_size = 16  # global: 2 per device on 8
  c.num_steps = 20_000
  c.eval.every = 2_000
  c.eval.max_faces = 256
  c.eval.max_groups = 64
  c.model.max_groups = 64
  return c
