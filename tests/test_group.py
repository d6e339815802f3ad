"""Group-level task: face features, FeC's class log-likelihoods and loss (Eq. 7), predict, metrics."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy.special import log_softmax
from sklearn import metrics as skm

from emoflow.labels import EMOTION_VALENCE, EMOTIONS, GROUP_EMOTIONS
from emoflow.models import NVPF, EmoNet, priors
from emoflow.tasks import group, individual
from emoflow.train import optimizer, parallel
from emoflow.train.state import TrainState

B, N, M = 8, 4, 6


def _model_config(fusion: str, **overrides) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "fusion": fusion, "num_classes": 3, "flow_units": 2, "flow_width": 4,
      "prior": "class_gaussian", "ce_weight": 0.5, "feb_hidden": 8, **overrides})


def _batch(seed: int = 0, size: int = B) -> dict:
  rng = np.random.default_rng(seed)
  mask = rng.random((size, N)) < 0.6
  mask[:, 0] = True  # every group has a face
  embeddings = rng.normal(size=(size, N, M)).astype(np.float32) * 3 * mask[..., None]
  return {"embeddings": embeddings, "mask": mask, "label": rng.integers(0, 3, size).astype(np.int32)}


def _state(fusion, num_steps: int = 10, inputs=None, learning_rate: float = 1e-2) -> TrainState:
  inputs = jnp.zeros((1, N, M)) if inputs is None else inputs
  variables = fusion.init(jax.random.key(0), inputs, jnp.ones((1, N), bool))
  tx = optimizer.make_optimizer(ml_collections.ConfigDict(
      {"name": "adam", "learning_rate": learning_rate, "warmup_steps": 0}), num_steps)
  return TrainState.create(variables, tx)


def _fine_tuned(fusion_name: str):
  """A FineTuned fusion over an EmoNet of M-dim embeddings, its state and a batch of pixel faces."""
  fusion = group.FineTuned(group.make_fusion(_model_config(fusion_name)),
                           EmoNet(num_classes=8, embed_dim=M))
  batch = _batch(size=2)
  faces = np.random.default_rng(3).integers(0, 256, (2, N, 112, 112, 3), np.uint8)
  batch = {**batch, "faces": faces * batch["mask"][..., None, None, None].astype(np.uint8)}
  state = _state(fusion, inputs=jnp.zeros((1, N, 112, 112, 3), jnp.uint8), learning_rate=1e-3)
  return fusion, state, batch


def test_face_features_have_unit_mean_square_and_empty_slots_stay_zero():
  batch = _batch()
  x = np.asarray(group.face_features(jnp.asarray(batch["embeddings"]), jnp.asarray(batch["mask"])))
  np.testing.assert_allclose(np.mean(x[batch["mask"]] ** 2, -1), 1.0, rtol=1e-5)
  assert np.all(x[~batch["mask"]] == 0)


def test_class_log_likelihoods_are_the_prior_plus_the_logdet():
  fusion = group.make_fusion(_model_config("fec"))
  state = _state(fusion)
  batch = _batch()
  features = group.face_features(jnp.asarray(batch["embeddings"]), jnp.asarray(batch["mask"]))
  scores, _ = jax.jit(fusion.class_scores)(state.variables, features, batch["mask"])

  @jax.jit
  def reference(params, s, mask):
    h, logdet = NVPF(num_units=2, width=4).apply({"params": params["flow"]}, s, mask)
    prior = priors.make("class_gaussian", num_classes=3)
    return prior.log_prob(params["prior"], h, mask) + logdet[:, None]

  want = reference(state.params, jnp.swapaxes(features, 1, 2), batch["mask"])
  np.testing.assert_allclose(scores, want, rtol=1e-6)


@pytest.mark.parametrize("ce_weight, nll_weight", [(0.0, 1.0), (0.5, 1.0), (0.5, 0.0), (2.0, 0.3)])
def test_fec_loss_is_per_entry_nll_of_the_true_class_plus_weighted_cross_entropy(ce_weight,
                                                                                 nll_weight):
  fusion = group.make_fusion(_model_config("fec", ce_weight=ce_weight, nll_weight=nll_weight))
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(B, 3)) * 50 - 300
  labels = rng.integers(0, 3, B)
  entries = M * rng.integers(1, N + 1, B)
  terms = fusion.loss(jnp.asarray(scores, jnp.float32), jnp.asarray(labels), jnp.asarray(entries))
  nll = -np.mean(scores[np.arange(B), labels]) / np.mean(entries)  # Eq. 7, nats per entry
  ce = -np.mean(log_softmax(np.asarray(scores, np.float64), axis=-1)[np.arange(B), labels])
  assert float(terms["nll_per_entry"]) == pytest.approx(nll, rel=1e-5)
  assert float(terms["cross_entropy"]) == pytest.approx(ce, rel=1e-4)
  assert float(terms["loss"]) == pytest.approx(nll_weight * nll + ce_weight * ce, rel=1e-4)


@pytest.mark.parametrize("fusion_name", ["fea", "feb", "fec"])
def test_predict_is_the_softmax_of_the_class_scores(fusion_name):
  fusion = group.make_fusion(_model_config(fusion_name))
  state = _state(fusion)
  batch = _batch()
  probs = jax.jit(lambda v, e, m: group.predict(fusion, v, e, m))(
      state.variables, batch["embeddings"], batch["mask"])
  features = group.face_features(jnp.asarray(batch["embeddings"]), jnp.asarray(batch["mask"]))
  scores, _ = jax.jit(fusion.class_scores)(state.variables, features, batch["mask"])
  want = np.exp(log_softmax(np.asarray(scores, np.float64), axis=-1))
  np.testing.assert_allclose(probs, want, atol=1e-6)
  np.testing.assert_allclose(np.sum(probs, -1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("prior", ["class_gaussian", "learned_gaussian"])
def test_train_step_lowers_the_loss_and_trains_only_a_trainable_prior(prior):
  fusion = group.make_fusion(_model_config("fec", prior=prior, flow_units=1))
  state = _state(fusion)
  start = jax.tree.map(np.asarray, state.params)
  step = jax.jit(group.make_train_step(fusion))
  batch = _batch()
  losses = []
  for i in range(8):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert set(metrics) == {"loss", "nll_per_entry", "cross_entropy", "accuracy"}
  assert losses[-1] < losses[0]
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(start["prior"]),
                                                    jax.tree.leaves(state.params["prior"]))]
  assert all(moved) if prior == "learned_gaussian" else not any(moved)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(start["flow"]),
                                                      jax.tree.leaves(state.params["flow"])))


@pytest.mark.parametrize("fusion_name", ["fea", "fec"])
@pytest.mark.slow
def test_fine_tuned_fusion_is_the_fusion_on_emonet_embeddings_of_the_pixels(fusion_name):
  fusion, state, batch = _fine_tuned(fusion_name)
  variables = state.variables
  probs = jax.jit(lambda v, f, m: group.predict(fusion, v, f, m))(
      variables, batch["faces"], batch["mask"])
  emonet_variables = {col: v["emonet"] for col, v in variables.items()}
  fusion_variables = {col: v["fusion"] for col, v in variables.items() if "fusion" in v}
  _, embeddings = jax.jit(lambda v, x: EmoNet(num_classes=8, embed_dim=M).apply(v, x))(
      emonet_variables, individual.normalize_faces(batch["faces"].reshape(-1, 112, 112, 3)))
  embeddings = np.asarray(embeddings).reshape(2, N, M)
  want = jax.jit(lambda v, e, m: group.predict(fusion.fusion, v, e, m))(
      fusion_variables, embeddings, batch["mask"])
  np.testing.assert_allclose(probs, want, atol=1e-5)


@pytest.mark.slow
def test_fine_tuned_train_step_trains_emonet_and_the_fusion_but_keeps_batch_statistics():
  fusion, state, batch = _fine_tuned("fec")
  trained = group.FineTuned.with_emonet(
      state.variables, jax.tree.map(lambda x: x + 0.01, {col: v["emonet"] for col, v
                                                         in state.variables.items()}))
  state = TrainState.create(trained, state.tx)
  start = jax.tree.map(np.asarray, state.variables)
  step = jax.jit(group.make_train_step(fusion))
  losses = []
  for i in range(3):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]
  for part in ("emonet", "fusion"):
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(start["params"][part]), jax.tree.leaves(state.params[part]))), part
  jax.tree.map(np.testing.assert_array_equal, start["batch_stats"],
               jax.device_get(state.model_state["batch_stats"]))


def test_evaluate_matches_sklearn_and_skips_padding():
  fusion = group.make_fusion(_model_config("fec"))
  state = _state(fusion)
  mesh = parallel.make_data_mesh()
  examples = _batch(seed=2, size=20)
  batches = []
  for start in range(0, 24, 8):  # three batches of 8, the last padded with valid=False
    idx = np.arange(start, start + 8)
    valid = idx < 20
    batch = {k: v[np.where(valid, idx, 0)] for k, v in examples.items()}
    batches.append({**batch, "valid": valid})
  evaluate = group.make_evaluate(fusion, lambda: iter(batches), mesh)
  results = evaluate(parallel.replicate(state, mesh))
  probs = jax.jit(lambda v, e, m: group.predict(fusion, v, e, m))(
      state.variables, examples["embeddings"], examples["mask"])
  predictions, labels = np.argmax(probs, -1), examples["label"]
  assert results["mAC"] == pytest.approx(skm.accuracy_score(labels, predictions))
  assert results["UAR"] == pytest.approx(skm.balanced_accuracy_score(labels, predictions))
  assert results["F1"] == pytest.approx(skm.f1_score(labels, predictions, average="macro"))
  np.testing.assert_array_equal(results["confusion_matrix"],
                                skm.confusion_matrix(labels, predictions, labels=[0, 1, 2]))
  recall = skm.recall_score(labels, predictions, average=None, labels=[0, 1, 2], zero_division=0)
  for name, want in zip(GROUP_EMOTIONS, recall):
    assert results[f"acc/{name}"] == pytest.approx(want)


def test_evaluate_keeps_each_group_right_or_wrong_and_the_true_emotion_ceiling():
  fusion = group.make_fusion(_model_config("fea"))
  state = _state(fusion)
  mesh = parallel.make_data_mesh()
  examples = _batch(seed=3, size=16)
  rng = np.random.default_rng(4)
  examples["face_emotions"] = np.where(examples["mask"], rng.integers(0, 8, (16, N)), -1)
  batches = [{**{k: v[i:i + 8] for k, v in examples.items()}, "valid": np.ones(8, bool)}
             for i in (0, 8)]
  evaluate = group.make_evaluate(fusion, lambda: iter(batches), mesh)
  results = evaluate(parallel.replicate(state, mesh))
  probs = jax.jit(lambda v, e, m: group.predict(fusion, v, e, m))(
      state.variables, examples["embeddings"], examples["mask"])
  np.testing.assert_array_equal(results["examples/label"], examples["label"])
  np.testing.assert_array_equal(results["examples/correct"],
                                np.argmax(probs, -1) == examples["label"])
  np.testing.assert_array_equal(results["examples/faces"], examples["mask"].sum(-1))
  # The ceiling by a plain loop: most faces' valence, ties to the earlier group class.
  want = []
  for emotions, mask in zip(examples["face_emotions"], examples["mask"]):
    votes = [GROUP_EMOTIONS.index(EMOTION_VALENCE[EMOTIONS[e]])
             for e, m in zip(emotions, mask) if m]
    want.append(max(range(3), key=lambda c: (votes.count(c), -c)))
  np.testing.assert_array_equal(results["examples/ceiling/correct"],
                                np.array(want) == examples["label"])
  assert results["ceiling/mAC"] == pytest.approx(np.mean(np.array(want) == examples["label"]))
  # A group with a face of unknown emotion (real data) leaves the ceiling out.
  examples["face_emotions"][5, 0] = -1
  batches = [{**{k: v[i:i + 8] for k, v in examples.items()}, "valid": np.ones(8, bool)}
             for i in (0, 8)]
  results = evaluate(parallel.replicate(state, mesh))
  assert "ceiling/mAC" not in results and "examples/ceiling/correct" not in results


def test_unknown_fusion_is_one_line():
  with pytest.raises(ValueError, match=r"^model.fusion 'fed' unknown; known: fea, feb, fec$"):
    group.make_fusion(_model_config("fed"))


def test_fec_scores_are_the_same_in_unrolled_training_chunks_and_mapped_eval_chunks():
  fusion = group.make_fusion(_model_config("fec"))
  batch = _batch(3, size=3 * group.CPU_FLOW_CHUNK + 2)  # several chunks and a padded one
  variables = _state(fusion).variables
  features = jax.jit(fusion.features)(variables, batch["embeddings"], batch["mask"])
  evaluate = jax.jit(fusion.class_scores)
  evaluated, _ = evaluate(variables, features, batch["mask"])
  trained, _ = jax.jit(lambda v, f, m, r: fusion.class_scores(v, f, m, train=True, rng=r))(
      variables, features, batch["mask"], jax.random.key(0))
  single = [evaluate(variables, features[i:i + 1], batch["mask"][i:i + 1])[0]
            for i in range(len(features))]
  np.testing.assert_allclose(evaluated, trained, rtol=1e-6, atol=1e-4)
  np.testing.assert_allclose(evaluated, np.concatenate(single), rtol=1e-5, atol=1e-3)


def test_make_prior_takes_the_configs_prior_keys_and_the_printed_defaults_for_absent_ones():
  old = ml_collections.ConfigDict({"prior": "class_gaussian", "num_classes": 3})
  prior = group.make_prior(old)
  assert (type(prior), prior.separation, prior.geometry, prior.scaling, prior.fixed) == (
      priors.ClassGaussian, 2.0, "line", "entry", ())
  new = ml_collections.ConfigDict({
      "prior": "class_gaussian", "num_classes": 3, "prior_separation": 1.0,
      "prior_geometry": "simplex", "prior_scaling": "group", "prior_fixed": "log_std, mean"})
  prior = group.make_prior(new, "learned_gaussian")
  assert (type(prior), prior.separation, prior.geometry, prior.scaling, prior.fixed) == (
      priors.LearnedGaussian, 1.0, "simplex", "group", ("log_std", "mean"))
