"""MaxIoUAssigner with padded ground truth (mmdetection semantics)."""
import jax.numpy as jnp

from scnet_jax.ops.boxes import _pairwise_iou

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1


def max_iou_assign(boxes, gt_boxes, gt_valid, pos_iou_thr, neg_iou_thr,
                   min_pos_iou, match_low_quality=True, box_valid=None):
  """Assigns each box to a ground-truth box or to background.

  mmdet 3.3 `MaxIoUAssigner.assign_wrt_overlaps` (gt_max_assign_all=True,
  ignore_iof_thr=-1) run on the valid boxes only, as mmdet's callers pass
  it only those (AnchorHead: `flat_anchors[inside_flags]`; R-CNN: the
  image's own proposals). Invalid boxes and padding gts take part in no
  max, argmax or tie below:
    * no valid gt: every box is negative;
    * negative if 0 <= max IoU < neg_iou_thr;
    * positive (argmax gt, first on ties) if max IoU >= pos_iou_thr;
    * low-quality: for each gt i whose best IoU over the valid boxes is
      >= min_pos_iou, every valid box with exactly that IoU goes to gt i,
      later gts overriding earlier ones. A gt whose best valid IoU is
      below min_pos_iou (or that has no valid box) gets none; with
      min_pos_iou=0 a gt overlapping no valid box takes every valid box
      of IoU 0 with it, as mmdet does.

  Args:
    boxes: [N, 4] candidate boxes (anchors or proposals).
    gt_boxes: [G, 4] padded ground-truth boxes.
    gt_valid: [G] bool; padding rows never match.
    pos_iou_thr, neg_iou_thr, min_pos_iou: floats.
    match_low_quality: bool (static).
    box_valid: optional [N] bool; invalid boxes (anchors outside the
      allowed border, padded proposals) are IGNORE and are excluded from
      every gt's best IoU, as if absent.
  Returns:
    label: [N] int32, POSITIVE (1), NEGATIVE (0) or IGNORE (-1).
    gt_index: [N] int32 index into gt_boxes (meaningful where positive).
    max_iou: [N] float32 best IoU with a valid gt (0 if none, and for
      invalid boxes).
  """
  iou = _pairwise_iou(gt_boxes, boxes)  # [G, N]
  pair_valid = gt_valid[:, None]
  if box_valid is not None:
    pair_valid = pair_valid & box_valid[None, :]
  iou = jnp.where(pair_valid, iou, -1.0)
  max_iou = jnp.maximum(jnp.max(iou, axis=0, initial=-1.0), 0.0)
  gt_index = jnp.argmax(iou, axis=0).astype(jnp.int32) if iou.shape[0] else \
      jnp.zeros(boxes.shape[:1], jnp.int32)
  label = jnp.full(boxes.shape[:1], IGNORE, jnp.int32)
  label = jnp.where((max_iou < neg_iou_thr) | ~jnp.any(gt_valid), NEGATIVE,
                    label)
  pos = (max_iou >= pos_iou_thr) & jnp.any(gt_valid)
  if match_low_quality and iou.shape[0]:
    gt_best = jnp.max(iou, axis=1, initial=-1.0)  # [G], valid boxes only
    hit = (iou == gt_best[:, None]) & (gt_best[:, None] >= min_pos_iou) & \
        pair_valid
    g = jnp.arange(iou.shape[0], dtype=jnp.int32)[:, None]
    last = jnp.max(jnp.where(hit, g, -1), axis=0)
    gt_index = jnp.where(last >= 0, last, gt_index)
    pos = pos | (last >= 0)
  label = jnp.where(pos, POSITIVE, label)
  if box_valid is not None:
    label = jnp.where(box_valid, label, IGNORE)
  return label, gt_index, max_iou
