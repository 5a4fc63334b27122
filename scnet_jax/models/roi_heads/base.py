"""What every RoI heads class shares (mmdet's `BaseRoIHead`): the fields
the detector passes, proposal sampling, the RoIAlign sizes, mask targets
and their loss, and the test-time multiclass NMS.

    RoIHeadsBase            this file; CoMask's RoI heads build on it
      BoxStagesBase         box stages over pyramid RoIAlign (box_stages.py);
                            MNC builds on it
        StandardRoIHeads    one box stage and a mask head per stage
                            (standard.py); the cascades, HTC and SCNet

Each class keeps only the fields it reads: a config section setting a
field its class lacks is refused at build time (registry.check_fields).

Shapes: B images, P candidates, S = num_samples RoIs per image, K RoIs,
M = mask_size, C = num_classes, G padded ground truths.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.models.losses import normalizer, sigmoid_bce
from scnet_jax.models.postprocessing import multiclass_nms
from scnet_jax.models.roi_heads.sampling import label_and_sample_proposals
from scnet_jax.models.structures import (INSTANCE_KEYS, MASKS_KEY, Canvas,
                                         keys_for)


class RoIHeadsBase(nn.Module, kw_only=True):
  """Fields and pieces shared by every RoI heads class; no loss or
  predict of its own (the contract's `loss` and `predict` are the
  subclass's).

  Set by the detector: num_classes; channels (the neck's); feature_strides
  (of the neck's levels; the first num_roi_levels are pooled); test (the
  model.test section); delta_clamp; dtype; axis_name. The rest is
  `model.roi_heads`.
  """
  # Test-time augmentation (evaluation/tta.py) merges what context,
  # predict_boxes, predict_masks and detect give over the views; a class
  # whose predict is those steps declares TTA = True (StandardRoIHeads).
  TTA = False
  CHOICES = {"sampler": ops.SAMPLERS, "mask_targets": ("crop", "full")}

  num_classes: int
  channels: int
  feature_strides: Sequence[int]
  test: Any
  delta_clamp: str = "symmetric"
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None
  # The IoU threshold of each box stage's assignment.
  stage_iou_thrs: Sequence[float] = (0.5,)
  # Assignment and sampling (MaxIoUAssigner, RandomSampler).
  match_low_quality: bool = True
  num_samples: int = 512
  pos_fraction: float = 0.25
  add_gt_as_proposals: bool = True
  sampler: str = "random"       # ops.SAMPLERS; "first" for parity tests
  # Box head (Shared2FCBBoxHead).
  num_shared_fcs: int = 2
  fc_dim: int = 1024
  # RoIAlign: box and mask RoI sides, pooled levels, the pixel model.
  roi_size: int = 7
  mask_roi_size: int = 14
  num_roi_levels: int = 4
  aligned: bool = True
  sampling_ratio: int = 0       # 0 = mmdet's adaptive rule (exact)
  # Mask targets (M x M): "crop" from the ground truths' box crops
  # (data.mask_crop_size, RoIAlign at mask_target_sampling_ratio), "full"
  # mmdetection's rule exactly, from full-resolution masks (the batch
  # then carries gt_masks, [G, H, W] bytes per image).
  mask_size: int = 28
  mask_targets: str = "crop"
  mask_target_sampling_ratio: int = 2

  @classmethod
  def train_batch_keys(cls, cfg):
    """Batch keys the loss reads."""
    return INSTANCE_KEYS + ((MASKS_KEY,) if cfg.mask_targets == "full"
                            else ())

  @property
  def num_pos_slots(self):
    """Sample slots that can hold a positive (they come first)."""
    return int(self.num_samples * self.pos_fraction)

  def sample(self, stage, image_keys, candidates, candidate_valid, gt,
             stream_name=None):
    """Samples for box stage `stage`, drawn from the PRNG stream
    `stream_name` (default f"box_stage_{stage}"; HTC's mask branch draws
    again from its own)."""
    name = stream_name or f"box_stage_{stage}"
    return label_and_sample_proposals(
        keys_for(image_keys, name), candidates, candidate_valid,
        gt.boxes, gt.labels, gt.valid, iou_thr=self.stage_iou_thrs[stage],
        match_low_quality=self.match_low_quality,
        num_samples=self.num_samples, pos_fraction=self.pos_fraction,
        add_gt_as_proposals=self.add_gt_as_proposals,
        num_classes=self.num_classes, sampler=self.sampler)

  def mask_loss(self, logits, pos, gt, image_hw):
    """BCE on the ground-truth class channel of the positive RoIs.

    logits: [B * K, M, M, C] of the RoIs pos.rois [B, K, 4].
    """
    bsz, k = pos.rois.shape[:2]
    logits = logits.reshape(bsz, k, *logits.shape[1:])
    labels = jnp.minimum(pos.labels, self.num_classes - 1)
    targets = self.positive_mask_targets(pos, gt, image_hw)
    picked = jnp.take_along_axis(logits, labels[:, :, None, None, None],
                                 axis=-1)[..., 0]
    bce = sigmoid_bce(picked, targets).mean(axis=(-1, -2))
    norm = normalizer(jnp.sum(pos.is_pos), self.axis_name)
    return jnp.sum(jnp.where(pos.is_pos, bce, 0.0)) / norm

  def positive_mask_targets(self, pos, gt, image_hw):
    """[B, K, M, M] binary targets of the RoIs pos.rois [B, K, 4] (clipped
    to the image) from their ground truths' crops or full masks
    (mask_targets); targets take no gradient in the boxes (MNC's boxes
    carry one)."""
    clipped = ops.clip_boxes(jax.lax.stop_gradient(pos.rois), image_hw)
    if self.mask_targets == "full":
      canvas = Canvas.of(image_hw, gt.masks.shape[-2:])
      return jax.vmap(lambda m, hw, b, gi: ops.full_mask_targets(
          m, hw, b, gi, self.mask_size))(gt.masks, canvas.hw, clipped,
                                         pos.gt_index)
    return jax.vmap(lambda cr, wn, b, gi: ops.mask_targets(
        cr, wn, b, gi, self.mask_size, self.mask_target_sampling_ratio))(
            gt.mask_crops, gt.mask_windows, clipped, pos.gt_index)

  def detect(self, boxes, scores, valid):
    """Per-class boxes [B, P, C | 1, 4] and scores [B, P, C] of the valid
    [B, P] RoIs -> Detections (multiclass NMS with the model.test
    settings), without masks."""
    t = self.test
    return multiclass_nms(boxes, scores, valid, score_thr=t.score_thr,
                          nms_iou=t.nms_iou, max_per_img=t.max_per_img,
                          pre_nms_topk=t.pre_nms_topk,
                          min_box_size=t.min_box_size)
