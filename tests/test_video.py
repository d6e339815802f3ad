"""Video-level task: the Eq. 8 loss, the frame NLL term, the two video readouts, the evaluation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy.special import log_softmax, softmax
from sklearn import metrics as skm

from emoflow.models import TNVPF, priors
from emoflow.tasks import group, video
from emoflow.train import optimizer, parallel
from emoflow.train.state import TrainState

B, T, G, N, M = 4, 5, 3, 4, 6


def _fusion(cell: str = "tnvpf", nll_weight: float = 0.0) -> video.TemporalFusion:
  model = TNVPF(cell=cell, hidden=8, group_units=1, group_width=4, frame_units=1, frame_width=4)
  return video.TemporalFusion(model, priors.make("learned_gaussian", num_classes=3), nll_weight)


def _batch(seed: int = 0, size: int = B) -> dict:
  """Clips with T valid frames or fewer, some unlabelled, some groups and faces empty."""
  rng = np.random.default_rng(seed)
  frame_mask = np.arange(T)[None] < rng.integers(1, T + 1, size)[:, None]
  group_mask = rng.random((size, T, G)) < 0.7
  face_mask = rng.random((size, T, G, N)) < 0.7
  labels = rng.integers(0, 3, (size, T)).astype(np.int32)
  labels[rng.random((size, T)) < 0.2] = -1
  return {"embeddings": rng.normal(size=(size, T, G, N, M)).astype(np.float32),
          "face_mask": face_mask, "group_mask": group_mask, "frame_mask": frame_mask,
          "frame_labels": np.where(frame_mask, labels, -1),
          "label": rng.integers(0, 3, size).astype(np.int32)}


def _variables(fusion) -> dict:
  b = _batch()
  return fusion.init(jax.random.key(0), b["embeddings"], b["face_mask"], b["group_mask"],
                     b["frame_mask"])


def _inputs(batch):
  return batch["embeddings"], batch["face_mask"], batch["group_mask"], batch["frame_mask"]


@pytest.mark.parametrize("nll_weight", [0.0, 0.5])
def test_loss_is_eq8_frame_cross_entropy_summed_over_labelled_frames_plus_weighted_nll(nll_weight):
  fusion = _fusion(nll_weight=nll_weight)
  variables, batch = _variables(fusion), _batch(1)
  terms = jax.jit(lambda v, b: video.losses(fusion, v, b))(variables, batch)
  out = jax.jit(lambda v: fusion.apply(v, *_inputs(batch)))(variables)
  labelled = batch["frame_mask"] & (batch["frame_labels"] >= 0)
  log_probs = log_softmax(np.asarray(out["frame_logits"], np.float64), -1)
  ce = -sum(log_probs[i, t, batch["frame_labels"][i, t]] for i, t in zip(*np.nonzero(labelled))) / B
  assert float(terms["frame_cross_entropy"]) == pytest.approx(ce, rel=1e-5)
  if not nll_weight:
    assert float(terms["loss"]) == pytest.approx(ce, rel=1e-5)
    return
  prior = fusion.prior
  h, group_valid = np.asarray(out["frame_h"]), np.asarray(out["group_valid"])
  nll, entries = 0.0, 0
  for i, t in zip(*np.nonzero(labelled)):  # Eq. 7 one level up, frame by frame
    logp = prior.log_prob(variables["params"]["frame_prior"], h[i, t][None], group_valid[i, t][None])
    nll -= float(logp[0, batch["frame_labels"][i, t]]) + float(out["frame_logdet"][i, t])
    entries += M * int(group_valid[i, t].sum())
  assert float(terms["frame_nll_per_entry"]) == pytest.approx(nll / entries, rel=1e-4)
  assert float(terms["loss"]) == pytest.approx(ce + nll_weight * nll / entries, rel=1e-4)


def test_features_are_normalised_per_face_as_at_the_group_level():
  fusion = _fusion()
  variables, batch = _variables(fusion), _batch(2)
  got = fusion.apply(variables, *_inputs(batch))
  features = group.face_features(jnp.asarray(batch["embeddings"]), jnp.asarray(batch["face_mask"]))
  want = fusion.model.apply({"params": variables["params"]["tnvpf"]}, features,
                            batch["face_mask"], batch["group_mask"], batch["frame_mask"])
  np.testing.assert_allclose(got["frame_logits"], want["frame_logits"], rtol=1e-6)


@pytest.mark.parametrize("cell", ["tnvpf", "lstm"])
def test_video_readouts_are_the_last_valid_frame_and_the_mean_over_valid_frames(cell):
  fusion = _fusion(cell)
  variables, batch = _variables(fusion), _batch(3)
  probs = jax.jit(lambda v: video.predict(fusion, v, *_inputs(batch)))(variables)
  logits = np.asarray(fusion.apply(variables, *_inputs(batch))["frame_logits"], np.float64)
  for i in range(B):
    valid = np.flatnonzero(batch["frame_mask"][i])
    np.testing.assert_allclose(probs["last"][i], softmax(logits[i, valid[-1]]), atol=1e-6)
    np.testing.assert_allclose(probs["mean"][i], softmax(logits[i, valid], -1).mean(0), atol=1e-6)
  np.testing.assert_allclose(probs["frame"], softmax(logits, -1), atol=1e-6)


def test_train_step_lowers_the_loss():
  fusion = _fusion(nll_weight=0.1)
  tx = optimizer.make_optimizer(ml_collections.ConfigDict(
      {"name": "adam", "learning_rate": 1e-2, "warmup_steps": 0}), 10)
  state = TrainState.create(_variables(fusion), tx)
  step = jax.jit(video.make_train_step(fusion))
  batch, losses = _batch(4), []
  for i in range(6):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert set(metrics) == {"loss", "frame_cross_entropy", "frame_nll_per_entry", "frame_accuracy"}
  assert losses[-1] < losses[0]


def test_a_held_group_flow_keeps_its_params_and_the_rest_trains():
  """train_group_flow False: the group flow (a trained FeC's) stays bit for bit, through
  experiments.video's optimizer (set_to_zero on what `frozen` marks) and stop_gradient."""
  from experiments import video as video_experiment  # noqa: PLC0415
  fusion = video.TemporalFusion(_fusion().model, _fusion().prior, 0.0, train_group_flow=False)
  config = ml_collections.ConfigDict({
      "seed": 0, "num_steps": 5, "optimizer": {"name": "adam", "learning_rate": 1e-2,
                                               "warmup_steps": 0, "schedule": "constant"},
      "model": {"max_groups": G, "max_faces": N}})
  state = video_experiment.initial_state(config, fusion, M)
  start = jax.device_get(state.params)
  step = jax.jit(video.make_train_step(fusion))
  for i in range(3):
    state, _ = step(state, _batch(i), jax.random.key(i))
  params = jax.device_get(state.params)
  jax.tree.map(np.testing.assert_array_equal, start["tnvpf"]["group_flow"],
               params["tnvpf"]["group_flow"])
  for part in ("frame_flow", "recurrence", "head"):
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(start["tnvpf"][part]), jax.tree.leaves(params["tnvpf"][part]))), part


