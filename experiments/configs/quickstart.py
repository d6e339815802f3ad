"""The whole method on SynthCrowd in one command: the README's main job.

Run:   python -m experiments.run --config=quickstart
Gave:  on a fresh clone and an empty home directory, 2 AMD EPYC cores, no
       GPU, jax 0.10.2, 2026-12-07: 14 min 32 s (install 76 s, stages 790 s;
       24 min 30 s before the video stages held the fec stage's flow).
       EmoNet 65.31% mAC on faces_small; on the 492 validation groups of
       groups_quick FeA 67.89%, FeB 66.46%, FeC 69.31% (FeC - FeA +1.42
       points, 95% paired interval -1.63 to +4.47); video mAC (last frame) on
       the 32 validation clips of clips_quick FeC + RNN 53.1%, FeC + LSTM
       43.8%, TNVPF 53.1% (TNVPF - RNN +0.0, interval -15.6 to +15.6: 32
       clips cannot rank them; TNVPF rerun with the mean readout, the
       default since). README.md has the tables.

Stages, each in its own directory of the workdir (experiments/quickstart.py):
emonet (EmoNet on synthcrowd/faces_small), fea / feb / fec (Table 5's
fusions on synthcrowd/groups_quick, over the cached features of that
EmoNet), rnn / lstm / tnvpf (Table 7's models on synthcrowd/clips_quick) and
predict (the stages exported to WORKDIR/model, then `emoflow predict` on
test clip `predict.video_index` of clips_quick, scored against its
annotation). A finished stage is skipped when the command is run again;
an unfinished one resumes from its last checkpoint.

Smaller than the stand-alone configs so that all of it fits 15 minutes on 2
cores: EmoNet at half depth (`emonet.model.depth`: 7 of Table 2's 14
bottleneck blocks) for 200 steps of 64 faces (emonet_synthcrowd: full depth,
450 steps; at full depth 200 steps gave 23%, the deep stack sits at chance
for ~150 steps), 200 group steps and 120 video steps on the quick datasets
(about a third of the small ones), flows of 2 units x 4 filters, and video
stages that hold the fec stage's trained group flow (`video_on_fec`).
Every stage's keys are those of its stand-alone config
(`--config.emonet.num_steps=450 --config.emonet.model.depth=1` trains
emonet_synthcrowd's EmoNet); `seed` and `data.data_dir` are shared by all
stages.

Faces in the held-out video come from its annotation file (the boxes and
landmarks SynthCrowd renders, as GECV ships them): training RetinaFace takes
16 minutes alone. With one trained (`--config=retinaface_synthcrowd`),
`--config.predict.detector_workdir=runs/retinaface_synthcrowd` puts it in the
model and predict finds the faces itself.

Variant `tiny`: a few steps of each stage on the tiny datasets (the tests).
"""

import ml_collections

from experiments.configs import emonet_synthcrowd, nvpf_synthcrowd, tnvpf_synthcrowd


def _shared(c: ml_collections.ConfigDict, stage: ml_collections.ConfigDict) -> None:
  stage.seed = c.get_ref("seed")
  stage.data.data_dir = c.data.get_ref("data_dir")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "tiny"):
    raise ValueError(f"unknown variant {arg!r} of quickstart; known: tiny")
  tiny = arg == "tiny"
  c = ml_collections.ConfigDict()
  c.task = "quickstart"
  c.seed = 0
  c.data = ml_collections.ConfigDict()
  c.data.data_dir = "~/tensorflow_datasets"
  c.data.eval_split = "validation"  # every stage is evaluated on its validation split

  c.emonet = emonet_synthcrowd.get_config("tiny" if tiny else None)
  c.emonet.model.depth = 0.5
  if tiny:
    c.emonet.model.width = 0.5
  else:
    c.emonet.num_steps = 200
    c.emonet.log_every = 20
    c.emonet.eval.every = 100

  c.group = nvpf_synthcrowd.get_config("tiny" if tiny else None)
  if not tiny:
    c.group.data.source = "synthcrowd/groups_quick"
    c.group.num_steps = 200
    c.group.eval.every = 200  # one evaluation, at the end: the quickstart's 15 minutes
    c.group.model.flow_units = 2  # the video stages hold this flow (video_on_fec): their size
    c.group.model.flow_width = 4

  c.video = tnvpf_synthcrowd.get_config("tiny" if tiny else None)
  if tiny:
    c.video.batch_size = c.video.eval.batch_size = 8  # the tests' 8 devices
  else:
    c.video.data.source = "synthcrowd/clips_quick"
    c.video.num_steps = 120
    c.video.clip.curriculum = ((2, 60), (5, 120))
    c.video.eval.every = 120
    c.video.eval.num_frames = 8  # 8 s at stride 2: the quick clips are 6-8 s long

  # The video stages start from the fec stage's trained group flow and hold it (FeC + RNN is
  # an RNN on top of FeC): no backward pass through it, steps 2.5-3x faster. False: each video
  # stage trains its own group flow from scratch, as the stand-alone tnvpf_synthcrowd does.
  c.video_on_fec = True
  c.video.model.group_units = c.group.model.get_ref("flow_units")
  c.video.model.group_width = c.group.model.get_ref("flow_width")

  c.group_fusions = ("fea", "feb", "fec")  # Table 5's rows: one stage each (group.model.fusion)
  c.video_models = ("rnn", "lstm", "tnvpf")  # Table 7's rows: one stage each (video.model.cell)
  for stage in (c.emonet, c.group, c.video):
    _shared(c, stage)

  c.predict = ml_collections.ConfigDict()
  c.predict.enabled = True  # False: the tables only
  c.predict.video = ""  # a video file to label instead of a SynthCrowd clip (JSON beside it scores)
  c.predict.split = "test"  # of the video stages' dataset: never trained or validated on
  c.predict.video_index = 0
  c.predict.detector_workdir = ""  # a trained RetinaFace run; empty: the annotated faces
  c.predict.write_video = True  # annotated.mp4 beside predictions.json
  return c
