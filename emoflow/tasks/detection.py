"""Face detection level: RetinaFace's training loss and the pure train step.

Training on frames whose faces are known (SynthCrowd renders boxes and
landmarks) gives a working detector with no download. The loss is the public
multibox loss (github.com/biubug6/Pytorch_Retinaface: layers/modules/
multibox_loss.py, utils/box_utils.py), with static shapes: each image's
ground truth is padded to G faces with a `valid` mask.

- Matching: an anchor is positive if its IoU with a face is >= 0.35, and each
  face's best anchor is positive whatever its IoU, unless that IoU is below
  0.2 (the public code's floor: such a face claims no anchor). An anchor
  claimed as best by several faces goes to the last of them, as in the
  public loop.
- Classification: cross-entropy on the positives and on the hard negatives,
  the min(7 * positives, negatives) non-positive anchors of highest loss.
- Regression: smooth-L1 on the box offsets of the positives and on the
  landmark offsets of the positives whose face has landmarks; targets are
  `encode`, the inverse of `detect.decode`, with variances (0.1, 0.2).
- Total: 2 * box + classification (both over the positives of the batch) +
  landmarks (over the positives with landmarks), loc_weight 2 as in the
  public training config.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from emoflow.vision import detect, retinaface

VARIANCES = (0.1, 0.2)


def anchor_corners(anchors: jax.Array) -> jax.Array:
  """(cx, cy, w, h) [A, 4] -> (x0, y0, x1, y1) [A, 4]."""
  return jnp.concatenate([anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2], -1)


def encode(boxes: jax.Array, landmarks: jax.Array, anchors: jax.Array,
           variances: tuple[float, float] = VARIANCES) -> tuple[jax.Array, jax.Array]:
  """The inverse of detect.decode: boxes [..., A, 4] and landmarks [..., A, 5, 2] -> loc [..., A, 4], landm [..., A, 10].

  Boxes must have positive width and height (the size is a log ratio).
  """
  centre, size = anchors[:, :2], anchors[:, 2:]
  landm = (landmarks - centre[:, None]) / (variances[0] * size[:, None])
  return detect.encode_boxes(boxes, anchors, variances), landm.reshape(*landm.shape[:-2], 10)


def match(gt_boxes: jax.Array, gt_valid: jax.Array, anchors: jax.Array, threshold: float = 0.35,
          min_best_iou: float = 0.2) -> tuple[jax.Array, jax.Array]:
  """One image's anchors to its faces: (face index int32 [A], positive bool [A]).

  Args:
    gt_boxes: [G, 4] (x0, y0, x1, y1) pixels; padding rows are ignored.
    gt_valid: bool [G].
    anchors: [A, 4] (cx, cy, w, h) from detect.make_anchors.
  """
  num_gt, num_anchors = gt_valid.shape[0], anchors.shape[0]
  iou = jax.vmap(detect.box_iou, (0, None))(gt_boxes, anchor_corners(anchors))
  iou = jnp.where(gt_valid[:, None], iou, -1.0)  # [G, A]
  claims = ((iou.max(1) >= min_best_iou)[:, None]
            & (jnp.argmax(iou, 1)[:, None] == jnp.arange(num_anchors)))
  claimant = jnp.max(jnp.where(claims, jnp.arange(num_gt)[:, None], -1), 0)
  index = jnp.where(claimant >= 0, claimant, jnp.argmax(iou, 0)).astype(jnp.int32)
  return index, (claimant >= 0) | (iou.max(0) >= threshold)


def hard_negatives(conf_loss: jax.Array, positive: jax.Array, ratio: int = 7) -> jax.Array:
  """bool [A]: the min(ratio * #positives, #negatives) non-positive anchors of highest loss (earlier on ties)."""
  loss = jnp.where(positive, -jnp.inf, jax.lax.stop_gradient(conf_loss))
  rank = jnp.argsort(jnp.argsort(-loss, stable=True), stable=True)
  num_pos = jnp.sum(positive)
  return rank < jnp.minimum(ratio * num_pos, positive.shape[0] - num_pos)


def multibox_loss(loc: jax.Array, conf: jax.Array, landm: jax.Array, anchors: jax.Array,
                  batch: dict, *, threshold: float = 0.35, negpos_ratio: int = 7,
                  loc_weight: float = 2.0, variances: tuple[float, float] = VARIANCES) -> dict:
  """The public multibox loss of RetinaFace's outputs on a batch: {"loss", "loc", "conf", "landm", "positives"}.

  Args:
    loc, conf, landm: RetinaFace's outputs [B, A, 4], [B, A, 2], [B, A, 10].
    anchors: [A, 4] from detect.make_anchors of the input size.
    batch: "boxes" [B, G, 4] (x0, y0, x1, y1) pixels, "landmarks" [B, G, 5, 2],
      "valid" bool [B, G], and optionally "has_landmarks" bool [B, G] (default: valid).
  """
  index, positive = jax.vmap(match, (0, 0, None, None))(batch["boxes"], batch["valid"], anchors,
                                                         threshold)
  take = jax.vmap(lambda values, i: values[i])
  corners = anchor_corners(anchors)
  boxes = jnp.where(positive[..., None], take(batch["boxes"], index), corners)  # no log(0) off positives
  loc_t, landm_t = encode(boxes, take(batch["landmarks"], index), anchors, variances)
  with_landmarks = positive & take(batch.get("has_landmarks", batch["valid"]), index)

  logits = conf.astype(jnp.float32)
  conf_loss = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
      logits, positive[..., None].astype(jnp.int32), -1)[..., 0]
  negative = jax.vmap(functools.partial(hard_negatives, ratio=negpos_ratio))(conf_loss, positive)

  smooth_l1 = lambda x, y, mask: jnp.sum(optax.huber_loss(x.astype(jnp.float32), y) * mask[..., None])
  num_pos = jnp.maximum(jnp.sum(positive), 1)
  terms = {"loc": smooth_l1(loc, loc_t, positive) / num_pos,
           "conf": jnp.sum(conf_loss * (positive | negative)) / num_pos,
           "landm": smooth_l1(landm, landm_t, with_landmarks) / jnp.maximum(jnp.sum(with_landmarks), 1)}
  terms["loss"] = loc_weight * terms["loc"] + terms["conf"] + terms["landm"]
  terms["positives"] = jnp.mean(jnp.sum(positive, -1).astype(jnp.float32))
  return terms


def make_train_step(model: retinaface.RetinaFace, **loss_kwargs):
  """step(state, batch, rng) -> (state, {"loss", "loc", "conf", "landm", "positives"}), pure, for fit().

  batch: "image" uint8 RGB [B, H, W, 3] plus multibox_loss's ground truth in
  pixels of that image; BatchNorm runs in train mode and its statistics update.
  """
  def train_step(state, batch, rng):
    del rng  # RetinaFace has no dropout; augmentation happens in the loader
    images = retinaface.preprocess(batch["image"])
    anchors = jnp.asarray(detect.make_anchors(images.shape[1:3]))

    def loss_fn(params):
      (loc, conf, landm), updates = model.apply({"params": params, **state.model_state}, images,
                                                train=True, mutable=list(state.model_state))
      terms = multibox_loss(loc, conf, landm, anchors, batch, **loss_kwargs)
      return terms["loss"], (terms, updates)

    (_, (terms, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads, updates), terms

  return train_step
