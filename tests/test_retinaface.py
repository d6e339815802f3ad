"""RetinaFace in Flax and the converter from PyTorch checkpoints (built here without torch)."""

import math
import os
import pickle
import zipfile

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from assets import torch_checkpoint
from emoflow.vision import retinaface
from emoflow.vision.detect import make_anchors
from emoflow.vision import retinaface_convert as convert

NCHW = ("NCHW", "OIHW", "NCHW")


def _num_anchors(height: int, width: int) -> int:
  return len(make_anchors((height, width)))


@pytest.mark.parametrize("trunk, params", [("mobilenet0.25", 426_608), ("resnet50", 27_293_600)])
def test_output_shapes_match_anchors(trunk, params):
  model = retinaface.RetinaFace(trunk)
  images = jnp.zeros((2, 72, 100, 3))  # sizes not divisible by 32: ceil grids
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  loc, conf, landm = jax.eval_shape(model.apply, variables, images)
  a = _num_anchors(72, 100)
  assert (loc.shape, conf.shape, landm.shape) == ((2, a, 4), (2, a, 2), (2, a, 10))
  assert sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"])) == params


def test_preprocess_is_bgr_minus_mean():
  rgb = np.array([[[10, 20, 30]]], np.uint8)
  np.testing.assert_array_equal(retinaface.preprocess(rgb), [[[30 - 104, 20 - 117, 10 - 123]]])


def test_upsample_nearest_follows_pytorch_indices():
  x = jnp.arange(3.0).reshape(1, 3, 1, 1)
  assert retinaface.upsample_nearest(x, (5, 1))[0, :, 0, 0].tolist() == [0, 0, 1, 1, 2]
  assert retinaface.upsample_nearest(x, (6, 2))[0, :, 1, 0].tolist() == [0, 0, 1, 1, 2, 2]


