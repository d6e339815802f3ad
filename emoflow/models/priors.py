"""Class-conditional priors p_H(H | c) over NVPF's fused features, by name.

NVPF maps a group's stacked face features S [M, N] to H = F(S) and trains on
-log p_S(S) = -log p_H(H | c) - log|det dF/dS| (paper Eq. 4 and 7), with "a
different Gaussian distribution (i.e. different mean and standard deviation)
for each emotion class" (Sec. 3.2); a group is classified by the class whose
density gives H the highest likelihood. This module holds that p_H and the
alternatives the "swap the prior" experiments try, kept apart from the flow.

A prior is a small frozen dataclass of hyper-parameters (hashable, so it can
be a static argument of `jax.jit`) with two pure functions:

  params = prior.init(rng, num_features=M)   # a dict of arrays
  logp = prior.log_prob(params, H, mask)     # H [B,M,N], mask [B,N] -> [B,C]

`log_prob` sums the per-entry log density over the valid face columns only:
a padded column contributes exactly 0, whatever it holds, and no gradient.

Trainable or not: every prior has params, so a trainer optimises
`{"flow": ..., "prior": params}` uniformly; a fixed prior (`trainable` False)
applies `jax.lax.stop_gradient` to its params inside `log_prob`, so their
gradient is zero and the optimiser leaves them where `init` put them.

Where the classes sit, shared by every prior (its fields):

- `geometry`: "line" (as printed) puts class c's location at the same scalar
  on every feature, evenly spaced over [-separation, separation] in class-index
  order (`class_means`), so the middle class lies between the others; "simplex"
  puts every pair of classes `separation` apart along orthogonal directions
  (class c on the features m = c mod C), no class between two others.
- `scaling`: the unit `separation` is measured in. "entry" (as printed): per
  entry of H, so two classes of a group with n faces sit separation * sqrt(M n)
  apart and their log-likelihoods differ by thousands of nats at M = 128; the
  cross-entropy of such scores saturates. "face": per face (a face's M entries
  together), separation * sqrt(n) per group: evidence adds up over faces as
  independent votes would. "group": per group, whatever M and n: the locations
  of a group with n valid faces are the stored ones over sqrt(n) (IB-INN's
  geometry, Ardizzone et al. 2020: class distances independent of the dimension).
- `fixed`: names of params held where `init` put them (stop-gradient), e.g.
  ("log_std",) trains the means only; class_gaussian holds all of them.
"""

import dataclasses
import math
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

Params = dict[str, jax.Array]

_REGISTRY: dict[str, type["Prior"]] = {}


def register(name: str) -> Callable[[type["Prior"]], type["Prior"]]:
  """Class decorator: make a prior class available as `make(name)`."""
  def add(cls):
    _REGISTRY[name] = cls
    return cls
  return add


def known() -> tuple[str, ...]:
  """Names `make` accepts."""
  return tuple(sorted(_REGISTRY))


def make(name: str, **hparams) -> "Prior":
  """The prior registered as `name`, with hyper-parameters `hparams`."""
  try:
    cls = _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown prior {name!r}; known: {', '.join(known())}") from None
  return cls(**hparams)


GEOMETRIES = ("line", "simplex")
SCALINGS = ("entry", "face", "group")


def class_means(num_classes: int, separation: float) -> jax.Array:
  """[C] means evenly spaced over [-separation, separation] (0 for one class)."""
  c = jnp.arange(num_classes)
  return separation * (2 * c - (num_classes - 1)) / max(num_classes - 1, 1)


def simplex_directions(num_classes: int, num_features: int) -> jax.Array:
  """[C, M] orthonormal rows: class c spread evenly over the features m = c mod C."""
  on = jnp.arange(num_features)[None, :] % num_classes == jnp.arange(num_classes)[:, None]
  return on / jnp.sqrt(jnp.maximum(on.sum(1, keepdims=True), 1))


def normal_logpdf(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
  """log N(x; mean, exp(log_std)^2), elementwise, in log space."""
  z = (x - mean) * jnp.exp(-log_std)
  return -0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)


