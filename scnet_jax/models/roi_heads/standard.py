"""Mask R-CNN's RoI heads (mmdet `StandardRoIHead`, detectron2
`StandardROIHeads`), and the machinery every RoI heads class reuses.

    proposals -> sample (stage IoU) -> RoIAlign 7x7 -> box head -> losses
              -> positives -> RoIAlign 14x14 -> mask head -> BCE
    test: proposals -> box head -> softmax, decode -> multiclass NMS
          -> RoIAlign 14x14 of the detections -> mask head -> sigmoid

The subclasses change only what differs, through these methods:
  setup                 which heads exist (one box and mask head per stage)
  context_and_losses    image-level features fused into RoI features and
                        their losses (none here; semantic, global context)
  train_box_stages /    one box stage here; the cascade's stage loop
  predict_box_stages
  mask_losses /         mask head s on stage s's positives; averaged at
  predict_masks         test (HTC's information flow, SCNet's single head
                        with feature relay)

Shapes: B images, P proposals, S = num_samples RoIs per image, K RoIs,
D detections, C = num_classes, G padded ground truths.
"""
import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.errors import ConfigError
from scnet_jax.models.losses import (merge_losses, normalizer, sigmoid_bce,
                                     smooth_l1, softmax_ce)
from scnet_jax.models.postprocessing import multiclass_nms
from scnet_jax.models.roi_heads.bbox_head import BBoxHead
from scnet_jax.models.roi_heads.mask_head import MaskHead
from scnet_jax.models.roi_heads.sampling import label_and_sample_proposals
from scnet_jax.models.structures import (INSTANCE_KEYS, FeatureContext,
                                         Samples, keys_for)


@dataclasses.dataclass(frozen=True)
class BoxStage:
  """What one trained box stage leaves for the mask branch and the next
  stage: its samples [B, S], regression [B, S, 4 | C, 4], the box head's
  last shared FC output [B, S, fc_dim], and its weighted losses
  (loss_cls, loss_bbox under the stage's names)."""
  samples: Samples
  deltas: jnp.ndarray
  shared: jnp.ndarray
  losses: dict