def _torch_state(trunk: str, seed: int = 0) -> dict[str, np.ndarray]:
  """A random state_dict with the public model's names and (OIHW) shapes, BN variances positive."""
  rng = np.random.default_rng(seed)
  shapes = flax.traverse_util.flatten_dict(flax.core.unfreeze(convert.variable_shapes(trunk)))
  state = {}
  for path, leaf in shapes.items():
    name = convert.torch_name(path[1:])
    shape = convert.torch_shape(path, leaf.shape)
    if path[-1] == "var":
      state[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:  # conv weights scaled by fan-in, so activations stay O(1) through the network
      scale = math.sqrt(3 / math.prod(shape[1:])) if path[-1] == "kernel" else 1.0
      state[name] = (scale * rng.uniform(-1, 1, shape)).astype(np.float32)
    if path[-1] == "mean":
      state[name.replace("running_mean", "num_batches_tracked")] = np.array(7, np.int64)
  return state


def test_mobilenet_names_are_the_public_ones():
  state = _torch_state("mobilenet0.25")
  weights = {k for k in state if not k.endswith("num_batches_tracked")}
  # 47 bias-free convs (27 trunk, 5 FPN, 15 SSH) with 4 BN entries each, and 9 heads with bias.
  assert len(weights) == 47 * 5 + 9 * 2
  assert state["body.stage1.0.0.weight"].shape == (8, 3, 3, 3)
  assert state["body.stage1.1.0.weight"].shape == (8, 1, 3, 3)  # depthwise
  assert state["body.stage1.1.3.weight"].shape == (16, 8, 1, 1)
  assert state["body.stage2.5.4.running_var"].shape == (128,)
  assert state["fpn.output3.0.weight"].shape == (64, 256, 1, 1)
  assert state["fpn.merge2.1.bias"].shape == (64,)
  assert state["ssh3.conv7x7_3.0.weight"].shape == (16, 16, 3, 3)
  assert state["ssh1.conv3X3.1.weight"].shape == (32,)
  assert state["ClassHead.0.conv1x1.weight"].shape == (4, 64, 1, 1)
  assert state["LandmarkHead.2.conv1x1.bias"].shape == (20,)


def test_resnet50_names_are_torchvision_ones():
  shapes = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(convert.variable_shapes("resnet50")))
  state = {convert.torch_name(p[1:]): convert.torch_shape(p, s.shape) for p, s in shapes.items()}
  assert len(state) == len(shapes)
  # 53 trunk convs (stem, 16 blocks x 3, 4 projections) + 20 FPN/SSH, 4 BN entries each; 9 heads.
  assert len(state) == 73 * 5 + 9 * 2
  assert state["body.conv1.weight"] == (64, 3, 7, 7)
  assert state["body.layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
  assert state["body.layer2.0.conv2.weight"] == (128, 128, 3, 3)
  assert state["body.layer3.5.bn3.running_mean"] == (1024,)
  assert state["body.layer4.2.conv3.weight"] == (2048, 512, 1, 1)
  assert state["fpn.output3.0.weight"] == (256, 2048, 1, 1)
  assert state["ssh2.conv5X5_1.0.weight"] == (64, 256, 3, 3)
  assert state["BboxHead.1.conv1x1.weight"] == (8, 256, 1, 1)
  assert "body.layer1.1.downsample.0.weight" not in state


@pytest.mark.parametrize("legacy, prefix", [(False, ""), (True, "module.")])
def test_converter_round_trip(tmp_path, legacy, prefix):
  state = _torch_state("mobilenet0.25")
  path = tmp_path / "mobilenet0.25_Final.pth"
  torch_checkpoint.write(path, {prefix + k: v for k, v in state.items()}, legacy=legacy)
  model, variables = convert.load_retinaface(path)
  assert model.trunk == "mobilenet0.25"

  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  assert len(flat) == len([k for k in state if not k.endswith("num_batches_tracked")])
  for p, value in flat.items():
    want = state[convert.torch_name(p[1:])]
    want = want.transpose(2, 3, 1, 0) if p[-1] == "kernel" else want
    np.testing.assert_array_equal(value, want, err_msg="/".join(p))

  # The whole network against the PyTorch forward restated in NCHW on the torch-layout weights.
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 72, 100, 3)), jnp.float32)
  outputs = jax.jit(model.apply)(variables, images)
  references = jax.jit(_torch_mobilenet_forward)(state, jnp.transpose(images, (0, 3, 1, 2)))
  for out, ref in zip(outputs, references, strict=True):
    assert out.shape == (2, _num_anchors(72, 100), ref.shape[-1])
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * float(jnp.abs(ref).max()))


