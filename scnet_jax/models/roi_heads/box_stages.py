"""Box stages over pyramid RoIAlign, shared by StandardRoIHeads (and its
cascades) and MNC: each stage's loss weight and delta coder, the box
loss (softmax CE + SmoothL1 on the deltas of each RoI's label) and the
RoI features (mmdet's `SingleRoIExtractor` level rule, plus the context's
semantic RoI feature and global vector).

Shapes: B images, S samples per image, K RoIs, C = num_classes.
"""
from typing import Sequence

import jax
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.errors import ConfigError
from scnet_jax.models.losses import normalizer, smooth_l1, softmax_ce
from scnet_jax.models.roi_heads.base import RoIHeadsBase


class BoxStagesBase(RoIHeadsBase, kw_only=True):
  """RoIHeadsBase plus the box stages' fields (one entry per stage in
  each stage_* tuple) and their losses."""
  stage_loss_weights: Sequence[float] = (1.0,)
  stage_target_stds: Sequence[Sequence[float]] = ((0.1, 0.1, 0.2, 0.2),)
  class_agnostic: bool = False
  loss_bbox_beta: float = 1.0   # SmoothL1 beta; 0 = L1 (Mask R-CNN)
  # The level rule of RoIAlign over the pyramid (ops.map_roi_levels).
  finest_scale: int = 56
  level_mapper: str = "mmdet"

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

  @property
  def roi_box_grad(self):
    """Whether RoIAlign is differentiated in the RoI coordinates (MNC's
    RoI warping); here the RoIs are constants."""
    return False

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
