"""EmoNet and NVPF written in PyTorch, for the speed comparisons only.

The same architectures as `emoflow.models.EmoNet` (Table 2) and
`emoflow.models.NVPF` (Eqs. 5-6), layer for layer, so a benchmark compares
frameworks and not models. `load_emonet` / `load_nvpf` copy a Flax
variable tree into them; tests/test_torch_reference.py checks that the
outputs then agree, which is what makes the comparison fair. PyTorch comes
from the optional `bench` extra (`pip install -e .[bench]`).
"""

import numpy as np
import torch
from torch import nn

from emoflow.models import emonet as jax_emonet


def _bn(channels: int, dims: int = 2) -> nn.Module:
  """BatchNorm with Flax's settings (momentum 0.9 there is 0.1 here)."""
  cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
  return cls(channels, eps=1e-5, momentum=0.1)


class Bottleneck(nn.Module):
  """Expand 1x1 -> dw3x3/s -> linear 1x1, each with BatchNorm."""

  def __init__(self, cin: int, expand: int, out: int, stride: int, residual: bool):
    super().__init__()
    self.residual = residual
    self.body = nn.Sequential(
        nn.Conv2d(cin, expand, 1, bias=False), _bn(expand), nn.ReLU(inplace=True),
        nn.Conv2d(expand, expand, 3, stride, 1, groups=expand, bias=False),
        _bn(expand), nn.ReLU(inplace=True),
        nn.Conv2d(expand, out, 1, bias=False), _bn(out))

  def forward(self, x):
    y = self.body(x)
    return x + y if self.residual else y


class EmoNet(nn.Module):
  """Faces [B,3,112,112] -> (logits [B,C], embedding [B,M]); Table 2 at width 1."""

  def __init__(self, num_classes: int = 8, embed_dim: int = 128, depth: float = 1.0):
    super().__init__()
    stem = jax_emonet.STEM
    layers = [nn.Conv2d(3, stem, 3, 2, 1, bias=False), _bn(stem), nn.ReLU(inplace=True),
              nn.Conv2d(stem, stem, 3, 1, 1, groups=stem, bias=False), _bn(stem),
              nn.ReLU(inplace=True)]
    cin = stem
    for group in jax_emonet.GROUPS:
      for b in range(jax_emonet.scaled_blocks(group.blocks, depth)):
        layers.append(Bottleneck(cin, group.expand, group.out,
                                 group.stride if b == 0 else 1, group.residual))
        cin = group.out
    head = jax_emonet.HEAD
    layers += [nn.Conv2d(cin, head, 1, bias=False), _bn(head), nn.ReLU(inplace=True),
               nn.Conv2d(head, head, 7, groups=head, bias=False), _bn(head), nn.Flatten(),
               nn.Linear(head, embed_dim, bias=False), _bn(embed_dim, dims=1)]
    self.features = nn.Sequential(*layers)
    self.classifier = nn.Linear(embed_dim, num_classes)

  def forward(self, x):
    emb = self.features(x)
    return self.classifier(emb), emb


def _tensor(array) -> torch.Tensor:
  """A float32 PyTorch copy of a JAX or NumPy array."""
  return torch.from_numpy(np.array(array, np.float32))


def _conv_weight(kernel) -> torch.Tensor:
  """Flax HWIO kernel -> PyTorch OIHW weight."""
  return _tensor(np.asarray(kernel).transpose(3, 2, 0, 1))


def _flax_emonet_layers(variables) -> list[tuple[str, dict, dict]]:
  """(kind, params, batch_stats) in the order the PyTorch EmoNet holds its layers."""
  params, stats = variables["params"], variables["batch_stats"]
  names = ["stem", "stem_bn", "stem_dw", "stem_dw_bn"]
  blocks = sorted((k for k in params if k.startswith("group")),
                  key=lambda k: tuple(int(s) for s in k[5:].split("_block")))
  for block in blocks:
    names += [f"{block}/{n}" for n in ("expand", "expand_bn", "dw", "dw_bn",
                                       "project", "project_bn")]
  names += ["head", "head_bn", "gdc", "gdc_bn", "embed", "embed_bn", "classifier"]

  def lookup(tree, name):
    for part in name.split("/"):
      tree = tree.get(part, {}) if isinstance(tree, dict) else {}
    return tree

  return [(name, lookup(params, name), lookup(stats, name)) for name in names]