def test_evaluate_matches_sklearn_for_both_readouts_and_the_frames():
  fusion = _fusion()
  variables, mesh = _variables(fusion), parallel.make_data_mesh()
  examples = _batch(5, size=20)
  batches = []
  for start in range(0, 24, 8):  # three batches of 8 (conftest: 8 devices), the last padded
    idx = np.arange(start, start + 8)
    valid = idx < 20
    batches.append({**{k: v[np.where(valid, idx, 0)] for k, v in examples.items()},
                    "valid": valid})
  state = TrainState.create(variables, optimizer.make_optimizer(ml_collections.ConfigDict(
      {"name": "adam", "learning_rate": 1e-2}), 1))
  results = video.make_evaluate(fusion, lambda: iter(batches), mesh)(parallel.replicate(state, mesh))
  probs = jax.jit(lambda v, *x: video.predict(fusion, v, *x))(variables, *_inputs(examples))
  labelled = examples["frame_mask"] & (examples["frame_labels"] >= 0)
  cases = {"": (examples["label"], np.argmax(probs["last"], -1)),
           "mean/": (examples["label"], np.argmax(probs["mean"], -1)),
           "frame/": (examples["frame_labels"][labelled], np.argmax(probs["frame"], -1)[labelled])}
  for prefix, (labels, predictions) in cases.items():
    assert results[f"{prefix}mAC"] == pytest.approx(skm.accuracy_score(labels, predictions))
    assert results[f"{prefix}UAR"] == pytest.approx(skm.balanced_accuracy_score(labels, predictions))
    np.testing.assert_array_equal(results[f"{prefix}confusion_matrix"],
                                  skm.confusion_matrix(labels, predictions, labels=[0, 1, 2]))
  # Per clip, for paired intervals: each readout right or wrong, frames right out of labelled.
  frame_right = (np.argmax(probs["frame"], -1) == examples["frame_labels"]) & labelled
  np.testing.assert_array_equal(results["examples/label"], examples["label"])
  np.testing.assert_array_equal(results["examples/correct"], cases[""][1] == examples["label"])
  np.testing.assert_array_equal(results["examples/mean/correct"],
                                cases["mean/"][1] == examples["label"])
  np.testing.assert_array_equal(results["examples/frame/correct"], frame_right.sum(1))
  np.testing.assert_array_equal(results["examples/frame/total"], labelled.sum(1))
