"""EmoNet (paper Table 2) on AffectNet with the paper's settings (Sec. 4: batch 512, Adam).

Run:   python -m experiments.run --config=emonet_affectnet --config.data.manual_dir=/path/to/AffectNet
Gave:  not run yet (AffectNet is licence-gated; without the manual directory this
       config stops with a one-line error naming the files it expects).

The paper trains on AffectNet's 7 expressions (`affectnet/classes7`, codes 0-6,
the same order as emoflow.labels.EMOTIONS); `:classes8` adds contempt (code 7).

The paper prints "learning rate starts from 0.1, momentum 0.9" together with
Adam; 0.1 is far outside Adam's stable range for this network, so the peak
rate here is 1e-3 with b1 = 0.9 (Adam's momentum) — set
--config.optimizer.learning_rate=0.1 to try the printed value. AffectNet is
imbalanced (happy and neutral dominate), hence inverse-frequency class weights.
"""

from experiments.configs import emonet_synthcrowd


def get_config(arg: str | None = None):
  c = emonet_synthcrowd.get_config()
  c.data.name = "affectnet"
  c.data.config = "classes7"
  c.model.num_classes = 7
  c.data.read_threads = 16
  c.data.workers = 8
  c.batch_size = 512  # paper Sec. 4; global: over all devices of all hosts (128 per GPU on 4)
  c.num_steps = 20_000  # ~35 epochs of AffectNet's ~287k training faces
  c.log_every = 100
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 1_000
  c.eval.every = 2_000
  c.eval.batch_size = 1024
  if arg == "classes8":
    c.data.config = "classes8"
    c.model.num_classes = 8
  elif arg:
    raise ValueError(f"emonet_affectnet has no variant {arg!r}; known: classes8")
  return c