def load_emonet(model: EmoNet, variables) -> EmoNet:
  """Copy a Flax EmoNet's params and BatchNorm statistics into `model`."""
  torch_layers = [m for m in model.modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d))]
  flax_layers = _flax_emonet_layers(variables)
  if len(torch_layers) != len(flax_layers):
    raise ValueError(f"layer count differs: {len(torch_layers)} vs {len(flax_layers)}")
  with torch.no_grad():
    for module, (name, p, s) in zip(torch_layers, flax_layers):
      if isinstance(module, nn.Conv2d):
        module.weight.copy_(_conv_weight(p["kernel"]))
      elif isinstance(module, nn.Linear):
        module.weight.copy_(_tensor(np.asarray(p["kernel"]).T))
        if module.bias is not None:
          module.bias.copy_(_tensor(p["bias"]))
      else:
        module.weight.copy_(_tensor(p["scale"]))
        module.bias.copy_(_tensor(p["bias"]))
        module.running_mean.copy_(_tensor(s["mean"]))
        module.running_var.copy_(_tensor(s["var"]))
  return model


class CouplingNet(nn.Module):
  """T1 or T2: lift 3x3 conv, residual blocks, 3x3 conv to one channel; absent columns zeroed."""

  def __init__(self, width: int, num_blocks: int):
    super().__init__()
    conv = lambda cin, cout: nn.Conv2d(cin, cout, 3, padding=1)
    self.lift = conv(1, width)
    self.blocks = nn.ModuleList(nn.ModuleList([conv(width, width), conv(width, width)])
                                for _ in range(num_blocks))
    self.out = conv(width, 1)

  def forward(self, x, keep):
    h = torch.relu(self.lift(x[:, None]) * keep)
    for a, b in self.blocks:
      r = torch.relu(a(h) * keep)
      h = torch.relu(h + b(r) * keep)
    return (self.out(h) * keep)[:, 0]


class NVPF(nn.Module):
  """The fusion flow: `num_units` affine couplings alternating the fixed half of the rows."""

  def __init__(self, num_features: int = 128, num_units: int = 10, width: int = 32,
               num_blocks: int = 2):
    super().__init__()
    self.nets = nn.ModuleList(nn.ModuleList([CouplingNet(width, num_blocks),
                                             CouplingNet(width, num_blocks)])
                              for _ in range(num_units))
    self.scales = nn.ParameterList(nn.Parameter(torch.ones(num_features))
                                   for _ in range(num_units))

  def forward(self, s, mask):
    """S [B,M,N], mask [B,N] bool -> (H [B,M,N], log-det [B])."""
    m = s.shape[1]
    present = mask[:, None, :]
    keep = present[:, None].to(s.dtype)
    logdet = s.new_zeros(s.shape[0])
    for i, ((t1, t2), scale) in enumerate(zip(self.nets, self.scales)):
      b = (torch.arange(m) < m // 2) != (i % 2 == 1)
      b = b[None, :, None]
      free = (~b & present).to(s.dtype)
      fixed = torch.where(b & present, s, 0)
      log_scale = scale[:, None] * torch.tanh(t1(fixed, keep)) * free
      shift = t2(fixed, keep) * free
      s = s * torch.exp(log_scale) + shift
      logdet = logdet + log_scale.sum((1, 2))
    return s, logdet


def load_nvpf(model: NVPF, variables) -> NVPF:
  """Copy a Flax NVPF's params (units_0..units_K-1, T1/T2, scale) into `model`."""
  params = variables["params"]
  with torch.no_grad():
    for i, ((t1, t2), scale) in enumerate(zip(model.nets, model.scales)):
      unit = params[f"units_{i}"]
      scale.copy_(_tensor(unit["scale"]))
      for net, name in ((t1, "T1"), (t2, "T2")):
        convs = [net.lift] + [c for pair in net.blocks for c in pair] + [net.out]
        flax_names = (["lift"] + [f"block{j}_{ab}" for j in range(len(net.blocks))
                                  for ab in "ab"] + ["out"])
        for conv, flax_name in zip(convs, flax_names):
          conv.weight.copy_(_conv_weight(unit[name][flax_name]["kernel"]))
          conv.bias.copy_(_tensor(unit[name][flax_name]["bias"]))
  return model
