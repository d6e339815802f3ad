"""Individual-level task: weighted cross-entropy, class weights, prediction (in chunks too),
evaluation report."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emoflow.labels import EMOTIONS
from emoflow.models import EmoNet
from emoflow.tasks import individual


def test_weighted_cross_entropy_matches_a_plain_loop():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(9, 8)) * 3
  labels = rng.integers(0, 8, 9)
  weights = rng.uniform(0.2, 3.0, 8)
  mask = rng.random(9) < 0.7
  num = den = 0.0
  for z, y, m in zip(logits, labels, mask):
    log_p = z[y] - np.log(np.sum(np.exp(z)))
    num += m * weights[y] * -log_p
    den += m * weights[y]
  got = jax.jit(individual.weighted_cross_entropy)(
      jnp.asarray(logits, jnp.float32), jnp.asarray(labels), jnp.asarray(weights, jnp.float32),
      jnp.asarray(mask))
  assert float(got) == pytest.approx(num / den, rel=1e-5)


def test_inverse_frequency_weights_balance_the_classes():
  labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
  w = individual.inverse_frequency_weights(labels, 4)
  np.testing.assert_allclose(w[:3] * np.array([60, 30, 10]), [25, 25, 25])  # equal total per class
  assert w[3] == 0  # absent class


def test_normalize_faces_maps_uint8_to_unit_range():
  out = individual.normalize_faces(jnp.array([0, 255], jnp.uint8))
  np.testing.assert_allclose(out, [-1.0, 1.0])


def test_evaluation_report_buckets_by_face_size():
  labels = np.array([0, 1, 2, 3, 4, 5])
  predictions = np.array([0, 1, 0, 3, 0, 0])
  face_px = np.array([8, 10, 20, 40, 100, 120])
  report = individual.evaluation_report(labels, predictions, face_px, ((8, 16), (16, 32), (32, 121)))
  assert report["acc@8-15px"] == 1.0 and report["n@8-15px"] == 2
  assert report["acc@16-31px"] == 0.0 and report["n@16-31px"] == 1
  assert report["acc@32-120px"] == pytest.approx(1 / 3) and report["n@32-120px"] == 3
  assert report["mAC"] == pytest.approx(3 / 6)
  assert set(f"acc/{e}" for e in EMOTIONS) <= set(report)
  assert report["confusion_matrix"].shape == (8, 8)


@pytest.mark.parametrize("count", [5, 16, 21])
def test_predict_in_chunks_equals_one_call(count):
  """Chunked inference (lax.map over 8 faces, the batch padded) gives one call's outputs."""
  net = EmoNet(num_classes=8, embed_dim=16, width=0.25, depth=0.5)
  variables = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 112, 112, 3)))
  faces = jnp.asarray(np.random.default_rng(count).integers(0, 256, (count, 112, 112, 3)),
                      jnp.uint8)
  whole = jax.jit(lambda v, x: individual.predict(net, v, x, chunk=0))(variables, faces)
  chunked = jax.jit(lambda v, x: individual.predict(net, v, x, chunk=8))(variables, faces)
  for a, b in zip(whole, chunked):
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