@dataclasses.dataclass(frozen=True)
class Prior:
  """Shared hyper-parameters and the masked sum; subclasses give the density.

  Attributes:
    num_classes: C, the number of class-conditional densities.
    separation: how far apart the class locations start, in units of `scaling`.
    geometry: "line" (as printed) or "simplex" (module docstring).
    scaling: "entry" (as printed), "face" or "group" (module docstring).
    fixed: names of params that keep their `init` values.
  """
  num_classes: int = 3
  separation: float = 2.0
  geometry: str = "line"
  scaling: str = "entry"
  fixed: tuple[str, ...] = ()

  trainable: ClassVar[bool] = True
  param_names: ClassVar[tuple[str, ...]] = ()  # the keys of `init`'s params

  def __post_init__(self):
    if self.geometry not in GEOMETRIES:
      raise ValueError(f"prior geometry {self.geometry!r} unknown; known: {', '.join(GEOMETRIES)}")
    if self.scaling not in SCALINGS:
      raise ValueError(f"prior scaling {self.scaling!r} unknown; known: {', '.join(SCALINGS)}")
    object.__setattr__(self, "fixed", tuple(self.fixed))
    unknown = [p for p in self.fixed if p not in self.param_names]
    if unknown:
      raise ValueError(f"fixed prior params {', '.join(unknown)} unknown; "
                       f"{type(self).__name__} has {', '.join(self.param_names)}")

  def init(self, rng: jax.Array, num_features: int) -> Params:
    raise NotImplementedError

  def entry_log_prob(self, params: Params, h: jax.Array, shrink: jax.Array | None) -> jax.Array:
    """Per-entry log density of h [B,M,N] under each class -> [B,C,M,N]; `shrink` [B] (or
    None: 1) multiplies the class locations of each example (`located`)."""
    raise NotImplementedError

  def _start_locations(self, num_features: int) -> jax.Array:
    """[C, M]: each class's start location over the features (geometry, scaling)."""
    if self.geometry == "line":
      means = class_means(self.num_classes, self.separation)
      start = jnp.broadcast_to(means[:, None], (self.num_classes, num_features))
    else:
      start = self.separation / math.sqrt(2) * simplex_directions(self.num_classes, num_features)
      start = start * math.sqrt(num_features)  # per entry: as far apart as "line" per entry
    return start if self.scaling == "entry" else start / math.sqrt(num_features)

  def _held(self, params: Params) -> Params:
    """params with the fixed ones (all, for a prior that is not trainable) stop-gradiented."""
    return {k: jax.lax.stop_gradient(v) if not self.trainable or k in self.fixed else v
            for k, v in params.items()}

  def log_prob(self, params: Params, h: jax.Array, mask: jax.Array) -> jax.Array:
    """log p_H(H | c) for every class c: [B,M,N], [B,N] -> [B,C].

    Padded columns are zeroed before the density (so garbage there cannot
    reach values or gradients) and masked out after it. With scaling "group"
    a group's locations are divided by the square root of its valid faces.
    """
    shrink = None
    if self.scaling == "group":
      shrink = jax.lax.rsqrt(jnp.maximum(mask.sum(-1), 1).astype(h.dtype))
    valid = mask[:, None, None, :]
    h = jnp.where(mask[:, None, :], h, 0)
    logp = jnp.where(valid, self.entry_log_prob(self._held(params), h, shrink), 0)
    return logp.sum(axis=(2, 3))


def located(loc: jax.Array, shrink: jax.Array | None) -> jax.Array:
  """Class locations [*L] ready to meet entries [..., M, N]: [*L, 1], or [B, *L, 1] scaled by
  `shrink` [B] per example."""
  if shrink is None:
    return loc[..., None]
  return loc[None, ..., None] * shrink.reshape(-1, *([1] * (loc.ndim + 1)))


