"""Group level with the paper's settings on GECV-GroupImg (paper Sec. 5, Table 6).

Run:   python -m experiments.run --config=nvpf_gecv:fec --config.data.manual_dir=/path/to/GECV
Gave:  not run yet (GECV is not public; without it this config stops with a
       one-line error naming the files it expects).

On SynthCrowd instead: append `--config.data.source=synthcrowd`. Settings as
nvpf_emotiw (batch 64, 10 units x 32 filters, nvpf_synthcrowd's prior) on
gecv/group_img, the groups of GECV's annotated frames. Variants as in
nvpf_synthcrowd: `fea`, `feb`, `fec`, `tiny`, combined with commas.
"""

from experiments.configs import nvpf_emotiw, nvpf_synthcrowd


def get_config(arg: str | None = None):
  c = nvpf_emotiw.paper_config("gecv/group_img")
  c.eval.reference_workdir = "runs/nvpf_gecv_fea"  # paired differences to its `:fea` run
  nvpf_synthcrowd.apply_variants(c, arg, "nvpf_gecv")
  return c
