"""Per-stage RoI assignment and sampling (pure, batched with vmap).

Shapes: B images, N candidate boxes, G padded ground truths, S samples.
"""
import jax
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.models.structures import Samples
from scnet_jax.ops.assign import IGNORE, POSITIVE


def assign_candidates(candidates, candidate_valid, gt_boxes, gt_valid, *,
                      iou_thr, match_low_quality, add_gt_as_proposals):
  """One image's R-CNN assignment, in mmdet's order: MaxIoUAssigner on the
  valid proposals only, then (RandomSampler, add_gt_as_proposals) the
  ground truth prepended, each gt box positive for itself
  (`AssignResult.add_gt_`). The gt boxes thus take no part in the IoU
  maxima, low-quality matches included.

  Args:
    candidates: [N, 4]; candidate_valid: [N] bool.
    gt_boxes: [G, 4]; gt_valid: [G] bool.
    iou_thr: pos = neg = min_pos IoU threshold of the stage.
  Returns:
    boxes [G + N, 4] (or [N, 4] without add_gt_as_proposals), label and
    gt_index over those rows (see `ops.max_iou_assign`).
  """
  label, gt_index, _ = ops.max_iou_assign(
      candidates, gt_boxes, gt_valid, iou_thr, iou_thr, iou_thr,
      match_low_quality, candidate_valid)
  if add_gt_as_proposals:
    g = gt_boxes.shape[0]
    candidates = jnp.concatenate([gt_boxes, candidates], axis=0)
    label = jnp.concatenate(
        [jnp.where(gt_valid, POSITIVE, IGNORE).astype(jnp.int32),
         label])
    gt_index = jnp.concatenate([jnp.arange(g, dtype=jnp.int32), gt_index])
  return candidates, label, gt_index


def label_and_sample_proposals(keys, candidates, candidate_valid, gt_boxes,
                               gt_labels, gt_valid, *, iou_thr,
                               match_low_quality, num_samples, pos_fraction,
                               add_gt_as_proposals, num_classes,
                               sampler="random"):
  """Assigns candidates to ground truth and samples S = num_samples RoIs.

  Args:
    keys: [B] PRNG keys, one per image.
    candidates: [B, N, 4] proposals; candidate_valid: [B, N] bool.
    gt_boxes: [B, G, 4]; gt_labels: [B, G] int32; gt_valid: [B, G] bool.
    iou_thr: pos = neg = min_pos IoU threshold of the stage.
    add_gt_as_proposals: prepend the ground truth to the candidates (after
      assignment, as mmdet's sampler does).
    sampler: ops.SAMPLERS rule ("random" is mmdet's RandomSampler).
  Returns:
    Samples with S = num_samples rows per image, positives first.
  """
  g = gt_boxes.shape[1]

  def per_image(k, cand, cv, gtb, gtl, gtv):
    cand, label, gt_index = assign_candidates(
        cand, cv, gtb, gtv, iou_thr=iou_thr,
        match_low_quality=match_low_quality,
        add_gt_as_proposals=add_gt_as_proposals)
    idx, valid, is_pos, _ = ops.sample_boxes(k, label, num_samples,
                                             pos_fraction, sampler)
    gi = gt_index[idx]
    return Samples(
        rois=cand[idx], valid=valid, is_pos=is_pos & valid,
        is_gt=(idx < g) & valid if add_gt_as_proposals else
        jnp.zeros_like(valid),
        labels=jnp.where(is_pos, gtl[gi], num_classes).astype(jnp.int32),
        gt_index=gi, target_boxes=gtb[gi])

  return jax.vmap(per_image)(keys, candidates, candidate_valid, gt_boxes,
                             gt_labels, gt_valid)
