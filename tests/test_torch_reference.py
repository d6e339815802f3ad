"""The PyTorch EmoNet and NVPF of benchmarks/vs_pytorch.py compute what emoflow's compute.

With a Flax model's weights copied in, both give the same outputs, so the
speed comparison is between frameworks on one model. Skipped without PyTorch
(the optional `bench` extra).
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from assets.runner import ROOT

from emoflow.models import NVPF, EmoNet

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import torch_reference  # noqa: E402


def _perturbed(tree, seed: int, size: float):
  """Every leaf moved by a little noise, so no weight sits at a special initial value."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [x + size * jax.random.uniform(k, x.shape)
                                      for x, k in zip(leaves, keys)])


def test_emonet_matches_in_inference():
  net = EmoNet(num_classes=8, embed_dim=128)
  faces = jax.random.uniform(jax.random.key(1), (3, 112, 112, 3), minval=-1, maxval=1)
  variables = net.init(jax.random.key(0), faces)
  variables = {"params": variables["params"],
               "batch_stats": _perturbed(variables["batch_stats"], 2, 0.2)}
  logits, embedding = net.apply(variables, faces)
  reference = torch_reference.load_emonet(torch_reference.EmoNet(), variables).eval()
  with torch.no_grad():
    ref_logits, ref_embedding = reference(torch.from_numpy(np.array(faces).transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(ref_logits.numpy(), np.asarray(logits), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(ref_embedding.numpy(), np.asarray(embedding), atol=1e-4, rtol=1e-4)


def test_nvpf_matches_on_ragged_groups():
  flow = NVPF(num_units=3, width=8, num_blocks=2)
  s = jax.random.normal(jax.random.key(0), (3, 16, 6))
  mask = jnp.arange(6)[None] < jnp.array([[2], [6], [4]])
  params = _perturbed(flow.init(jax.random.key(1), s, mask), 3, 0.05)
  h, logdet = flow.apply(params, s, mask)
  reference = torch_reference.load_nvpf(torch_reference.NVPF(16, 3, 8, 2), params)
  with torch.no_grad():
    ref_h, ref_logdet = reference(torch.from_numpy(np.array(s)), torch.from_numpy(np.array(mask)))
  np.testing.assert_allclose(ref_h.numpy(), np.asarray(h), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(ref_logdet.numpy(), np.asarray(logdet), atol=1e-4, rtol=1e-4)
