"""RPN targets, loss and static-shape proposal generation (pure functions).

Shapes: B images, N anchors over all levels (flat index per level
(y * W + x) * A + a, levels concatenated P2..P6), G padded ground truths.
"""
import jax
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.models.losses import normalizer, sigmoid_bce, smooth_l1


def rpn_loss(keys, logits, deltas, anchors, inside, gt_boxes, gt_valid, *,
             pos_iou_thr, neg_iou_thr, min_pos_iou, num_samples,
             pos_fraction, loss_bbox_beta, sampler="random",
             axis_name=None):
  """Sampled-anchor RPN losses (mmdet RPNHead with MaxIoUAssigner and
  RandomSampler).

  Args:
    keys: [B] PRNG keys, one per image.
    logits: [B, N] objectness logits.
    deltas: [B, N, 4] predicted deltas.
    anchors: [N, 4] anchors.
    inside: [B, N] bool, anchors eligible for training.
    gt_boxes: [B, G, 4]; gt_valid: [B, G] bool.
    pos_iou_thr, neg_iou_thr, min_pos_iou: MaxIoUAssigner's thresholds.
    num_samples, pos_fraction: RandomSampler's anchors per image and
      positive share.
    sampler: ops.SAMPLERS rule ("random" is mmdet's).
    loss_bbox_beta: SmoothL1 beta (0 = L1).
    axis_name: the data-parallel axis of the loss normaliser, or None.
  Returns:
    dict(loss_rpn_cls, loss_rpn_bbox) float32 scalars.
  """
  anchors = jnp.asarray(anchors)

  def per_image(k, ins, gtb, gtv):
    label, gt_index, _ = ops.max_iou_assign(
        anchors, gtb, gtv, pos_iou_thr, neg_iou_thr, min_pos_iou, True, ins)
    idx, valid, is_pos, _ = ops.sample_boxes(k, label, num_samples,
                                             pos_fraction, sampler)
    return idx, valid, is_pos, gtb[gt_index[idx]]

  idx, valid, is_pos, target_boxes = jax.vmap(per_image)(
      keys, inside, gt_boxes, gt_valid)
  sel_logits = jnp.take_along_axis(logits, idx, axis=1)
  sel_deltas = jnp.take_along_axis(deltas, idx[..., None], axis=1)
  pos = (is_pos & valid)[..., None]
  # Non-positive rows may encode against padding (0/0): zero them before
  # the loss, or their NaN would leak into the gradient through `where`.
  targets = jnp.where(pos, ops.encode_deltas(anchors[idx], target_boxes), 0.)
  norm = normalizer(jnp.sum(valid), axis_name)
  cls = jnp.sum(sigmoid_bce(sel_logits, is_pos) * valid) / norm
  diff = jnp.where(pos, sel_deltas - targets, 0.0)
  reg = jnp.sum(smooth_l1(diff, loss_bbox_beta)) / norm
  return {"loss_rpn_cls": cls, "loss_rpn_bbox": reg}


def proposals(level_logits, level_deltas, level_anchors, image_hw, pre_nms,
              post_nms, nms_iou, delta_clamp="symmetric", min_size=0.0,
              level_valid=None, box_grad=False, box_grad_clip=0.0):
  """Per-level top-k, decode, clip, NMS within each level, top-k overall.

  Args:
    level_logits: list of [B, N_l] logits.
    level_deltas: list of [B, N_l, 4].
    level_anchors: list of [N_l, 4].
    image_hw: [B, 2] resized image sizes (for clipping).
    pre_nms: static per-level candidates; post_nms: static output count.
    nms_iou: NMS threshold.
    delta_clamp: see ops.decode_deltas.
    min_size: boxes narrower or lower than this are dropped before NMS
      (torchvision: 1e-3); 0 drops only empty boxes (mmdet >= 2.1x).
    level_valid: list of [B, N_l] bool, the anchors on each image's canvas
      (ops.valid_flags), or None (all): the others take part in nothing,
      as if the map ended at the canvas.
    box_grad: the boxes keep their gradient in level_deltas (MNC); which
      boxes are kept (top-k, NMS) is not differentiated either way.
    box_grad_clip: > 0 bounds each delta's gradient from the boxes to
      [-box_grad_clip, box_grad_clip] (the authors' MNC: 1 / 512).
  Returns:
    boxes [B, post_nms, 4] float32 (no gradient unless box_grad), valid
    [B, post_nms] bool, scores [B, post_nms] float32.
  """
  boxes, scores, levels, selected = [], [], [], []
  if level_valid is None:
    level_valid = [jnp.ones(lg.shape, bool) for lg in level_logits]
  for lvl, (lg, dl, an, lv) in enumerate(zip(level_logits, level_deltas,
                                             level_anchors, level_valid)):
    k = min(pre_nms, lg.shape[1])
    top, idx = jax.lax.top_k(jnp.where(lv, lg, -jnp.inf), k)
    selected.append(jnp.take_along_axis(lv, idx, axis=1))
    d = jnp.take_along_axis(dl, idx[..., None], axis=1)
    if box_grad:
      d = ops.clip_gradient(d, box_grad_clip)
    a = jnp.asarray(an)[idx]
    boxes.append(ops.decode_deltas(a, d, image_hw=image_hw,
                                   clamp=delta_clamp))
    scores.append(jax.nn.sigmoid(jnp.where(selected[-1], top, 0.0)))
    levels.append(jnp.full((k,), lvl, jnp.int32))
  decoded = jnp.concatenate(boxes, axis=1)
  boxes = jax.lax.stop_gradient(decoded)
  scores = jax.lax.stop_gradient(jnp.concatenate(scores, axis=1))
  levels = jnp.concatenate(levels)
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  nondegenerate = (w >= min_size) & (h >= min_size) if min_size > 0 else \
      (w > 0) & (h > 0)
  nondegenerate = nondegenerate & jnp.concatenate(selected, axis=1)

  def per_image(b, out, s, v):
    keep, num = ops.batched_nms(b, s, levels, nms_iou, post_nms, valid=v)
    safe = jnp.maximum(keep, 0)
    return out[safe], s[safe], jnp.arange(post_nms) < num

  out_boxes, out_scores, valid = jax.vmap(per_image)(
      boxes, decoded if box_grad else boxes, scores, nondegenerate)
  return out_boxes, valid, out_scores
