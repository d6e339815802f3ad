"""Video level with the paper's TNVPF settings on VGAF (Sharma et al. 2019; not in the paper).

Run:   python -m experiments.run --config=tnvpf_vgaf:tnvpf --config.data.manual_dir=/path/to/VGAF
Gave:  not run yet (VGAF is licence-gated; without it this config stops with
       a one-line error naming the files it expects).

VGAF labels whole videos only: its clips carry the video label on every
frame, so the frame loss and frame metrics measure the video label per
frame. On SynthCrowd instead: append `--config.data.source=synthcrowd`.
Settings as tnvpf_gecv; variants `tnvpf`, `rnn`, `lstm`, `tiny`.
"""

from experiments.configs import tnvpf_gecv, tnvpf_synthcrowd


def get_config(arg: str | None = None):
  c = tnvpf_gecv.paper_config("vgaf/clips")
  c.eval.reference_workdir = "runs/tnvpf_vgaf_rnn"  # paired differences to its `:rnn` run
  tnvpf_synthcrowd.apply_variants(c, arg, "tnvpf_vgaf")
  return c