@dataclasses.dataclass(frozen=True)
class _Gaussian(Prior):
  """Per class c and feature m, entries iid N(mean[c,m], exp(log_std[c,m])^2)."""
  stds: float | tuple[float, ...] = 1.0
  param_names: ClassVar[tuple[str, ...]] = ("mean", "log_std")

  def init(self, rng: jax.Array, num_features: int) -> Params:
    del rng  # deterministic start
    stds = jnp.broadcast_to(jnp.asarray(self.stds, float), (self.num_classes,))
    log_std = jnp.broadcast_to(jnp.log(stds)[:, None], (self.num_classes, num_features))
    return {"mean": self._start_locations(num_features), "log_std": log_std}

  def entry_log_prob(self, params: Params, h: jax.Array, shrink: jax.Array | None) -> jax.Array:
    return normal_logpdf(h[:, None], located(params["mean"], shrink), params["log_std"][..., None])


@register("class_gaussian")
@dataclasses.dataclass(frozen=True)
class ClassGaussian(_Gaussian):
  """The paper's prior (Sec. 3.2, Eq. 7): a fixed Gaussian per class.

  Every entry h_{m,n} of class c is iid N(mu_c, sigma_c^2), with mu_c from
  `class_means(C, separation)` (-2, 0, 2 for C = 3 by default) and sigma_c
  = `stds` (one float for all classes, default 1, or one per class). The
  paper gives no values; these put adjacent classes two stds apart, a KL
  divergence of 2 nats per entry, so over a group's M*N entries the class
  likelihoods are far apart. Not trained.
  """
  trainable: ClassVar[bool] = False


@register("learned_gaussian")
@dataclasses.dataclass(frozen=True)
class LearnedGaussian(_Gaussian):
  """A Gaussian per class with trained mean [C,M] and log-std [C,M].

  Parameters are per feature and shared across faces (face slots are
  exchangeable); they start where `class_gaussian` sits (log-std 0 by default).
  """


@register("student_t")
@dataclasses.dataclass(frozen=True)
class StudentT(Prior):
  """Heavy-tailed alternative: entries iid Student-t per class and feature.

  Trained location [C,M] and log-scale [C,M] (starting like class_gaussian's
  means with scale 1); `df` (degrees of freedom) is fixed.
  """
  df: float = 5.0
  param_names: ClassVar[tuple[str, ...]] = ("loc", "log_scale")

  def init(self, rng: jax.Array, num_features: int) -> Params:
    del rng  # deterministic start
    loc = self._start_locations(num_features)
    return {"loc": loc, "log_scale": jnp.zeros_like(loc)}

  def entry_log_prob(self, params: Params, h: jax.Array, shrink: jax.Array | None) -> jax.Array:
    nu = self.df
    log_scale = params["log_scale"][..., None]
    z = (h[:, None] - located(params["loc"], shrink)) * jnp.exp(-log_scale)
    const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi)
    return const - log_scale - (nu + 1) / 2 * jnp.log1p(z * z / nu)


@register("gaussian_mixture")
@dataclasses.dataclass(frozen=True)
class GaussianMixture(Prior):
  """Per class c, entries iid sum_k pi_ck N(mu_ckm, sigma_ckm^2) (K components).

  Trained weight logits [C,K], means [C,K,M] and log-stds [C,K,M]. Means
  start at the class's `class_means` value plus N(0, jitter^2) noise, which
  breaks the symmetry between components (identical components would get
  identical gradients forever); weights start equal, log-stds at 0.
  """
  num_components: int = 3
  jitter: float = 0.1
  param_names: ClassVar[tuple[str, ...]] = ("logits", "mean", "log_std")

  def init(self, rng: jax.Array, num_features: int) -> Params:
    shape = (self.num_classes, self.num_components, num_features)
    start = self._start_locations(num_features)[:, None, :]
    means = start + self.jitter * jax.random.normal(rng, shape, start.dtype)
    return {
        "logits": jnp.zeros((self.num_classes, self.num_components)),
        "mean": means,
        "log_std": jnp.zeros(shape),
    }

  def entry_log_prob(self, params: Params, h: jax.Array, shrink: jax.Array | None) -> jax.Array:
    log_w = jax.nn.log_softmax(params["logits"])[..., None, None]  # [C,K,1,1]
    comp = normal_logpdf(h[:, None, None], located(params["mean"], shrink),
                         params["log_std"][..., None])  # [B,C,K,M,N]
    return jax.nn.logsumexp(log_w + comp, axis=2)
