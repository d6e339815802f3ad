"""Group level: a group's faces -> positive / negative / neutral (paper Sec. 3.2, Table 5).

A group reaches this level as its faces' EmoNet embeddings [B, N, M] in N
slots with a mask. The fusion schemes of the paper's Table 5 are a registry:

- fea: score averaging (FeA) — per-face class scores averaged over the faces;
- feb: feature concatenation (FeB) — the faces' features concatenated, then an MLP;
- fec: NVPF (FeC) — S = the group's features as an M x N map, H = F(S), and
  the class log-likelihoods log p_S(S | c) = log p_H(H | c) + log|det dF/dS|
  (Eq. 7 with one prior per class).

Each fusion gives class scores whose softmax is the prediction (logits for
FeA/FeB, class log-likelihoods for FeC) and its loss; the pure train step,
the prediction every consumer calls and the evaluation are shared. Any of
them runs on cached EmoNet embeddings (inputs `embeddings`), or, wrapped in
`FineTuned`, on the faces' pixels (inputs `faces`) with EmoNet trained too.

Face features: every fusion sees each face's embedding L2-normalised and
scaled by sqrt(M), so every entry has unit mean square whatever EmoNet's
embedding scale: a unit Gaussian prior fits S from the start, and no fusion
learns from the embedding norm (which says more about the face's size and
blur than its emotion). Empty slots stay zero. The same function runs at
train and eval time (`face_features`).
"""

import dataclasses
import functools
from typing import Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from emoflow import chunking
from emoflow.labels import EMOTION_VALENCE, EMOTIONS, GROUP_EMOTIONS
from emoflow.models import NVPF, EmoNet, FeA, FeB, priors
from emoflow.tasks import individual
from emoflow.train import parallel


def face_features(embeddings: jax.Array, mask: jax.Array) -> jax.Array:
  """[B, N, M] embeddings -> sqrt(M) * x / ||x|| per face, zero in empty slots (module docstring)."""
  x = embeddings.astype(jnp.float32)
  norm2 = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  scale = jnp.sqrt(jnp.float32(x.shape[-1])) * jax.lax.rsqrt(jnp.maximum(norm2, 1e-12))
  return x * scale * mask[..., None]


