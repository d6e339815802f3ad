"""Video level: a clip's frames of groups of faces -> each frame's and the video's emotion.

The paper's temporal fusion (Sec. 3.3, Eq. 8, Table 7): a clip reaches this
level as its faces' EmoNet embeddings [B, T, G, N, M] with face, group and
frame masks, and a `TNVPF` (cell "tnvpf", or the FeC + RNN / LSTM baselines)
gives per-frame logits.

Loss (Eq. 8): the frame cross-entropy summed over a clip's valid, labelled
frames, averaged over the clips; plus, if `nll_weight` > 0, the frame-level
NVPF's NLL of the true frame class under a prior per class (as Eq. 7 one
level up: log p(S_t | c) = log p_H(H_t | c) + log|det dF_G/dS_t|), in nats
per valid entry of S_t. The video prediction is reported two ways: the
frame logits at the clip's last valid frame ("last", what the recurrence
was built for) and the mean of the frame probabilities over its valid frames
("mean").
"""

import dataclasses
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from emoflow.labels import GROUP_EMOTIONS
from emoflow.models import TNVPF
from emoflow.tasks import group, individual
from emoflow.tasks.group import face_features
from emoflow.train import parallel

VIDEO_READOUTS = ("last", "mean")


@dataclasses.dataclass(frozen=True)
class TemporalFusion:
  """A TNVPF plus the prior of its frame-level NLL term; params {"tnvpf", "frame_prior"}.

  `train_group_flow` False holds the group flow (say, a trained FeC's) as it is: no gradient
  reaches it, so its backward pass is never computed (`frozen` names it for the optimizer).
  """

  model: TNVPF
  prior: object  # an emoflow.models.priors prior over frame classes
  nll_weight: float
  train_group_flow: bool = True

  def frozen(self, params) -> dict:
    """A tree of bools like `params`: True on what the optimizer must leave unchanged."""
    def held(path, _) -> bool:
      keys = tuple(getattr(k, "key", None) for k in path[:2])
      return not self.train_group_flow and keys == ("tnvpf", "group_flow")
    return jax.tree_util.tree_map_with_path(held, params)

  def init(self, rng, embeddings, face_mask, group_mask, frame_mask) -> dict:
    model_rng, prior_rng = jax.random.split(rng)
    params = self.model.init(model_rng, embeddings, face_mask, group_mask, frame_mask)["params"]
    return {"params": {"tnvpf": params, "frame_prior": self.prior.init(
        prior_rng, num_features=embeddings.shape[-1])}}

  def apply(self, variables, embeddings, face_mask, group_mask, frame_mask) -> dict:
    """The TNVPF outputs of a clip batch, its faces normalised as at the group level."""
    features = face_features(embeddings, face_mask)
    params = variables["params"]["tnvpf"]
    if not self.train_group_flow:
      params = {**params, "group_flow": jax.lax.stop_gradient(params["group_flow"])}
    return self.model.apply({"params": params}, features, face_mask, group_mask, frame_mask)

  def frame_log_likelihoods(self, variables, out: dict) -> jax.Array:
    """log p(S_t | c) of every frame [B, T, C]: the prior of H_t plus the frame flow's log-det."""
    b, t, m, g = out["frame_h"].shape
    logp = self.prior.log_prob(variables["params"]["frame_prior"], out["frame_h"].reshape(-1, m, g),
                               out["group_valid"].reshape(-1, g))
    return logp.reshape(b, t, -1) + out["frame_logdet"][..., None]


def make_fusion(model_config) -> TemporalFusion:
  """The TemporalFusion a config's `model` block describes (keys of tnvpf_synthcrowd)."""
  m = model_config
  model = TNVPF(cell=m.cell, hidden=m.hidden, num_classes=m.num_classes,
                group_units=m.group_units, group_width=m.group_width,
                frame_units=m.frame_units, frame_width=m.frame_width,
                group_pooling=m.group_pooling, frame_readout=m.get("frame_readout", "flatten"))
  return TemporalFusion(model, group.make_prior(m), m.nll_weight,
                        m.get("train_group_flow", True))


def labelled_frames(batch: dict) -> jax.Array:
  """[B, T] True for the valid frames whose label is known."""
  return batch["frame_mask"] & (batch["frame_labels"] >= 0)


def _inputs(batch: dict) -> tuple:
  return batch["embeddings"], batch["face_mask"], batch["group_mask"], batch["frame_mask"]


