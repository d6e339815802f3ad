"""TNVPF (Sec. 3.3): the scanned cells match a step-by-step loop, causal, blind to padding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emoflow.models import NVPF, TNVPF, count_params
from emoflow.models.tnvpf import max_pool, mean_pool, sum_pool

B, T, G, N, M = 2, 5, 3, 4, 6
HIDDEN, UNITS, WIDTH = 8, 2, 4
VARIANTS = [("tnvpf", "mean"), ("rnn", "mean"), ("lstm", "mean"), ("tnvpf", "max")]
CELLS = ["tnvpf", "rnn", "lstm"]


def make_model(cell="tnvpf", pooling="mean", hidden=HIDDEN, units=UNITS, width=WIDTH):
  return TNVPF(cell=cell, hidden=hidden, group_units=units, group_width=width,
               frame_units=units, frame_width=width, group_pooling=pooling)


def make_inputs(seed=0):
  """features [B,T,G,N,M] and masks: clip 0 has all T frames, clip 1 three; frame 0 of
  clip 0 holds a full group, an empty group slot and a group slot with no valid face."""
  rng = np.random.default_rng(seed)
  features = rng.standard_normal((B, T, G, N, M)).astype(np.float32)
  face_mask = rng.random((B, T, G, N)) < 0.7
  group_mask = rng.random((B, T, G)) < 0.8
  face_mask[0, 0] = [[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]]
  group_mask[0, 0] = [True, False, True]
  face_mask[1, 0, 0, :2] = group_mask[1, 0, 0] = True
  frame_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  return features, face_mask, group_mask, frame_mask


def scramble(inputs, where, seed):
  """`inputs` with features and masks replaced by random ones wherever `where` [B, T] holds."""
  features, face_mask, group_mask, frame_mask = inputs
  rng = np.random.default_rng(seed)
  return (np.where(where[..., None, None, None], 100 * rng.standard_normal(features.shape),
                   features).astype(np.float32),
          np.where(where[..., None, None], rng.random(face_mask.shape) < 0.5, face_mask),
          np.where(where[..., None], rng.random(group_mask.shape) < 0.5, group_mask),
          np.where(where, rng.random(frame_mask.shape) < 0.5, frame_mask))


@functools.cache
def random_model(cell, pooling="mean"):
  """(model, random variables, jitted apply): every weight N(0, 0.3), coupling scales
  1 + N(0, 0.3), so neither flow is the identity. Numbers from numpy, shapes from eval_shape."""
  model = make_model(cell, pooling)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *make_inputs())
  rng = np.random.default_rng(1)
  variables = jax.tree_util.tree_map_with_path(
      lambda path, x: ((path[-1].key == "scale") +
                       0.3 * rng.standard_normal(x.shape)).astype(x.dtype), shapes)
  return model, variables, jax.jit(model.apply)


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def numpy_step(cell, p, carry, x):
  """One step of `cell` from its params p, in numpy: (new carry, output)."""
  k = lambda name: np.asarray(p[name]["kernel"])
  if cell == "tnvpf":  # the paper's equations (Sec. 3.3)
    o = carry
    z = sigmoid(x @ k("W_z") + o @ k("U_z"))
    r = sigmoid(x @ k("W_r") + o @ k("U_r"))
    o = (1 - z) * o + z * np.tanh(x @ k("W") + (r * o) @ k("U"))
    return o, o
  if cell == "rnn":
    o = np.tanh(x @ k("i") + p["i"]["bias"] + carry @ k("h"))
    return o, o
  c, h = carry
  gate = lambda g: x @ k("i" + g) + h @ k("h" + g) + p["h" + g]["bias"]
  c = sigmoid(gate("f")) * c + sigmoid(gate("i")) * np.tanh(gate("g"))
  h = sigmoid(gate("o")) * np.tanh(c)
  return (c, h), h


@pytest.mark.parametrize("cell", CELLS)
def test_scan_equals_step_by_step_loop(cell):
  model, variables, apply = random_model(cell)
  inputs = (*make_inputs()[:3], np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0]], bool))  # holes too
  out = apply(variables, *inputs)
  x = np.asarray(model.apply(variables, *inputs, method=TNVPF.fuse)["frame_inputs"])
  assert x.shape == (B, T, M * G if cell == "tnvpf" else M)
  p = jax.tree.map(np.asarray, variables["params"])
  frame_mask = inputs[-1]
  for b in range(B):
    o = np.zeros(HIDDEN)
    carry = (o, o) if cell == "lstm" else o
    last = None
    for t in range(T):
      if frame_mask[b, t]:
        carry, o = numpy_step(cell, p["recurrence"], carry, x[b, t])
        last = o @ p["head"]["kernel"] + p["head"]["bias"]
        np.testing.assert_allclose(out["frame_logits"][b, t], last, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["last"][b], last, rtol=1e-5, atol=1e-5)
  assert np.ptp(out["frame_logits"][0], axis=0).min() > 1e-3  # frames differ


@pytest.mark.parametrize("cell", CELLS)
def test_frame_t_depends_on_frames_up_to_t_only(cell):
  _, variables, apply = random_model(cell)
  inputs = make_inputs()
  out = apply(variables, *inputs)
  for t in range(T - 1):
    later = np.arange(T)[None, :].repeat(B, 0) > t
    changed = apply(variables, *scramble(inputs, later, seed=t))
    assert not np.allclose(changed["frame_logits"][0, t + 1:], out["frame_logits"][0, t + 1:])
    for key in ("frame_logits", "group_h", "group_logdet", "frame_h", "frame_logdet"):
      np.testing.assert_allclose(changed[key][:, :t + 1], out[key][:, :t + 1],
                                 rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("cell,pooling", VARIANTS)
def test_padding_changes_nothing(cell, pooling):
  _, variables, apply = random_model(cell, pooling)
  inputs = make_inputs()
  features, face_mask, group_mask, frame_mask = inputs
  out = apply(variables, *inputs)
  # Garbage in every empty face slot, empty group slot and padded frame.
  group_ok = group_mask & frame_mask[..., None]
  face_ok = face_mask & group_ok[..., None]
  rng = np.random.default_rng(7)
  dirty = (np.where(face_ok[..., None], features,
                    100 * rng.standard_normal(features.shape)).astype(np.float32),
           np.where(group_ok[..., None], face_mask, rng.random(face_mask.shape) < 0.5),
           np.where(frame_mask[..., None], group_mask, rng.random(group_mask.shape) < 0.5),
           frame_mask)
  assert not np.array_equal(dirty[0], features)
  out_dirty = apply(variables, *dirty)
  for key in out:
    np.testing.assert_array_equal(out_dirty[key], out[key], err_msg=key)

  face_valid, group_valid = out["face_valid"], out["group_valid"]
  np.testing.assert_array_equal(face_valid, face_ok)
  np.testing.assert_array_equal(group_valid, face_valid.any(-1))
  assert group_valid[0, 0].tolist() == [True, False, False]  # a slot without faces is empty
  empty_face = ~np.broadcast_to(face_valid[..., None, :], (B, T, G, M, N))
  empty_group = ~np.broadcast_to(group_valid[:, :, None], (B, T, M, G))
  np.testing.assert_array_equal(np.asarray(out["group_h"])[empty_face], 0)
  np.testing.assert_array_equal(np.asarray(out["group_logdet"])[~group_valid], 0)
  np.testing.assert_array_equal(np.asarray(out["frame_h"])[empty_group], 0)
  np.testing.assert_array_equal(np.asarray(out["frame_logdet"])[~frame_mask], 0)
  last_valid = T - 1 - np.argmax(frame_mask[:, ::-1], axis=1)
  logits = np.asarray(out["frame_logits"])
  np.testing.assert_array_equal(out["last"], logits[np.arange(B), last_valid])
  np.testing.assert_array_equal(logits[1, 3:], logits[1, [2, 2]])  # padded frames repeat


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_reaches_first_frame(cell):
  model, variables, _ = random_model(cell)
  inputs = make_inputs()
  last = lambda f: model.apply(variables, f, *inputs[1:])["last"].sum()
  grad = jax.jit(jax.grad(last))(inputs[0])
  face_valid = inputs[1] & inputs[2][..., None] & inputs[3][..., None, None]
  reached = np.all(np.abs(grad) > 0, axis=-1)
  np.testing.assert_array_equal(reached[:, 0], face_valid[:, 0])
  np.testing.assert_array_equal(np.asarray(grad)[~face_valid], 0)


def test_frame_flow_is_the_exact_nvpf_of_the_group_stack():
  _, variables, apply = random_model("tnvpf")
  out = apply(variables, *make_inputs())
  face_valid = out["face_valid"]
  group_valid = np.asarray(out["group_valid"]).reshape(-1, G)
  h = np.asarray(out["group_h"])
  count = np.maximum(face_valid.sum(-1), 1)[..., None]
  stack = np.swapaxes((h * face_valid[..., None, :]).sum(-1) / count, -1, -2).reshape(-1, M, G)

  flow = NVPF(num_units=UNITS, width=WIDTH)
  frame_params = {"params": variables["params"]["frame_flow"]}
  frame_h = np.asarray(out["frame_h"]).reshape(-1, M, G)
  back, neg_logdet = flow.apply(frame_params, frame_h, group_valid, method=NVPF.inverse)
  np.testing.assert_allclose(back, stack, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(neg_logdet, -np.asarray(out["frame_logdet"]).reshape(-1),
                             rtol=1e-5, atol=1e-5)
  assert np.abs(out["frame_logdet"]).max() > 0.1

  jac = jax.jacfwd(lambda s: flow.apply(frame_params, s, group_valid)[0])(stack)
  logdet = np.asarray(out["frame_logdet"]).reshape(-1)
  for i, mask in enumerate(group_valid):
    valid = np.broadcast_to(mask, (M, G))
    block = jac[i][valid][:, i][:, valid]
    sign, expected = np.linalg.slogdet(np.asarray(block, np.float64))
    assert sign == 1
    np.testing.assert_allclose(logdet[i], expected, rtol=1e-4, atol=1e-4)


def test_group_flow_is_a_fec_nvpf():
  """params["group_flow"] has NVPF's tree, so a trained FeC flow drops in, and gives group_h.
  In float64: in float32 the two programs' summation orders differ by a few ulp, which is CPU
  dependent."""
  _, variables, apply = random_model("tnvpf")
  with jax.enable_x64(True):
    variables = jax.tree.map(lambda x: np.asarray(x, np.float64), variables)
    features, *masks = make_inputs()
    features = features.astype(np.float64)
    out = apply(variables, features, *masks)
    flow = NVPF(num_units=UNITS, width=WIDTH)
    face_valid = np.asarray(out["face_valid"]).reshape(-1, N)
    s = np.swapaxes(features, -1, -2).reshape(-1, M, N) * face_valid[:, None]
    shapes = jax.eval_shape(flow.init, jax.random.key(0), s, face_valid)["params"]
    assert jax.tree.structure(shapes) == jax.tree.structure(variables["params"]["group_flow"])
    h, logdet = flow.apply({"params": variables["params"]["group_flow"]}, s, face_valid)
  assert out["group_h"].dtype == np.float64
  np.testing.assert_allclose(out["group_h"], h.reshape(B, T, G, M, N), rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(out["group_logdet"], logdet.reshape(B, T, G), rtol=1e-10, atol=1e-10)


def test_zero_frame_units_feed_the_cell_the_group_stack_itself():
  """frame_units=0 (the ablation of the frame flow): H_t is S_t, log-det 0, no frame_flow
  params; the rest of the model is unchanged."""
  model = TNVPF(cell="tnvpf", hidden=HIDDEN, group_units=UNITS, group_width=WIDTH,
                frame_units=0, frame_width=WIDTH)
  inputs = make_inputs()
  variables = model.init(jax.random.key(0), *inputs)
  assert "frame_flow" not in variables["params"]
  out = jax.jit(model.apply)(variables, *inputs)
  face_valid = out["face_valid"]
  h = np.asarray(out["group_h"])
  count = np.maximum(face_valid.sum(-1), 1)[..., None]
  stack = np.swapaxes((h * face_valid[..., None, :]).sum(-1) / count, -1, -2)
  np.testing.assert_allclose(out["frame_h"], stack, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(out["frame_logdet"], 0)


def test_mean_frame_readout_feeds_the_cell_the_mean_of_h_t_over_valid_groups():
  model = TNVPF(cell="tnvpf", hidden=HIDDEN, group_units=UNITS, group_width=WIDTH,
                frame_units=UNITS, frame_width=WIDTH, frame_readout="mean")
  inputs = make_inputs()
  variables = model.init(jax.random.key(0), *inputs)
  out = jax.jit(lambda v, *x: model.apply(v, *x, method=TNVPF.fuse))(variables, *inputs)
  h, valid = np.asarray(out["frame_h"]), np.asarray(out["group_valid"])
  want = (h * valid[..., None, :]).sum(-1) / np.maximum(valid.sum(-1), 1)[..., None]
  np.testing.assert_allclose(out["frame_inputs"], want, rtol=1e-6, atol=1e-6)
  assert variables["params"]["recurrence"]["W_z"]["kernel"].shape[0] == M  # not M * G
  with pytest.raises(ValueError, match="frame_readout 'first' unknown"):
    TNVPF(frame_readout="first").init(jax.random.key(0), *inputs)


def test_pooling_over_valid_faces():
  h = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) - 10
  mask = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], bool)
  np.testing.assert_array_equal(mean_pool(h, mask), [(h[0, :, 0] + h[0, :, 2]) / 2, [0, 0, 0]])
  np.testing.assert_array_equal(max_pool(h, mask), [h[0, :, 2], [0, 0, 0]])
  np.testing.assert_array_equal(sum_pool(h, mask), [h[0, :, 0] + h[0, :, 2], [0, 0, 0]])


def test_unknown_cell_or_pooling():
  with pytest.raises(ValueError, match="cell 'gru' unknown"):
    make_model("gru").init(jax.random.key(0), *make_inputs())
  with pytest.raises(ValueError, match="group_pooling 'median' unknown"):
    make_model(pooling="median").init(jax.random.key(0), *make_inputs())


@pytest.mark.parametrize("cell,hidden,recurrence", [
    ("tnvpf", 4096, lambda d, h: 3 * d * h + 3 * h * h),
    ("rnn", 4096, lambda d, h: d * h + h * h + h),
    ("lstm", 4096, lambda d, h: 4 * (d * h + h * h + h)),
])
def test_paper_size_param_count_without_materialising(cell, hidden, recurrence):
  """The paper's configuration (4096 hidden, flows of 10 units x 32 filters; M = 128,
  G = 4, N = 8) is counted from `jax.eval_shape`: no array is allocated."""
  m, g, n = 128, 4, 8
  model = make_model(cell, hidden=hidden, units=10, width=32)
  inputs = (jnp.zeros((1, 2, g, n, m)), jnp.ones((1, 2, g, n), bool), jnp.ones((1, 2, g), bool),
            jnp.ones((1, 2), bool))
  params = jax.eval_shape(model.init, jax.random.key(0), *inputs)["params"]
  per_net = 10 * 32 + 2 * 2 * (9 * 32 + 1) * 32 + 9 * 32 + 1
  flow = 10 * (2 * per_net + m)
  d = m * g if cell == "tnvpf" else m
  expected = {"group_flow": flow, "recurrence": recurrence(d, hidden), "head": hidden * 3 + 3}
  if cell == "tnvpf":
    expected["frame_flow"] = flow
  assert {k: count_params(v) for k, v in params.items()} == expected
  assert count_params(params) == sum(expected.values())
