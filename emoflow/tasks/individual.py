"""Individual level: one face -> one of the 8 emotions (EmoNet on aligned faces).

Supplies fit() with the loss (class-weighted cross-entropy, since AffectNet is
imbalanced), the pure train step, the prediction every consumer calls, and
the evaluation with the paper's metrics plus accuracy per face-size bucket.
"""

from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from emoflow import chunking, metrics
from emoflow.labels import EMOTIONS
from emoflow.train import parallel


def normalize_faces(images: jax.Array) -> jax.Array:
  """uint8 RGB [0, 255] -> float32 [-1, 1], the range EmoNet takes."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def _at_least_float32(x: jax.Array) -> jax.Array:
  """bfloat16/float16 logits go up to float32 for the softmax; float64 stays float64."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """w_c = N / (C * n_c), so every class contributes equally; absent classes get 0."""
  counts = np.bincount(np.asarray(labels).ravel(), minlength=num_classes).astype(np.float64)
  weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
  return weights.astype(np.float32)


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, class_weights: jax.Array,
                           mask: jax.Array | None = None) -> jax.Array:
  """sum_i w[y_i] * CE_i / sum_i w[y_i] (PyTorch's weighted mean), over unmasked i."""
  log_probs = jax.nn.log_softmax(_at_least_float32(logits))
  nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  w = class_weights[labels]
  if mask is not None:
    w = w * mask
  return jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), 1e-12)


# Faces per EmoNet call at inference on CPU (emoflow.chunking): measured on 2 cores with freed
# memory kept (emoflow.host_memory), batch 32 from ~790 to ~880 faces/s, batch 256 from ~640 to ~900.
CPU_CHUNK = 8


def infer(model, variables, images: jax.Array,
          chunk: int | None = None) -> tuple[jax.Array, jax.Array]:
  """EmoNet's (logits [B, 8], embeddings [B, M]) of uint8 aligned faces, in inference mode.

  `chunk`: faces per EmoNet call inside the batch (default: CPU_CHUNK on CPU, all elsewhere;
  see emoflow.chunking).
  """
  def apply(chunk_images):
    return model.apply(variables, normalize_faces(chunk_images), train=False)

  chunk = chunking.on_cpu(CPU_CHUNK) if chunk is None else chunk
  return chunking.in_chunks(apply, images, chunk=chunk)


def predict(model, variables, images: jax.Array,
            chunk: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Emotion probabilities [B, 8] and embeddings [B, M] of uint8 aligned faces (`infer`'s)."""
  logits, embedding = infer(model, variables, images, chunk)
  return jax.nn.softmax(_at_least_float32(logits)), embedding


def make_train_step(model, class_weights: np.ndarray):
  """step(state, batch, rng) -> (state, {"loss", "accuracy"}), pure, for fit()."""
  class_weights = jnp.asarray(class_weights, jnp.float32)

  def train_step(state, batch, rng):
    del rng  # EmoNet has no dropout; augmentation happens in the loader
    images, labels = normalize_faces(batch["image"]), batch["label"]

    def loss_fn(params):
      (logits, _), updates = model.apply({"params": params, **state.model_state}, images,
                                         train=True, mutable=list(state.model_state))
      return weighted_cross_entropy(logits, labels, class_weights), (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return state.apply_gradients(grads, updates), {"loss": loss, "accuracy": accuracy}

  return train_step


def make_evaluate(model, batches: Callable[[], Iterable[dict]], mesh,
                  size_buckets: tuple[tuple[int, int], ...] = (), class_names=EMOTIONS):
  """evaluate(state) -> paper metrics, per-class accuracy and accuracy per face-size bucket.

  `batches()` yields fixed-size batches with a boolean "valid" (padding) mask.
  """
  def eval_step(state, batch):
    probs, _ = predict(model, state.variables, batch["image"])
    return {"prediction": jnp.argmax(probs, -1), "label": batch["label"],
            "face_px": batch["face_px"], "valid": batch["valid"]}

  eval_step = parallel.jit_eval_step(eval_step, mesh)

  def evaluate(state) -> dict:
    out = parallel.gather_valid(eval_step, state, batches(), mesh)
    return evaluation_report(out["label"], out["prediction"], out["face_px"], size_buckets,
                             class_names)

  return evaluate


def evaluation_report(labels, predictions, face_px, size_buckets, class_names=EMOTIONS) -> dict:
  """mAC, UAR, F1, acc/<class>, acc@<lo>-<hi>px (with n@...), and the confusion matrix."""
  report = metrics.classification_report(labels, predictions, len(class_names))
  out = {k: report[k] for k in ("mAC", "UAR", "F1", "confusion_matrix")}
  for name, acc in zip(class_names, report["per_class_accuracy"]):
    out[f"acc/{name}"] = acc
  for low, high in size_buckets:
    inside = (face_px >= low) & (face_px < high)
    key = f"{low}-{high - 1}px"
    out[f"acc@{key}"] = float(np.mean(labels[inside] == predictions[inside])) if inside.any() else float("nan")
    out[f"n@{key}"] = int(inside.sum())
  return out
