"""The two-stage, multi-stage detector that Mask R-CNN, Cascade Mask R-CNN,
HTC and SCNet are made of, switched by the model config.

    image -> ResNet -> FPN (P2..P6) -> RPN -> proposals
          -> [semantic head (stride 8)] [global context head (P6)]
          -> box stages s = 0..S-1 (RoIAlign 7x7 + fusions -> BBoxHead)
          -> mask branch (per stage, HTC information flow, or SCNet's
             single head with feature relay)

Two entry points, both jittable with static shapes:
  `loss(batch)`    -> dict of named, weighted float32 losses;
  `predict(batch)` -> padded detections.

Batch (B images, canvas H x W padded to a multiple of 32, G = max
instances, R = mask crop size):
  image           [B, H, W, 3] uint8 RGB (normalised on device)
  image_hw        [B, 2] int32 resized, unpadded size
  gt_boxes        [B, G, 4] float32 pixels of the resized image
  gt_labels       [B, G] int32 contiguous labels in [0, num_classes)
  gt_valid        [B, G] bool
  gt_mask_crops   [B, G, R, R] uint8 (ops.mask_targets)
  gt_mask_windows [B, G, 4] float32
  gt_semantic     [B, H/8, W/8] uint8, 255 = ignore (semantic branch only)
  index           [B] int32, optional: the image's position in the global
                  batch. Sampling keys are derived from it, so a global
                  batch samples the same RoIs however it is split.
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scnet_jax import ops
from scnet_jax.models.backbones.resnet import ResNet
from scnet_jax.models.dense_heads import rpn
from scnet_jax.models.dense_heads.rpn_head import RPNHead
from scnet_jax.models.losses import (normalizer, sigmoid_bce, smooth_l1,
                                     softmax_ce)
from scnet_jax.models.necks.fpn import FPN
from scnet_jax.models.roi_heads.bbox_head import BBoxHead
from scnet_jax.models.roi_heads.feature_relay import FeatureRelayHead
from scnet_jax.models.roi_heads.global_context_head import GlobalContextHead
from scnet_jax.models.roi_heads.mask_head import MaskHead
from scnet_jax.models.roi_heads.sampling import label_and_sample_proposals
from scnet_jax.models.roi_heads.semantic_head import SemanticHead

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class TwoStageDetector(nn.Module):
  """cfg: the `model` FrozenConfigDict of a config file.
  axis_name: the data-parallel axis, for loss normalisers (None outside
  pmap / shard_map)."""
  cfg: Any
  axis_name: Optional[str] = None

  def setup(self):
    c = self.cfg
    dt = DTYPES[c.dtype]
    b = c.backbone
    self.backbone = ResNet(depth=b.depth, groups=b.groups,
                           base_width=b.base_width,
                           base_channels=b.base_channels,
                           frozen_stages=b.frozen_stages, norm=b.norm,
                           dtype=dt)
    self.neck = FPN(c.fpn_channels, num_outs=len(c.rpn.strides), dtype=dt)
    self.rpn_head = RPNHead(len(c.rpn.anchor_ratios) *
                            len(c.rpn.anchor_scales), c.fpn_channels,
                            dtype=dt)
    r = c.roi
    self.bbox_head = [BBoxHead(c.num_classes, r.class_agnostic,
                               r.num_shared_fcs, r.fc_dim, dtype=dt)
                      for _ in range(r.num_stages)]
    num_mask_heads = 1 if self.single_mask_head else r.num_stages
    self.mask_head = [MaskHead(c.num_classes, r.mask_num_convs,
                               r.mask_conv_to_res,
                               with_conv_res=r.mask_info_flow and s > 0,
                               channels=c.fpn_channels, dtype=dt)
                      for s in range(num_mask_heads)]
    if c.semantic:
      self.semantic_head = SemanticHead(
          c.semantic_head.num_classes, c.semantic_head.num_convs,
          c.semantic_head.conv_to_res, c.semantic_head.fusion_level,
          c.fpn_channels, dtype=dt)
    if c.global_context:
      self.glbctx_head = GlobalContextHead(c.num_classes, dtype=dt)
    if c.feature_relay:
      self.feat_relay_head = FeatureRelayHead(c.fpn_channels,
                                              r.roi_size, 2, dtype=dt)

  @property
  def single_mask_head(self):
    """SCNet's sample consistency (and Mask R-CNN): one mask head on the
    last stage's samples."""
    return self.cfg.sample_consistency or self.cfg.roi.num_stages == 1

  # ---------------------------------------------------------------- shared
  def features(self, image):
    """[B, H, W, 3] pixels -> FPN levels, each [B, H_l, W_l, C]."""
    mean = jnp.asarray(self.cfg.pixel_mean, jnp.float32)
    std = jnp.asarray(self.cfg.pixel_std, jnp.float32)
    x = (image.astype(jnp.float32) - mean) / std
    return self.neck(self.backbone(x))

  def _anchors(self, feats):
    c = self.cfg.rpn
    return [ops.grid_anchors(f.shape[1:3], s, c.anchor_scales,
                             c.anchor_ratios, c.round_anchors)
            for f, s in zip(feats, c.strides)]

  def proposals(self, feats, rpn_out, image_hw, train):
    """RPN outputs -> (rois [B, P, 4], valid [B, P]) after NMS, with the
    train or test pre/post-NMS caps."""
    c = self.cfg.rpn
    pre, post = ((c.train_pre_nms, c.train_post_nms) if train else
                 (c.test_pre_nms, c.test_post_nms))
    rois, valid, _ = rpn.proposals(
        [o[0] for o in rpn_out], [o[1] for o in rpn_out],
        self._anchors(feats), image_hw, pre, post, c.nms_iou,
        self.cfg.delta_clamp, c.min_box_size)
    return rois, valid

  def _context(self, feats):
    """Semantic and global-context outputs (None where switched off)."""
    sem = self.semantic_head(feats) if self.cfg.semantic else (None, None)
    glb = self.glbctx_head(feats[-1]) if self.cfg.global_context else \
        (None, None)
    return sem, glb

  def _roi_features(self, feats, rois, size, sem_feat, glb_feat):
    """RoIAlign on P2..P5 plus the semantic and global-context fusions.

    rois: [B, K, 4] -> [B * K, size, size, C].
    """
    r = self.cfg.roi
    strides = self.cfg.rpn.strides[:r.num_roi_levels]
    levels = feats[:r.num_roi_levels]
    x = ops.multilevel_roi_align(
        levels, rois, size, strides, r.sampling_ratio, r.aligned,
        r.finest_scale, r.max_sampling_grid, r.level_mapper)
    if sem_feat is not None:
      s = ops.roi_align(sem_feat, rois, r.mask_roi_size,
                        1.0 / r.semantic_stride, r.sampling_ratio, r.aligned,
                        r.max_sampling_grid)
      if size != r.mask_roi_size:  # adaptive_avg_pool2d 14 -> 7
        f = r.mask_roi_size // size
        bk = s.shape[:2]
        s = s.reshape(*bk, size, f, size, f, -1).mean(axis=(3, 5))
      x = x + s
    if glb_feat is not None:
      x = x + glb_feat[:, None, None, None, :].astype(x.dtype)
    return x.reshape(-1, *x.shape[2:])

  def _bbox_forward(self, stage, feats, rois, sem_feat, glb_feat):
    """rois [B, K, 4] -> cls [B, K, C+1], deltas [B, K, 4 | C, 4],
    shared [B, K, fc_dim]."""
    bsz, k = rois.shape[:2]
    x = self._roi_features(feats, rois, self.cfg.roi.roi_size, sem_feat,
                           glb_feat)
    cls, reg, shared = self.bbox_head[stage](x)
    return (cls.reshape(bsz, k, -1), reg.reshape(bsz, k, *reg.shape[1:]),
            shared.reshape(bsz, k, -1))

  def _mask_logits(self, feats, rois, sem_feat, glb_feat, relay_src,
                   stage=None):
    """Mask logits of every head that predicts at this point.

    rois: [B, K, 4]; relay_src: [B, K, fc_dim] or None.
    Returns a list of [B, K, 28, 28, num_classes] float32 logits: one per
    stage up to `stage` with the HTC information flow, else one.
    """
    bsz, k = rois.shape[:2]
    x = self._roi_features(feats, rois, self.cfg.roi.mask_roi_size,
                           sem_feat, glb_feat)
    if relay_src is not None and self.cfg.feature_relay:
      x = x + self.feat_relay_head(
          relay_src.reshape(bsz * k, -1)).astype(x.dtype)
    if self.single_mask_head:
      heads = [0]
    elif self.cfg.roi.mask_info_flow:
      heads = list(range(stage + 1))
    else:
      heads = [stage]
    outs, feat = [], None
    for h in heads:
      logits, new_feat = self.mask_head[h](
          x, feat if self.cfg.roi.mask_info_flow else None)
      feat = new_feat
      outs.append(logits.reshape(bsz, k, *logits.shape[1:]))
    return outs

  # -------------------------------------------------------------- training
  def loss(self, batch):
    """Returns dict of named float32 losses (weights applied); the total is
    their sum."""
    c, r = self.cfg, self.cfg.roi
    key = self.make_rng("sample")
    index = batch.get("index", jnp.arange(batch["image"].shape[0]))
    image_keys = jax.vmap(jax.random.fold_in, (None, 0))(key, index)
    keys_for = lambda use: jax.vmap(jax.random.fold_in, (0, None))(
        image_keys, use)
    image_hw = batch["image_hw"]
    gt_boxes = batch["gt_boxes"].astype(jnp.float32)
    gt_labels = batch["gt_labels"]
    gt_valid = batch["gt_valid"]
    feats = self.features(batch["image"])
    losses = {}

    rpn_out = self.rpn_head(feats)
    anchors = self._anchors(feats)
    num_a = len(c.rpn.anchor_ratios) * len(c.rpn.anchor_scales)
    flags = jnp.concatenate(
        [ops.valid_flags(f.shape[1:3], s, num_a, image_hw)
         for f, s in zip(feats, c.rpn.strides)], axis=1)
    all_anchors = np.concatenate(anchors)
    inside = ops.inside_flags(all_anchors, flags, image_hw,
                              c.rpn.allowed_border)
    losses.update(rpn.rpn_loss(
        keys_for(0), jnp.concatenate([o[0] for o in rpn_out], 1),
        jnp.concatenate([o[1] for o in rpn_out], 1), all_anchors, inside,
        gt_boxes, gt_valid, c.rpn, self.axis_name))
    cand, cand_valid = self.proposals(feats, rpn_out, image_hw, train=True)

    (sem_logits, sem_feat), (glb_logits, glb_feat) = self._context(feats)
    if sem_logits is not None:
      losses["loss_semantic_seg"] = self._semantic_loss(
          sem_logits, batch["gt_semantic"])
    if glb_logits is not None:
      losses["loss_glbctx"] = self._glbctx_loss(glb_logits, gt_labels,
                                                gt_valid)

    sample_kw = dict(match_low_quality=r.match_low_quality,
                     num_samples=r.num_samples, pos_fraction=r.pos_fraction,
                     add_gt_as_proposals=r.add_gt_as_proposals,
                     num_classes=c.num_classes)
    gts = (gt_boxes, gt_labels, gt_valid)
    prefix = (lambda s: "") if r.num_stages == 1 else (lambda s: f"s{s}.")
    for s in range(r.num_stages):
      w = r.stage_loss_weights[s]
      stds = r.stage_target_stds[s]
      smp = label_and_sample_proposals(keys_for(1 + 2 * s), cand, cand_valid,
                                       *gts, iou_thr=r.stage_iou_thrs[s],
                                       **sample_kw)
      cls, reg, shared = self._bbox_forward(s, feats, smp["rois"], sem_feat,
                                            glb_feat)
      cls_loss, box_loss = self._box_losses(cls, reg, smp, stds)
      losses[prefix(s) + "loss_cls"] = w * cls_loss
      losses[prefix(s) + "loss_bbox"] = w * box_loss

      agnostic = reg if r.class_agnostic else jnp.take_along_axis(
          reg, jnp.minimum(smp["labels"], c.num_classes - 1)[..., None, None],
          axis=2)[:, :, 0]
      refined = jax.lax.stop_gradient(ops.decode_deltas(
          smp["rois"], agnostic, stds=stds, image_hw=image_hw,
          clamp=c.delta_clamp))
      next_valid = smp["valid"] & ~smp["is_gt"]

      if not self.single_mask_head:
        mask_smp = smp
        if r.interleaved:  # HTC: the mask branch trains on refined boxes.
          mask_smp = label_and_sample_proposals(
              keys_for(2 + 2 * s), refined, next_valid, *gts,
              iou_thr=r.stage_iou_thrs[s], **sample_kw)
        losses[prefix(s) + "loss_mask"] = w * self._mask_loss(
            feats, mask_smp, batch, sem_feat, glb_feat, None, stage=s)
      cand, cand_valid = refined, next_valid

    if self.single_mask_head:
      losses["loss_mask"] = sum(r.stage_loss_weights) * self._mask_loss(
          feats, smp, batch, sem_feat, glb_feat, shared)
    return losses

  def _box_losses(self, cls, reg, smp, stds):
    c = self.cfg
    valid, is_pos = smp["valid"], smp["is_pos"]
    norm = normalizer(jnp.sum(valid), self.axis_name)
    cls_loss = jnp.sum(softmax_ce(cls, smp["labels"]) * valid) / norm
    if not c.roi.class_agnostic:
      label = jnp.minimum(smp["labels"], c.num_classes - 1)
      reg = jnp.take_along_axis(reg, label[..., None, None], axis=2)[:, :, 0]
    pos = is_pos[..., None]
    targets = jnp.where(pos, ops.encode_deltas(
        smp["rois"], smp["target_boxes"], stds=stds), 0.0)
    diff = jnp.where(pos, reg - targets, 0.0)  # no NaN from padding rows
    box_loss = jnp.sum(smooth_l1(diff, c.roi.loss_bbox_beta)) / norm
    return cls_loss, box_loss

  def _mask_loss(self, feats, smp, batch, sem_feat, glb_feat, shared,
                 stage=None):
    """BCE on the ground-truth class channel of the positive RoIs.

    Positives occupy the first num_samples * pos_fraction slots.
    """
    c, r = self.cfg, self.cfg.roi
    p = int(r.num_samples * r.pos_fraction)
    rois = smp["rois"][:, :p]
    is_pos = smp["is_pos"][:, :p]
    labels = jnp.minimum(smp["labels"][:, :p], c.num_classes - 1)
    clipped = ops.clip_boxes(rois, batch["image_hw"])
    targets = jax.vmap(lambda cr, wn, b, gi: ops.mask_targets(
        cr, wn, b, gi, r.mask_size, r.mask_target_sampling_ratio))(
            batch["gt_mask_crops"], batch["gt_mask_windows"], clipped,
            smp["gt_index"][:, :p])
    relay_src = None if shared is None else shared[:, :p]
    logits = self._mask_logits(feats, rois, sem_feat, glb_feat, relay_src,
                               stage)[-1]
    picked = jnp.take_along_axis(logits, labels[:, :, None, None, None],
                                 axis=-1)[..., 0]
    bce = sigmoid_bce(picked, targets).mean(axis=(-1, -2))
    norm = normalizer(jnp.sum(is_pos), self.axis_name)
    return jnp.sum(jnp.where(is_pos, bce, 0.0)) / norm

  def _semantic_loss(self, logits, gt):
    """CE over non-ignored pixels (mmdet 2.8, how SCNet was trained)."""
    gt = gt.astype(jnp.int32)
    keep = gt != self.cfg.semantic_head.ignore_label
    ce = softmax_ce(logits, jnp.where(keep, gt, 0))
    norm = normalizer(jnp.sum(keep), self.axis_name)
    return self.cfg.semantic_head.loss_weight * jnp.sum(
        jnp.where(keep, ce, 0.0)) / norm

  def _glbctx_loss(self, logits, gt_labels, gt_valid):
    targets = jnp.zeros(logits.shape, jnp.float32)
    onehot = jax.nn.one_hot(gt_labels, self.cfg.num_classes) * \
        gt_valid[..., None]
    targets = jnp.maximum(targets, onehot.max(axis=1))
    return self.cfg.glbctx_loss_weight * jnp.mean(
        sigmoid_bce(logits, targets))

  # ------------------------------------------------------------- inference
  def predict(self, batch):
    """Padded detections in resized-image pixels.

    Returns dict:
      boxes [B, D, 4] float32, scores [B, D] float32, labels [B, D] int32,
      masks [B, D, 28, 28] float32 probabilities of the detected class,
      num_detections [B] int32 (D = test.max_per_img; rows past it are
      padding).
    """
    c, r, t = self.cfg, self.cfg.roi, self.cfg.test
    image_hw = batch["image_hw"]
    clip_hw = image_hw
    feats = self.features(batch["image"])
    rpn_out = self.rpn_head(feats)
    rois, roi_valid = self.proposals(feats, rpn_out, image_hw, train=False)
    # Named intermediates for probing and parity tests:
    # apply(..., mutable=["intermediates"]).
    self.sow("intermediates", "fpn", tuple(feats))
    self.sow("intermediates", "rpn", tuple(rpn_out))
    self.sow("intermediates", "proposals", (rois, roi_valid))
    (_, sem_feat), (_, glb_feat) = self._context(feats)

    logits = []
    for s in range(r.num_stages):
      cls, reg, _ = self._bbox_forward(s, feats, rois, sem_feat, glb_feat)
      logits.append(cls)
      if s < r.num_stages - 1:
        rois = ops.decode_deltas(rois, reg, stds=r.stage_target_stds[s],
                                 image_hw=clip_hw, clamp=c.delta_clamp)
    scores = jax.nn.softmax(jnp.mean(jnp.stack(logits), axis=0), axis=-1)
    stds = r.stage_target_stds[-1]
    if r.class_agnostic:
      boxes = ops.decode_deltas(rois, reg, stds=stds, image_hw=clip_hw,
                                clamp=c.delta_clamp)
      boxes = jnp.broadcast_to(boxes[:, :, None, :],
                               (*boxes.shape[:2], c.num_classes, 4))
    else:
      boxes = ops.decode_deltas(rois[:, :, None, :], reg, stds=stds,
                                image_hw=image_hw[:, None, :],
                                clamp=c.delta_clamp)
    det = jax.vmap(self._multiclass_nms)(boxes, scores[..., :c.num_classes],
                                         roi_valid)
    det_boxes, det_scores, det_labels, num = det

    relay_src = None
    if c.feature_relay:
      _, _, relay_src = self._bbox_forward(r.num_stages - 1, feats,
                                           det_boxes, sem_feat, glb_feat)
    probs = [jax.nn.sigmoid(jnp.take_along_axis(
        lg, det_labels[:, :, None, None, None], axis=-1)[..., 0])
             for lg in self._all_stage_mask_logits(
                 feats, det_boxes, sem_feat, glb_feat, relay_src)]
    return {"boxes": det_boxes, "scores": det_scores, "labels": det_labels,
            "masks": jnp.mean(jnp.stack(probs), axis=0),
            "num_detections": num}

  def _all_stage_mask_logits(self, feats, rois, sem_feat, glb_feat,
                             relay_src):
    """At test time Cascade and HTC average the sigmoid of every stage's
    mask head; SCNet and Mask R-CNN have one."""
    if self.single_mask_head:
      return self._mask_logits(feats, rois, sem_feat, glb_feat, relay_src)
    if self.cfg.roi.mask_info_flow:
      return self._mask_logits(feats, rois, sem_feat, glb_feat, relay_src,
                               stage=self.cfg.roi.num_stages - 1)
    return [self._mask_logits(feats, rois, sem_feat, glb_feat, relay_src,
                              stage=s)[0]
            for s in range(self.cfg.roi.num_stages)]

  def _multiclass_nms(self, boxes, scores, roi_valid):
    """One image: boxes [P, C, 4], scores [P, C], roi_valid [P] ->
    (boxes [D, 4], scores [D], labels [D], num) with D = max_per_img.

    Candidates above score_thr (strict) and at least min_box_size wide and
    high (torchvision's remove_small_boxes; 0 in mmdet) enter a per-class
    NMS; only the
    top `pre_nms_topk` candidates by score are considered, which is exact
    unless NMS would have to go past them to find D survivors.
    """
    t = self.cfg.test
    p, nc = scores.shape
    flat_scores = scores.reshape(-1)
    flat_boxes = boxes.reshape(-1, 4)
    labels = jnp.tile(jnp.arange(nc, dtype=jnp.int32), p)
    wh = flat_boxes[:, 2:] - flat_boxes[:, :2]
    valid = (flat_scores > t.score_thr) & jnp.repeat(roi_valid, nc) & \
        jnp.all(wh >= t.min_box_size, axis=-1)
    k = min(t.pre_nms_topk, p * nc)
    top_scores, idx = jax.lax.top_k(jnp.where(valid, flat_scores, -1.0), k)
    keep, num = ops.batched_nms(flat_boxes[idx], top_scores, labels[idx],
                                t.nms_iou, t.max_per_img,
                                valid=top_scores > t.score_thr)
    sel = idx[jnp.maximum(keep, 0)]
    ok = keep >= 0
    return (jnp.where(ok[:, None], flat_boxes[sel], 0.0),
            jnp.where(ok, flat_scores[sel], 0.0),
            jnp.where(ok, labels[sel], 0), num)

  def __call__(self, batch, train: bool = False):
    """init entry: runs the path that creates every parameter."""
    return self.loss(batch) if train else self.predict(batch)