def cross_entropy(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy of softmax(scores) against integer labels."""
  return individual.weighted_cross_entropy(scores, labels, jnp.ones(scores.shape[-1], jnp.float32))


class OnEmbeddings:
  """A fusion's inputs are cached EmoNet embeddings [B, N, M], batch key `embeddings`."""

  input_key = "embeddings"

  def features(self, variables, embeddings, mask) -> jax.Array:
    """The fusion's face features from its inputs: here `face_features`, nothing trained."""
    del variables
    return face_features(embeddings, mask)


@dataclasses.dataclass(frozen=True)
class HeadFusion(OnEmbeddings):
  """FeA / FeB: a Flax head (features [B, N, M], mask, train) -> logits; loss = cross-entropy."""

  head: nn.Module
  scheme: str  # Table 5's "fusion scheme" and "fusion stage" columns
  stage: str

  def init(self, rng, features, mask) -> dict:
    return self.head.init(rng, features, mask, train=False)

  def class_scores(self, variables, features, mask, *, train=False, rng=None):
    """(logits [B, C], the non-param collections: updated when training, else as given)."""
    if not train:
      rest = {k: v for k, v in variables.items() if k != "params"}
      return self.head.apply(variables, features, mask, train=False), rest
    return self.head.apply(variables, features, mask, train=True, rngs={"dropout": rng},
                           mutable=[k for k in variables if k != "params"])

  def loss(self, scores, labels, num_entries) -> dict:
    del num_entries
    return {"loss": cross_entropy(scores, labels)}


# Groups per NVPF call on CPU (emoflow.chunking; unrolled, one copy of the flow per chunk).
# Training the paper's flow at batch 64 on 2 cores, measured in one run against one call
# (9.7 groups/s): chunks of 16 17.7 (compile 13 s), 8 18.9 (25 s), 4 19.8 (57 s); with freed
# memory kept (emoflow.host_memory), chunks of 8 23.9 against 11.4 (benchmarks/vs_pytorch.py).
CPU_FLOW_CHUNK = 8


@dataclasses.dataclass(frozen=True)
class FlowFusion(OnEmbeddings):
  """FeC: NVPF + a prior by name; scores = class log-likelihoods log p_S(S | c) (Eq. 7).

  Params are {"flow": NVPF params, "prior": prior params} in one pytree (a
  fixed prior stops its own gradient). Loss = nll_weight * NLL + ce_weight * CE:
  - NLL: Eq. 7 for the true class, -log p_S(S | y), averaged over the batch
    and divided by the batch's mean number of valid entries M * n (faces n),
    i.e. nats per entry, so its size does not grow with M or the group size;
  - CE: cross-entropy of softmax over the class log-likelihoods, which pushes
    the wrong classes' likelihoods down as well (ce_weight 0 gives the paper's
    Eq. 7 alone; nll_weight 0 a plain discriminative flow).
  IB-INN's beta (Ardizzone et al. 2020) is ce_weight / nll_weight.
  """

  flow: NVPF
  prior: object  # an emoflow.models.priors prior
  ce_weight: float
  nll_weight: float = 1.0
  scheme: str = "NVPF (FeC)"
  stage: str = "feature"

  def init(self, rng, features, mask) -> dict:
    flow_rng, prior_rng = jax.random.split(rng)
    s = jnp.swapaxes(features, 1, 2)
    variables = dict(self.flow.init(flow_rng, s, mask))
    flow_params = variables.pop("params")
    prior_params = self.prior.init(prior_rng, num_features=features.shape[-1])
    return {"params": {"flow": flow_params, "prior": prior_params}, **variables}

  def class_scores(self, variables, features, mask, *, train=False, rng=None):
    """(class log-likelihoods [B, C], the non-param collections, unchanged).

    Chunks unrolled when training (their gradient runs faster so), one `lax.map` otherwise:
    unrolled, the 32 chunks of an evaluation batch of 256 took 3 minutes to compile.
    """
    del rng  # the flow has neither dropout nor batch statistics
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    flow_fn = functools.partial(self.flow.apply, {"params": params["flow"], **rest})
    h, logdet = chunking.in_chunks(flow_fn, jnp.swapaxes(features, 1, 2), mask,
                                   chunk=chunking.on_cpu(CPU_FLOW_CHUNK), unroll=train)
    return class_log_likelihoods(self.prior, params["prior"], h, logdet, mask), rest

  def loss(self, scores, labels, num_entries) -> dict:
    true = jnp.take_along_axis(scores, labels[:, None], axis=-1)[:, 0]
    nll = -jnp.mean(true) / jnp.maximum(jnp.mean(num_entries), 1.0)
    ce = cross_entropy(scores, labels)
    return {"loss": self.nll_weight * nll + self.ce_weight * ce, "nll_per_entry": nll,
            "cross_entropy": ce}


def _part(variables: dict, name: str) -> dict:
  """The `name` entry of every collection of `variables` that has one."""
  return {col: v[name] for col, v in variables.items() if name in v}


def _nest(**parts: dict) -> dict:
  """Variables of several models -> one variables dict: collection -> {model name: ...}."""
  cols = {col for variables in parts.values() for col in variables}
  return {col: {name: v[col] for name, v in parts.items() if col in v} for col in sorted(cols)}


@dataclasses.dataclass(frozen=True)
class FineTuned:
  """A fusion trained end to end with EmoNet, on the faces' pixels [B, N, 112, 112, 3] uint8.

  EmoNet embeds every slot's face and `fusion` runs on those embeddings as on
  cached ones (face_features), but the gradient reaches EmoNet's weights too.
  EmoNet keeps its BatchNorm statistics (inference mode): empty slots must not
  enter them, and a batch holds few groups' faces. Variables hold both models,
  each collection as {"emonet": ..., "fusion": ...}; `with_emonet` puts a
  trained EmoNet's variables in.
  """

  fusion: HeadFusion | FlowFusion
  emonet: EmoNet
  input_key = "faces"

  @property
  def scheme(self) -> str:
    return self.fusion.scheme

  @property
  def stage(self) -> str:
    return self.fusion.stage

  def init(self, rng, faces, mask) -> dict:
    emonet_rng, fusion_rng = jax.random.split(rng)
    emonet = self.emonet.init(emonet_rng, jnp.zeros((1, *faces.shape[2:]), jnp.float32))
    embeddings = jnp.zeros((*mask.shape, self.emonet.embed_dim), jnp.float32)
    return _nest(emonet=emonet, fusion=self.fusion.init(fusion_rng, embeddings, mask))

  @staticmethod
  def with_emonet(variables: dict, emonet_variables: dict) -> dict:
    """`variables` with EmoNet's part replaced by a trained EmoNet's variables."""
    return _nest(emonet=emonet_variables, fusion=_part(variables, "fusion"))

  def features(self, variables, faces, mask) -> jax.Array:
    """EmoNet's embeddings of the slots' faces, as face_features [B, N, M]."""
    flat = individual.normalize_faces(faces.reshape(-1, *faces.shape[2:]))
    _, embeddings = self.emonet.apply(_part(variables, "emonet"), flat, train=False)
    return face_features(embeddings.reshape(*mask.shape, -1), mask)

  def class_scores(self, variables, features, mask, *, train=False, rng=None):
    """The fusion's (class scores, its non-param collections) with EmoNet's collections kept."""
    scores, updates = self.fusion.class_scores(_part(variables, "fusion"), features, mask,
                                               train=train, rng=rng)
    rest = {col: v for col, v in variables.items() if col != "params"}
    return scores, _nest(emonet=_part(rest, "emonet"), fusion=updates)

  def loss(self, scores, labels, num_entries) -> dict:
    return self.fusion.loss(scores, labels, num_entries)


# An emotion class index -> its group class index (labels.EMOTION_VALENCE), as a [8, 3] 0/1 matrix.
VALENCE_MATRIX = np.eye(len(GROUP_EMOTIONS), dtype=np.float32)[
    [GROUP_EMOTIONS.index(EMOTION_VALENCE[e]) for e in EMOTIONS]]


@dataclasses.dataclass(frozen=True)
class ValenceAverage:
  """FeA with nothing trained: each face's emotion probabilities summed per group class
  (labels.EMOTION_VALENCE), averaged over the group's faces.

  What a face-emotion model can say of a group without a trained group stage
  (the starter model, emoflow.starter). Its inputs are the faces' emotion
  probabilities [B, N, 8], batch key `probs`; it has no variables and no
  loss, so it predicts but does not train (not in `known()`).
  """

  input_key = "probs"
  scheme: str = "valence averaging (FeA, untrained)"
  stage: str = "score"

  def features(self, variables, probs, mask) -> jax.Array:
    """[B, N, 3]: each face's probability of each group class, zero in empty slots."""
    del variables
    return (probs.astype(jnp.float32) @ jnp.asarray(VALENCE_MATRIX)) * mask[..., None]

  def class_scores(self, variables, features, mask, *, train=False, rng=None):
    """(log of the mean over valid faces [B, 3], {}); a group with no face gets uniform scores."""
    del variables, train, rng
    count = mask.sum(axis=1, keepdims=True)
    mean = jnp.where(count > 0, features.sum(axis=1) / jnp.maximum(count, 1),
                     1.0 / features.shape[-1])
    return jnp.log(jnp.maximum(mean, 1e-30)), {}


VALENCE = "valence"  # model.json's group fusion name for ValenceAverage


def class_log_likelihoods(prior, prior_params, h, logdet, mask) -> jax.Array:
  """log p_S(S | c) = log p_H(H | c) + log|det dF/dS| (Eq. 7), [B, C]."""
  return prior.log_prob(prior_params, h, mask) + logdet[:, None]


def make_prior(model_config, name: str | None = None):
  """The prior a model config names (or `name`, with the config's other prior keys): its
  separation, geometry, scaling and fixed params from keys prior_*; a key a config lacks (one
  that predates it) keeps priors.Prior's default, as printed."""
  c = model_config
  options = {arg: c[f"prior_{arg}"] for arg in ("separation", "geometry", "scaling")
             if f"prior_{arg}" in c}
  fixed = tuple(p.strip() for p in c.get("prior_fixed", "").split(",") if p.strip())
  return priors.make(name or c.prior, num_classes=c.num_classes, fixed=fixed, **options)


_FUSIONS = {
    "fea": lambda c: HeadFusion(FeA(num_classes=c.num_classes), "averaging (FeA)", "score"),
    "feb": lambda c: HeadFusion(FeB(num_classes=c.num_classes, hidden=c.feb_hidden),
                                "concatenation (FeB)", "feature"),
    "fec": lambda c: FlowFusion(NVPF(num_units=c.flow_units, width=c.flow_width), make_prior(c),
                                c.ce_weight, c.get("nll_weight", 1.0)),
}


def known() -> tuple[str, ...]:
  return tuple(sorted(_FUSIONS))


def make_fusion(model_config):
  """The fusion `model_config.fusion` names, built from the model config (or the untrained
  `valence` average); one-line error if unknown."""
  if model_config.fusion == VALENCE:
    return ValenceAverage()
  if model_config.fusion not in _FUSIONS:
    raise ValueError(f"model.fusion {model_config.fusion!r} unknown; known: {', '.join(known())}")
  return _FUSIONS[model_config.fusion](model_config)


def predict(fusion, variables, inputs: jax.Array, mask: jax.Array) -> jax.Array:
  """Group emotion probabilities [B, C] from the fusion's inputs (`fusion.input_key`): softmax of
  its class scores."""
  scores, _ = fusion.class_scores(variables, fusion.features(variables, inputs, mask), mask)
  return jax.nn.softmax(scores)


def make_train_step(fusion) -> Callable:
  """step(state, batch, rng) -> (state, {"loss", "accuracy", loss terms}), pure, for fit()."""
  def train_step(state, batch, rng):
    mask, labels = batch["mask"], batch["label"]

    def loss_fn(params):
      variables = {"params": params, **state.model_state}
      features = fusion.features(variables, batch[fusion.input_key], mask)
      num_entries = features.shape[-1] * jnp.sum(mask, axis=-1)
      scores, updates = fusion.class_scores(variables, features, mask, train=True, rng=rng)
      terms = fusion.loss(scores, labels, num_entries)
      return terms["loss"], (scores, terms, updates)

    (_, (scores, terms, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = jnp.mean(jnp.argmax(scores, -1) == labels)
    return state.apply_gradients(grads, updates), {**terms, "accuracy": accuracy}

  return train_step


def true_emotion_majority(face_emotions: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """[B] the group class most of a group's slotted faces show by their true emotion
  (emoflow.labels.EMOTION_VALENCE; ties to the earlier class of GROUP_EMOTIONS), -1 where a
  face's emotion is unknown or the group has none: what a perfect EmoNet would allow a
  fusion (the ceiling row of Table 5)."""
  valence = np.array([GROUP_EMOTIONS.index(EMOTION_VALENCE[e]) for e in EMOTIONS])
  known = (face_emotions >= 0) | ~mask
  votes = np.where(mask, valence[np.clip(face_emotions, 0, None)], -1)
  counts = np.stack([np.sum(votes == c, -1) for c in range(len(GROUP_EMOTIONS))], -1)
  return np.where(known.all(-1) & mask.any(-1), np.argmax(counts, -1), -1)


def make_evaluate(fusion, batches: Callable[[], Iterable[dict]], mesh,
                  class_names=GROUP_EMOTIONS) -> Callable:
  """evaluate(state) -> mAC, UAR, F1, acc/<class> and the confusion matrix (paper Table 5),
  and per group its label, whether it was right and its number of faces ("examples/label",
  "examples/correct", "examples/faces": for paired intervals, overall and by group size);
  where every face's true emotion is known, the same under "ceiling/" for
  `true_emotion_majority`.

  `batches()` yields fixed-size batches of the fusion's inputs with a boolean "valid"
  (padding) mask.
  """
  def eval_step(state, batch):
    probs = predict(fusion, state.variables, batch[fusion.input_key], batch["mask"])
    out = {"prediction": jnp.argmax(probs, -1), "label": batch["label"], "valid": batch["valid"],
           "mask": batch["mask"]}
    return {**out, "face_emotions": batch["face_emotions"]} if "face_emotions" in batch else out

  eval_step = parallel.jit_eval_step(eval_step, mesh)

  def evaluate(state) -> dict:
    out = parallel.gather_valid(eval_step, state, batches(), mesh)
    report = individual.evaluation_report(out["label"], out["prediction"], np.zeros(0), (),
                                          class_names)
    results = {**report, "examples/label": out["label"],
               "examples/correct": out["prediction"] == out["label"],
               "examples/faces": out["mask"].sum(-1)}
    ceiling = true_emotion_majority(out.get("face_emotions", np.full_like(out["mask"], -1, int)),
                                    out["mask"])
    if tuple(class_names) == GROUP_EMOTIONS and np.all(ceiling >= 0):
      ceiling_report = individual.evaluation_report(out["label"], ceiling, np.zeros(0), (),
                                                    class_names)
      results.update({f"ceiling/{k}": v for k, v in ceiling_report.items()})
      results["examples/ceiling/correct"] = ceiling == out["label"]
    return results

  return evaluate