class StandardRoIHeads(nn.Module, kw_only=True):
  """One box stage and one mask head (Mask R-CNN).

  Set by the detector: num_classes; channels (the neck's); feature_strides
  (of the neck's levels; the first num_roi_levels are pooled); test (the
  model.test section); delta_clamp; dtype; axis_name. The rest is
  `model.roi_heads`.
  """
  # Test-time augmentation (evaluation/tta.py) merges what context,
  # predict_boxes, predict_masks and detect give over the views: a head
  # whose predict is not those steps sets this False and is refused there.
  TTA = True

  num_classes: int
  channels: int
  feature_strides: Sequence[int]
  test: Any
  delta_clamp: str = "symmetric"
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None
  # Box stages: one entry per stage.
  stage_iou_thrs: Sequence[float] = (0.5,)
  stage_loss_weights: Sequence[float] = (1.0,)
  stage_target_stds: Sequence[Sequence[float]] = ((0.1, 0.1, 0.2, 0.2),)
  # Assignment and sampling (MaxIoUAssigner, RandomSampler).
  match_low_quality: bool = True
  num_samples: int = 512
  pos_fraction: float = 0.25
  add_gt_as_proposals: bool = True
  # Box head (Shared2FCBBoxHead).
  class_agnostic: bool = False
  num_shared_fcs: int = 2
  fc_dim: int = 1024
  loss_bbox_beta: float = 1.0   # SmoothL1 beta; 0 = L1 (Mask R-CNN)
  # RoIAlign over the pyramid.
  roi_size: int = 7
  mask_roi_size: int = 14
  num_roi_levels: int = 4
  finest_scale: int = 56
  level_mapper: str = "mmdet"
  aligned: bool = True
  sampling_ratio: int = 0       # 0 = mmdet's adaptive rule (exact)
  # Mask head (FCNMaskHead) and its targets.
  mask_size: int = 28
  mask_num_convs: int = 4
  mask_conv_to_res: bool = False
  mask_target_sampling_ratio: int = 2

  @classmethod
  def check_config(cls, cfg):
    """Refuses combinations that cannot work (ConfigError, one line)."""
    n = cls.check_stages(cfg)
    if n != 1:
      raise ConfigError(f"model.roi_heads: type {cfg.type!r} has one box "
                        f"stage, got {n} (a cascade type has several)")

  @classmethod
  def check_stages(cls, cfg):
    """The number of box stages, once the stage_* tuples agree on it."""
    n = len(cfg.stage_iou_thrs)
    if len(cfg.stage_loss_weights) != n or len(cfg.stage_target_stds) != n:
      raise ConfigError(
          f"model.roi_heads: stage_iou_thrs, stage_loss_weights and "
          f"stage_target_stds need one entry per stage, got {n}, "
          f"{len(cfg.stage_loss_weights)} and {len(cfg.stage_target_stds)}")
    return n

  @classmethod
  def train_batch_keys(cls, cfg):
    """Batch keys the loss reads."""
    del cfg
    return INSTANCE_KEYS

  @property
  def num_stages(self):
    return len(self.stage_iou_thrs)

  @property
  def num_pos_slots(self):
    """Sample slots that can hold a positive (they come first)."""
    return int(self.num_samples * self.pos_fraction)

  @property
  def num_mask_heads(self):
    return self.num_stages

  @property
  def roi_box_grad(self):
    """Whether RoIAlign is differentiated in the RoI coordinates (MNC's
    RoI warping); here the RoIs are constants."""
    return False

  def loss_name(self, stage, name):
    return name if self.num_stages == 1 else f"s{stage}.{name}"

  def setup(self):
    self.bbox_head = [self.make_bbox_head() for _ in range(self.num_stages)]
    self.mask_head = [self.make_mask_head(h)
                      for h in range(self.num_mask_heads)]

  def make_bbox_head(self):
    return BBoxHead(num_classes=self.num_classes,
                    class_agnostic=self.class_agnostic,
                    num_shared_fcs=self.num_shared_fcs, fc_dim=self.fc_dim,
                    dtype=self.dtype)

  def make_mask_head(self, index):
    del index
    return MaskHead(num_classes=self.num_classes,
                    num_convs=self.mask_num_convs,
                    conv_to_res=self.mask_conv_to_res,
                    channels=self.channels, dtype=self.dtype)

  # ------------------------------------------------------------ entries
  def loss(self, feats, proposals, gt, canvas, image_keys):
    """Named, weighted float32 losses.

    feats: the neck's levels [B, H_l, W_l, C]; proposals: Proposals;
    gt: GroundTruth; canvas: Canvas; image_keys: [B] PRNG keys.
    """
    image_hw = canvas.image_hw
    ctx, context_losses = self.context_and_losses(feats, canvas, gt)
    stages = self.train_box_stages(feats, proposals, gt, image_hw,
                                   image_keys, ctx)
    mask_losses = self.mask_losses(feats, stages, gt, image_hw, image_keys,
                                   ctx)
    return merge_losses(context_losses, *(s.losses for s in stages),
                        mask_losses)

  def predict(self, feats, proposals, canvas):
    """Detections with [B, D, mask_size, mask_size] box-relative masks."""
    ctx, _ = self.context_and_losses(feats, canvas)
    boxes, scores = self.predict_boxes(feats, proposals.boxes,
                                       canvas.image_hw, ctx)
    dets = self.detect(boxes, scores, proposals.valid)
    return dets.replace(masks=self.predict_masks(feats, dets.boxes,
                                                 dets.labels, ctx),
                        mask_paste=self.test.mask_paste)

  # ------------------------------------------------------ family hooks
  def context_and_losses(self, feats, canvas, gt=None):
    """(FeatureContext, the losses of its image-level heads when gt is
    given). Here: the batch's Canvas, no losses."""
    del feats, gt
    return FeatureContext(canvas=canvas), {}

  def train_box_stages(self, feats, proposals, gt, image_hw, image_keys,
                       ctx):
    """Trains the box stage(s) -> [BoxStage], each with its losses."""
    del image_hw
    smp = self.sample(0, image_keys, proposals.boxes, proposals.valid, gt)
    return [self.box_stage_loss(0, feats, smp, ctx)]

  def predict_box_stages(self, feats, rois, image_hw, ctx):
    """(input RoIs of the last stage [B, P, 4], class logits of every stage
    [[B, P, C + 1]], the last stage's deltas)."""
    del image_hw
    cls, deltas, _ = self.box_forward(0, feats, rois, ctx)
    return rois, [cls], deltas

  def mask_losses(self, feats, stages, gt, image_hw, image_keys, ctx):
    """Mask head s on the positives of box stage s, weighted as it."""
    del image_keys
    losses = {}
    for s, stage in enumerate(stages):
      pos, x = self.positive_mask_features(feats, stage.samples, ctx)
      logits, _ = self.mask_head[s](x)
      losses[self.loss_name(s, "loss_mask")] = self.stage_loss_weights[s] * \
          self.mask_loss(logits, pos, gt, image_hw)
    return losses

  def predict_masks(self, feats, boxes, labels, ctx):
    """[B, D, M, M] probabilities of class labels [B, D] over boxes
    [B, D, 4]: the mean over the mask heads (the cascades average their
    stages, as mmdet 2.x)."""
    x = self.roi_features(feats, boxes, self.mask_roi_size, ctx)
    return self.mean_mask_probs([head(x)[0] for head in self.mask_head],
                                labels)

  # ------------------------------------------------------ shared pieces
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
        num_classes=self.num_classes)

  def roi_features(self, feats, rois, size, ctx):
    """RoIAlign of rois [B, K, 4] on the first num_roi_levels levels, plus
    the context's semantic RoI feature (pooled at mask_roi_size, averaged
    down to size) and global vector, each added when present ->
    [B * K, size, size, C]."""
    strides = tuple(self.feature_strides[:self.num_roi_levels])
    # Bilinear taps at the canvas border clamp there, as on the canvas.
    canvas_hw = None if ctx.canvas is None else ctx.canvas.hw
    x = ops.multilevel_roi_align(
        feats[:self.num_roi_levels], rois, size, strides,
        self.sampling_ratio, self.aligned, self.finest_scale,
        self.level_mapper, roi_grad=self.roi_box_grad, canvas_hw=canvas_hw)
    if ctx.semantic is not None:
      x = x + self.semantic_roi_features(ctx.semantic, ctx.semantic_stride,
                                         rois, size, canvas_hw)
    if ctx.global_context is not None:
      x = x + ctx.global_context[:, None, None, None, :].astype(x.dtype)
    return x.reshape(-1, *x.shape[2:])

  def semantic_roi_features(self, semantic, stride, rois, size, canvas_hw):
    """mmdet's semantic RoI feature: RoIAlign at mask_roi_size, average-
    pooled down to `size` -> [B, K, size, size, C]. With a fixed sampling
    ratio r the pooled f x f bins are one bin of f * r samples per axis at
    the same points, so that is computed directly (4x fewer bins at 14 ->
    7); the adaptive rule's counts do not split that way."""
    f = self.mask_roi_size // size
    if f > 1 and self.sampling_ratio > 0:
      return ops.roi_align(semantic, rois, size, 1.0 / stride,
                           self.sampling_ratio * f, self.aligned,
                           roi_grad=self.roi_box_grad, canvas_hw=canvas_hw)
    s = ops.roi_align(semantic, rois, self.mask_roi_size, 1.0 / stride,
                      self.sampling_ratio, self.aligned,
                      roi_grad=self.roi_box_grad, canvas_hw=canvas_hw)
    if f > 1:  # adaptive_avg_pool2d 14 -> 7
      s = s.reshape(*s.shape[:2], size, f, size, f, -1).mean(axis=(3, 5))
    return s

  def box_forward(self, stage, feats, rois, ctx):
    """rois [B, K, 4] -> (cls [B, K, C + 1], deltas [B, K, 4 | C, 4],
    shared [B, K, fc_dim])."""
    bsz, k = rois.shape[:2]
    x = self.roi_features(feats, rois, self.roi_size, ctx)
    cls, reg, shared = self.bbox_head[stage](x)
    return (cls.reshape(bsz, k, -1), reg.reshape(bsz, k, *reg.shape[1:]),
            shared.reshape(bsz, k, -1))

  def box_stage_loss(self, stage, feats, smp, ctx):
    """Forward of box stage `stage` on its samples -> its BoxStage, with
    its weighted loss_cls and loss_bbox."""
    cls, deltas, shared = self.box_forward(stage, feats, smp.rois, ctx)
    cls_loss, box_loss = self.box_losses(stage, smp, cls, deltas)
    return BoxStage(samples=smp, deltas=deltas, shared=shared, losses={
        self.loss_name(stage, "loss_cls"): cls_loss,
        self.loss_name(stage, "loss_bbox"): box_loss})

  def box_losses(self, stage, smp, cls, deltas):
    """(loss_cls, loss_bbox) of samples smp, weighted as box stage
    `stage`, from class logits cls [B, S, C + 1] and deltas [B, S, 4 | C,
    4]. The regression targets are constants of the RoIs, whether or not
    the RoIs carry a gradient (MNC's do)."""
    valid, is_pos = smp.valid, smp.is_pos
    norm = normalizer(jnp.sum(valid), self.axis_name)
    cls_loss = jnp.sum(softmax_ce(cls, smp.labels) * valid) / norm
    pos = is_pos[..., None]
    targets = jnp.where(pos, ops.encode_deltas(
        jax.lax.stop_gradient(smp.rois), smp.target_boxes,
        stds=self.stage_target_stds[stage]), 0.)
    # Zero the non-positive rows before the loss: padding rows encode 0/0,
    # whose NaN would leak into the gradient through `where`.
    diff = jnp.where(pos, self.class_deltas(deltas, smp.labels) - targets,
                     0.0)
    box_loss = jnp.sum(smooth_l1(diff, self.loss_bbox_beta)) / norm
    w = self.stage_loss_weights[stage]
    return w * cls_loss, w * box_loss

  def class_deltas(self, deltas, labels):
    """[B, K, 4 | C, 4] deltas -> [B, K, 4] those of each row's label
    (background rows take the last class; they are masked anyway)."""
    if self.class_agnostic:
      return deltas
    label = jnp.minimum(labels, self.num_classes - 1)
    return jnp.take_along_axis(deltas, label[..., None, None], axis=2)[:, :,
                                                                      0]

  def refine(self, stage, box_stage, image_hw):
    """The next stage's candidates: this stage's samples moved by its
    deltas (no gradient), ground-truth rows dropped -> (boxes, valid)."""
    smp = box_stage.samples
    refined = jax.lax.stop_gradient(ops.decode_deltas(
        smp.rois, self.class_deltas(box_stage.deltas, smp.labels),
        stds=self.stage_target_stds[stage], image_hw=image_hw,
        clamp=self.delta_clamp))
    return refined, smp.valid & ~smp.is_gt

  def positive_mask_features(self, feats, samples, ctx):
    """(the positive slots of samples, their mask RoI features
    [B * num_pos_slots, 14, 14, C])."""
    pos = samples.first(self.num_pos_slots)
    return pos, self.roi_features(feats, pos.rois, self.mask_roi_size, ctx)

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
    to the image) from their ground truths' crops; targets take no
    gradient in the boxes (MNC's boxes carry one)."""
    clipped = ops.clip_boxes(jax.lax.stop_gradient(pos.rois), image_hw)
    return jax.vmap(lambda cr, wn, b, gi: ops.mask_targets(
        cr, wn, b, gi, self.mask_size, self.mask_target_sampling_ratio))(
            gt.mask_crops, gt.mask_windows, clipped, pos.gt_index)

  def predict_boxes(self, feats, rois, image_hw, ctx):
    """Box stages on rois [B, P, 4] -> (boxes [B, P, C | 1, 4], the last
    stage's deltas on its input RoIs, clipped to the image; scores
    [B, P, C], the softmax of the stages' mean logits, background
    dropped)."""
    rois, logits, deltas = self.predict_box_stages(feats, rois, image_hw,
                                                   ctx)
    scores = jax.nn.softmax(jnp.mean(jnp.stack(logits), axis=0), axis=-1)
    stds = self.stage_target_stds[-1]
    if self.class_agnostic:
      boxes = ops.decode_deltas(rois, deltas, stds=stds, image_hw=image_hw,
                                clamp=self.delta_clamp)[:, :, None, :]
    else:
      boxes = ops.decode_deltas(rois[:, :, None, :], deltas, stds=stds,
                                image_hw=image_hw[:, None, :],
                                clamp=self.delta_clamp)
    return boxes, scores[..., :self.num_classes]

  def detect(self, boxes, scores, valid):
    """predict_boxes' output of the valid [B, P] RoIs -> Detections
    (multiclass NMS with the model.test settings), without masks."""
    t = self.test
    return multiclass_nms(boxes, scores, valid, score_thr=t.score_thr,
                          nms_iou=t.nms_iou, max_per_img=t.max_per_img,
                          pre_nms_topk=t.pre_nms_topk,
                          min_box_size=t.min_box_size)

  def mean_mask_probs(self, logits, labels):
    """Mean over heads of sigmoid(logits [B * D, M, M, C]) at each
    detection's label [B, D] -> [B, D, M, M]."""
    bsz, d = labels.shape
    probs = [jax.nn.sigmoid(jnp.take_along_axis(
        lg.reshape(bsz, d, *lg.shape[1:]), labels[:, :, None, None, None],
        axis=-1)[..., 0]) for lg in logits]
    return jnp.mean(jnp.stack(probs), axis=0)