def losses(fusion: TemporalFusion, variables, batch: dict) -> dict:
  """{"loss", "frame_cross_entropy" (Eq. 8), "frame_nll_per_entry", "frame_accuracy"}."""
  out = fusion.apply(variables, *_inputs(batch))
  labelled = labelled_frames(batch)
  labels = jnp.maximum(batch["frame_labels"], 0)
  log_probs = jax.nn.log_softmax(out["frame_logits"].astype(jnp.float32))
  ce = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
  ce = jnp.sum(jnp.where(labelled, ce, 0)) / ce.shape[0]
  num_frames = jnp.maximum(jnp.sum(labelled), 1)
  accuracy = jnp.sum(labelled & (jnp.argmax(log_probs, -1) == labels)) / num_frames
  terms = {"frame_cross_entropy": ce, "frame_accuracy": accuracy}
  if fusion.nll_weight:
    true = jnp.take_along_axis(fusion.frame_log_likelihoods(variables, out), labels[..., None],
                               axis=-1)[..., 0]
    entries = out["frame_h"].shape[2] * jnp.sum(out["group_valid"] & labelled[..., None])
    terms["frame_nll_per_entry"] = -jnp.sum(jnp.where(labelled, true, 0)) / jnp.maximum(entries, 1)
    ce = ce + fusion.nll_weight * terms["frame_nll_per_entry"]
  return {"loss": ce, **terms}


def predict(fusion: TemporalFusion, variables, embeddings, face_mask, group_mask,
            frame_mask) -> dict:
  """Probabilities: "frame" [B, T, C] and the video's [B, C] by "last" and by "mean"."""
  out = fusion.apply(variables, embeddings, face_mask, group_mask, frame_mask)
  frame = jax.nn.softmax(out["frame_logits"].astype(jnp.float32))
  weights = frame_mask.astype(jnp.float32)[..., None]
  mean = jnp.sum(frame * weights, 1) / jnp.maximum(jnp.sum(weights, 1), 1)
  return {"frame": frame, "last": jax.nn.softmax(out["last"].astype(jnp.float32)), "mean": mean}


def make_train_step(fusion: TemporalFusion) -> Callable:
  """step(state, batch, rng) -> (state, losses), pure, for fit(); the model has no dropout."""
  def train_step(state, batch, rng):
    del rng

    def loss_fn(params):
      terms = losses(fusion, {"params": params, **state.model_state}, batch)
      return terms["loss"], terms

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads, state.model_state), terms

  return train_step


def make_evaluate(fusion: TemporalFusion, batches: Callable[[], Iterable[dict]], mesh,
                  class_names=GROUP_EMOTIONS) -> Callable:
  """evaluate(state) -> the video-level report by "last" (mAC, UAR, F1, acc/<class>,
  confusion_matrix), the same under "mean/" and over the labelled frames under "frame/"; per
  clip its label, whether each readout was right and its frames right and labelled
  ("examples/...", for paired intervals)."""
  def eval_step(state, batch):
    probs = predict(fusion, state.variables, *_inputs(batch))
    return {"last": jnp.argmax(probs["last"], -1), "mean": jnp.argmax(probs["mean"], -1),
            "frame": jnp.argmax(probs["frame"], -1), "frame_label": batch["frame_labels"],
            "labelled": labelled_frames(batch), "label": batch["label"], "valid": batch["valid"]}

  eval_step = parallel.jit_eval_step(eval_step, mesh)

  def report(labels, predictions) -> dict:
    return individual.evaluation_report(labels, predictions, np.zeros(0), (), class_names)

  def evaluate(state) -> dict:
    out = parallel.gather_valid(eval_step, state, batches(), mesh)
    results = report(out["label"], out["last"])
    results.update({f"mean/{k}": v for k, v in report(out["label"], out["mean"]).items()})
    labelled = out["labelled"]
    frames = report(out["frame_label"][labelled], out["frame"][labelled])
    results.update({f"frame/{k}": v for k, v in frames.items()})
    results.update({
        "examples/label": out["label"], "examples/correct": out["last"] == out["label"],
        "examples/mean/correct": out["mean"] == out["label"],
        "examples/frame/correct": np.sum(labelled & (out["frame"] == out["frame_label"]), 1),
        "examples/frame/total": np.sum(labelled, 1)})
    return results

  return evaluate