def _torch_mobilenet_forward(s, x):
  """The public PyTorch forward (mobilenet0.25, eval mode), restated in NCHW on a state_dict."""
  def conv(x, w, stride=1, groups=1):
    pad = w.shape[-1] // 2
    return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                    dimension_numbers=NCHW, feature_group_count=groups)

  def bn(x, p):
    v = lambda key: s[f"{p}.{key}"][:, None, None]
    return (x - v("running_mean")) / jnp.sqrt(v("running_var") + 1e-5) * v("weight") + v("bias")

  leaky = lambda x, slope: jnp.where(x > 0, x, slope * x)

  def conv_bn(x, p, stride=1, slope=None):
    y = bn(conv(x, s[f"{p}.0.weight"], stride), f"{p}.1")
    return y if slope is None else leaky(y, slope)

  def conv_dw(x, p, stride):
    y = leaky(bn(conv(x, s[f"{p}.0.weight"], stride, x.shape[1]), f"{p}.1"), 0.1)
    return leaky(bn(conv(y, s[f"{p}.3.weight"]), f"{p}.4"), 0.1)

  def nearest(x, size):  # F.interpolate(mode="nearest"): source floor(i * in / out)
    for axis, out in ((2, size[0]), (3, size[1])):
      n = x.shape[axis]
      x = jnp.take(x, np.minimum(np.floor(np.arange(out) * np.float32(n / out)).astype(int), n - 1),
                   axis=axis)
    return x

  def ssh(x, p):
    c3 = conv_bn(x, f"{p}.conv3X3")
    c5_1 = conv_bn(x, f"{p}.conv5X5_1", slope=0.1)
    c5 = conv_bn(c5_1, f"{p}.conv5X5_2")
    c7 = conv_bn(conv_bn(c5_1, f"{p}.conv7X7_2", slope=0.1), f"{p}.conv7x7_3")
    return jax.nn.relu(jnp.concatenate([c3, c5, c7], 1))

  x = conv_bn(x, "body.stage1.0", 2, slope=0.1)
  trunk = []
  for stage, strides in (("stage1", (None, 1, 2, 1, 2, 1)), ("stage2", (2, 1, 1, 1, 1, 1)),
                         ("stage3", (2, 1))):
    for i, stride in enumerate(strides):
      if stride is not None:
        x = conv_dw(x, f"body.{stage}.{i}", stride)
    trunk.append(x)
  o1, o2, o3 = (conv_bn(c, f"fpn.output{i}", slope=0.1) for i, c in enumerate(trunk, start=1))
  o2 = conv_bn(o2 + nearest(o3, o2.shape[2:]), "fpn.merge2", slope=0.1)
  o1 = conv_bn(o1 + nearest(o2, o1.shape[2:]), "fpn.merge1", slope=0.1)
  features = [ssh(f, f"ssh{i}") for i, f in enumerate((o1, o2, o3), start=1)]

  def head(name, k):
    outs = []
    for i, f in enumerate(features):
      y = conv(f, s[f"{name}.{i}.conv1x1.weight"]) + s[f"{name}.{i}.conv1x1.bias"][:, None, None]
      outs.append(jnp.transpose(y, (0, 2, 3, 1)).reshape(y.shape[0], -1, k))
    return jnp.concatenate(outs, 1)

  return head("BboxHead", 4), head("ClassHead", 2), head("LandmarkHead", 10)


def test_converter_names_missing_unexpected_and_mismatched_keys():
  state = _torch_state("mobilenet0.25")
  del state["fpn.merge1.1.running_var"]
  state["fpn.extra.weight"] = np.zeros(3, np.float32)
  state["ssh2.conv5X5_2.0.weight"] = np.zeros((16, 16, 5, 5), np.float32)
  with pytest.raises(ValueError) as error:
    convert.convert(state)
  message = str(error.value)
  assert "\n" not in message
  assert "missing fpn.merge1.1.running_var" in message
  assert "unexpected fpn.extra.weight" in message
  assert "ssh2.conv5X5_2.0.weight is (16, 16, 5, 5), expected (16, 16, 3, 3)" in message
  with pytest.raises(ValueError, match="not a RetinaFace state_dict"):
    convert.convert({"fc.weight": np.zeros(1)})


class _Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_unpickler_refuses_other_globals(tmp_path):
  marker = tmp_path / "pwned"
  payload = pickle.dumps({"body.conv1.weight": _Exploit(marker)}, protocol=2)
  archive = tmp_path / "evil_zip.pth"
  with zipfile.ZipFile(archive, "w") as z:
    z.writestr("archive/data.pkl", payload)
  legacy = tmp_path / "evil_legacy.pth"
  legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + payload)
  raw = tmp_path / "evil_raw.pth"
  raw.write_bytes(payload)
  for path in (archive, legacy, raw):
    with pytest.raises(pickle.UnpicklingError,
                       match=r"refusing to load global (posix|os|nt)\.system"):
      convert.load_state_dict(path)
  assert not marker.exists()


def test_tensors_must_stay_inside_their_storage():
  storage = np.arange(6, dtype=np.float32)
  np.testing.assert_array_equal(convert._rebuild_tensor(storage, 0, (3, 2), (1, 3)),
                                [[0, 3], [1, 4], [2, 5]])
  for offset, size, stride in ((0, (4, 3), (3, 1)), (5, (2,), (1,)), (0, (2,), (-1,))):
    with pytest.raises(pickle.UnpicklingError, match="exceeds its storage"):
      convert._rebuild_tensor(storage, offset, size, stride)
