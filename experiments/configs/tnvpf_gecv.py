"""Video level with the paper's settings on GECV-GroupVid (paper Sec. 5, Table 7).

Run:   python -m experiments.run --config=tnvpf_gecv:tnvpf --config.data.manual_dir=/path/to/GECV
Gave:  not run yet (GECV is not public; without it this config stops with a
       one-line error naming the files it expects).

On SynthCrowd instead: append `--config.data.source=synthcrowd`. Paper
settings: group and frame NVPF of 10 units x 32 filters, a cell of 4096
units, batch 64, T = 2 then 5 time steps. Features come from the EmoNet of
features.emonet_workdir (the paper's is trained on AffectNet). Variants as in
tnvpf_synthcrowd: `tnvpf`, `rnn`, `lstm`, `tiny`, combined with commas.
"""

from experiments.configs import tnvpf_synthcrowd


def paper_config(source: str):
  """tnvpf_synthcrowd's keys with the paper's settings, on the clips dataset `source`."""
  c = tnvpf_synthcrowd.base_config()
  c.data.source = source
  c.model.max_faces = 16
  c.model.hidden = 4096
  for level in ("group", "frame"):
    c.model[f"{level}_units"] = 10
    c.model[f"{level}_width"] = 32
  c.batch_size = 64  # global: over all devices of all hosts (16 per GPU on 4)
  c.num_steps = 5000
  c.clip.curriculum = ((2, 2000), (5, 5000))
  c.log_every = 50
  c.eval.every = 500
  c.optimizer.warmup_steps = 200
  return c


def get_config(arg: str | None = None):
  c = paper_config("gecv/group_vid")
  c.eval.reference_workdir = "runs/tnvpf_gecv_rnn"  # paired differences to its `:rnn` run
  tnvpf_synthcrowd.apply_variants(c, arg, "tnvpf_gecv")
  return c
