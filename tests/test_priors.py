"""Priors: each registered density against scipy.stats, masking, gradients, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from emoflow.models import priors

B, M, N, C = 3, 4, 5, 3


def _normal(h, mean, log_std):
  return stats.norm.logpdf(h, loc=mean, scale=np.exp(log_std))


def _ref_entries(name, prior, p, h, mask):
  """Per-entry log density [B,C,M,N] in numpy/scipy, independent of priors.py."""
  # Scaling "group": a group's locations over sqrt(its valid faces), at least 1.
  shrink = np.ones(len(h))
  if prior.scaling == "group":
    shrink = 1 / np.sqrt(np.maximum(mask.sum(1), 1))
  h = h[:, None]  # [B,1,M,N]
  at = lambda loc: loc[None, ..., None] * shrink.reshape(-1, *[1] * (loc.ndim + 1))
  if name in ("class_gaussian", "learned_gaussian"):
    return _normal(h, at(p["mean"]), p["log_std"][..., None])
  if name == "student_t":
    return stats.t.logpdf(h, df=prior.df, loc=at(p["loc"]),
                          scale=np.exp(p["log_scale"][..., None]))
  if name == "gaussian_mixture":
    log_w = p["logits"] - special.logsumexp(p["logits"], axis=1, keepdims=True)
    comp = _normal(h[:, :, None], at(p["mean"]), p["log_std"][..., None])
    return special.logsumexp(log_w[..., None, None] + comp, axis=2)
  raise AssertionError(f"no reference for {name}")


def _data(seed=0):
  """H with garbage in padded columns; example 1 has no valid face."""
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(B, M, N)) * 2
  mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
  return h, mask


def _perturbed(prior, seed=0):
  params = prior.init(jax.random.key(seed), num_features=M)
  rng = np.random.default_rng(seed + 1)
  return jax.tree.map(lambda x: np.asarray(x) + 0.3 * rng.normal(size=x.shape), params)


@pytest.mark.parametrize("scaling", priors.SCALINGS)
@pytest.mark.parametrize("name", priors.known())
def test_log_prob_matches_scipy(name, scaling):
  with jax.enable_x64(True):
    prior = priors.make(name, num_classes=C, scaling=scaling, geometry="simplex")
    params = _perturbed(prior)
    h, mask = _data()
    got = np.asarray(jax.jit(prior.log_prob)(params, jnp.asarray(h), jnp.asarray(mask)))
    assert got.dtype == np.float64
    want = np.where(mask[:, None, None, :], _ref_entries(name, prior, params, h, mask), 0)
    want = want.sum((2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10)
    assert np.all(got[1] == 0)


@pytest.mark.parametrize("name", priors.known())
def test_padded_columns_change_nothing(name):
  prior = priors.make(name, num_classes=C)
  params = prior.init(jax.random.key(0), num_features=M)
  h, mask = _data()
  garbage = np.where(mask[:, None, :], h, np.array([np.nan, np.inf, 1e30, -1e30, 7.0]))

  def total(params, h):
    return prior.log_prob(params, h, jnp.asarray(mask)).sum()

  value_and_grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))
  clean = value_and_grads(params, jnp.asarray(h, jnp.float32))
  dirty = value_and_grads(params, jnp.asarray(garbage, jnp.float32))
  for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(dirty)):
    np.testing.assert_array_equal(a, b)
  grad_h = np.asarray(dirty[1][1])
  assert np.all(grad_h[~np.broadcast_to(mask[:, None, :], grad_h.shape)] == 0)


@pytest.mark.parametrize("name", priors.known())
def test_param_gradients_zero_only_for_fixed(name):
  prior = priors.make(name, num_classes=C)
  params = prior.init(jax.random.key(0), num_features=M)
  h, mask = map(jnp.asarray, _data())
  grads = jax.jit(jax.grad(lambda p: prior.log_prob(p, h, mask)[:, 0].sum()))(params)
  norms = [float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)]
  if prior.trainable:
    assert all(n > 0 for n in norms), norms
    held = priors.make(name, num_classes=C, fixed=prior.param_names[-1:])
    grads = jax.grad(lambda p: held.log_prob(p, h, mask)[:, 0].sum())(params)
    assert float(jnp.abs(grads[held.param_names[-1]]).sum()) == 0
    assert all(float(jnp.abs(grads[k]).sum()) > 0 for k in held.param_names[:-1])
  else:
    assert all(n == 0 for n in norms), norms


@pytest.mark.parametrize("geometry", priors.GEOMETRIES)
@pytest.mark.parametrize("scaling", priors.SCALINGS)
def test_class_distance_per_unit_of_scaling(geometry, scaling):
  """Nearest classes sit `separation` apart per entry, per face or per group (whatever M and n
  for "group"): the log-likelihood gap at a class's own location says so (unit variances)."""
  with jax.enable_x64(True):
    for m, n in ((8, 1), (128, 8), (64, 3)):
      _check_distance(geometry, scaling, m, n)


