"""Group proposal level: the RPN's training loss (Faster R-CNN's) and the pure train step.

Per image, with static shapes (ground truth padded to G groups with a `valid` mask):
- Labelling: an anchor is positive when its IoU with a group box is >= 0.7,
  negative when its best IoU is < 0.3, ignored in between; each group's
  best anchors (every anchor tying its highest IoU, if above 0) are positive
  whatever the IoU, so every group is someone's target. A positive regresses
  to the group it overlaps most.
- Sampling: 256 anchors per image, up to half of them positive; positives
  and negatives are drawn uniformly without replacement (from the step's rng).
- Loss: cross-entropy of the 2 logits over the sampled anchors plus
  box_weight x smooth-L1 (beta 1/9) of the positives' offsets
  (detect.encode_boxes, variances 1), both divided by the number of sampled
  anchors in the batch, as torchvision's RPN does.
"""

import jax
import jax.numpy as jnp
import optax

from emoflow.tasks.detection import anchor_corners
from emoflow.vision import detect, rpn


def label_anchors(gt_boxes: jax.Array, gt_valid: jax.Array, anchors: jax.Array,
                  positive_iou: float = 0.7, negative_iou: float = 0.3) -> tuple[jax.Array, jax.Array]:
  """One image's anchors: (group index int32 [A], label int32 [A]: 1 positive, 0 negative, -1 ignored).

  Args:
    gt_boxes: [G, 4] (x0, y0, x1, y1) pixels; padding rows are ignored.
    gt_valid: bool [G].
    anchors: [A, 4] (cx, cy, w, h) from rpn.make_anchors.
  """
  iou = jax.vmap(detect.box_iou, (0, None))(gt_boxes, anchor_corners(anchors))
  iou = jnp.where(gt_valid[:, None], iou, -1.0)  # [G, A]
  best_of_group = iou.max(1, keepdims=True)
  is_best = jnp.any((iou == best_of_group) & (best_of_group > 0) & gt_valid[:, None], 0)
  best_iou = iou.max(0)
  label = jnp.where(best_iou >= positive_iou, 1, jnp.where(best_iou < negative_iou, 0, -1))
  return jnp.argmax(iou, 0).astype(jnp.int32), jnp.where(is_best, 1, label).astype(jnp.int32)


def _first_k(chosen: jax.Array, priority: jax.Array, k: jax.Array) -> jax.Array:
  """bool: the k elements of `chosen` with the lowest priority."""
  rank = jnp.argsort(jnp.argsort(jnp.where(chosen, priority, jnp.inf), stable=True), stable=True)
  return chosen & (rank < k)


def sample_anchors(label: jax.Array, rng: jax.Array, per_image: int = 256,
                   positive_fraction: float = 0.5) -> tuple[jax.Array, jax.Array]:
  """(positive, negative) bool [A]: min(#positives, fraction * per_image) positives, negatives to fill."""
  priority = jax.random.uniform(rng, label.shape)
  positive, negative = label == 1, label == 0
  num_positive = jnp.minimum(positive.sum(), int(per_image * positive_fraction))
  num_negative = jnp.minimum(negative.sum(), per_image - num_positive)
  return _first_k(positive, priority, num_positive), _first_k(negative, priority, num_negative)


def rpn_loss(logits: jax.Array, offsets: jax.Array, anchors: jax.Array, gt_boxes: jax.Array,
             gt_valid: jax.Array, rng: jax.Array, *, per_image: int = 256,
             positive_fraction: float = 0.5, positive_iou: float = 0.7,
             negative_iou: float = 0.3, box_weight: float = 1.0, beta: float = 1 / 9) -> dict:
  """The RPN loss of a batch (module docstring): {"loss", "cls", "box", "positives", "accuracy"}.

  Args:
    logits, offsets: RPN outputs [B, A, 2], [B, A, 4].
    anchors: [A, 4] from rpn.make_anchors of the input size.
    gt_boxes: [B, G, 4] group boxes in input pixels; gt_valid: bool [B, G].
  """
  index, label = jax.vmap(label_anchors, (0, 0, None, None, None))(
      gt_boxes, gt_valid, anchors, positive_iou, negative_iou)
  rngs = jax.random.split(rng, label.shape[0])
  positive, negative = jax.vmap(sample_anchors, (0, 0, None, None))(
      label, rngs, per_image, positive_fraction)
  sampled = positive | negative
  num_sampled = jnp.maximum(sampled.sum(), 1)

  target_class = positive.astype(jnp.int32)
  cls = optax.softmax_cross_entropy_with_integer_labels(logits, target_class)
  targets = jnp.take_along_axis(gt_boxes, index[..., None], 1)
  targets = jnp.where(positive[..., None], targets, anchor_corners(anchors))  # no log(0) elsewhere
  encoded = detect.encode_boxes(targets, anchors)
  box = jnp.sum(optax.huber_loss(offsets, encoded, delta=beta) / beta * positive[..., None])
  correct = (jnp.argmax(logits, -1) == target_class) & sampled
  terms = {"cls": jnp.sum(cls * sampled) / num_sampled, "box": box / num_sampled,
           "positives": jnp.mean(positive.sum(-1).astype(jnp.float32)),
           "accuracy": correct.sum() / num_sampled}
  terms["loss"] = terms["cls"] + box_weight * terms["box"]
  return terms


def make_train_step(model: rpn.RPN, *, scales, ratios, **loss_kwargs):
  """step(state, batch, rng) -> (state, rpn_loss terms), pure, for fit().

  batch: "image" uint8 RGB [B, H, W, 3], "group_boxes" [B, G, 4] in pixels
  of that image, "group_valid" bool [B, G]; BatchNorm runs in train mode.
  """
  def train_step(state, batch, rng):
    images = rpn.preprocess(batch["image"])
    anchors = jnp.asarray(rpn.make_anchors(images.shape[1:3], scales, ratios))

    def loss_fn(params):
      (logits, offsets), updates = model.apply({"params": params, **state.model_state}, images,
                                               train=True, mutable=list(state.model_state))
      terms = rpn_loss(logits, offsets, anchors, batch["group_boxes"], batch["group_valid"], rng,
                       **loss_kwargs)
      return terms["loss"], (terms, updates)

    (_, (terms, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads, updates), terms

  return train_step