def _check_distance(geometry, scaling, m, n):
  prior = priors.make("learned_gaussian", num_classes=3, separation=1.5, geometry=geometry,
                      scaling=scaling)
  params = prior.init(None, num_features=m)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
  mask = jnp.ones((1, n), bool)
  shrink = 1 / np.sqrt(n) if scaling == "group" else 1.0
  at_class0 = jnp.broadcast_to(params["mean"][0][None, :, None] * shrink, (1, m, n))
  logp = np.asarray(prior.log_prob(params, at_class0, mask))[0]
  squared = 2 * (logp[0] - logp[1:].max())  # ||mu_0 - mu_nearest||^2 over the group's entries
  per_unit = {"entry": m * n, "face": n, "group": 1}[scaling]
  np.testing.assert_allclose(squared, 1.5 ** 2 * per_unit, rtol=1e-9)


def test_simplex_classes_are_equidistant_and_bad_options_are_one_line_errors():
  mean = np.asarray(priors.make("learned_gaussian", num_classes=4, separation=2.0,
                                geometry="simplex", scaling="face").init(None, 10)["mean"])
  distances = [np.linalg.norm(mean[i] - mean[j]) for i in range(4) for j in range(i)]
  np.testing.assert_allclose(distances, 2.0, rtol=1e-6)
  for bad in ({"geometry": "cube"}, {"scaling": "pixel"}, {"fixed": ("loc",)}):
    with pytest.raises(ValueError) as err:
      priors.make("learned_gaussian", **bad)
    assert "\n" not in str(err.value)


def test_jit_with_prior_static_and_shapes():
  h, mask = _data()

  @jax.jit(static_argnums=0)
  def logp(prior, params, h, mask):
    return prior.log_prob(params, h, mask)

  for name in priors.known():
    prior = priors.make(name, num_classes=4)
    params = prior.init(jax.random.key(0), num_features=M)
    out = logp(prior, params, jnp.asarray(h, jnp.float32), jnp.asarray(mask))
    assert out.shape == (B, 4) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))


def test_class_gaussian_defaults():
  prior = priors.make("class_gaussian")
  params = prior.init(jax.random.key(0), num_features=2)
  np.testing.assert_allclose(params["mean"], [[-2, -2], [0, 0], [2, 2]])
  np.testing.assert_allclose(params["log_std"], 0)
  stds = priors.make("class_gaussian", stds=(1.0, 2.0, 0.5)).init(None, 1)["log_std"]
  np.testing.assert_allclose(np.exp(stds[:, 0]), [1.0, 2.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(priors.class_means(1, 3.0), [0.0])


def test_unknown_name_is_one_line_error():
  with pytest.raises(ValueError) as err:
    priors.make("laplace")
  message = str(err.value)
  assert "\n" not in message and "laplace" in message
  assert all(name in message for name in priors.known())
