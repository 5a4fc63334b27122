"""Cascade Mask R-CNN's RoI heads (Cai and Vasconcelos 2018; mmdet
`CascadeRoIHead`, detectron2 `CascadeROIHeads`): box stages at rising IoU
thresholds, each trained on the previous stage's refined samples, a mask
head per stage; at test the stages' class logits are averaged and the
mask heads' probabilities too. Optionally HTC's fused semantic branch
(the baseline of SCNet's ablations is this with the branch on).

    train: candidates = proposals
           for s: sample(IoU_s) -> box head s -> losses x w_s
                  candidates = refine(samples, deltas_s)  (no gradient,
                                                           GT rows dropped)
           mask head s on the positives of stage s
    test:  rois = proposals; for s: logits_s, rois = decode(deltas_s)
"""
from typing import Any, Sequence

from scnet_jax import ops
from scnet_jax.errors import ConfigError
from scnet_jax.models.losses import semantic_ce
from scnet_jax.models.roi_heads.semantic_head import SemanticHead
from scnet_jax.models.roi_heads.standard import StandardRoIHeads
from scnet_jax.models.structures import SEMANTIC_KEY


class CascadeRoIHeads(StandardRoIHeads, kw_only=True):
  """Box stages as long as the stage_* tuples; class-agnostic regression
  (the next stage needs one box per RoI) unless there is one stage."""
  stage_iou_thrs: Sequence[float] = (0.5, 0.6, 0.7)
  stage_loss_weights: Sequence[float] = (1.0, 0.5, 0.25)
  stage_target_stds: Sequence[Sequence[float]] = (
      (0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1),
      (0.033, 0.033, 0.067, 0.067))
  class_agnostic: bool = True
  # The fused semantic branch (HTC `FusedSemanticHead`): its RoI feature
  # is added to every box and mask RoI feature. semantic_head: num_classes,
  # num_convs, conv_to_res, fusion_level, ignore_label, loss_weight.
  semantic: bool = False
  semantic_head: Any = None

  @classmethod
  def check_config(cls, cfg):
    n = cls.check_stages(cfg)
    if n > 1 and not cfg.class_agnostic:
      raise ConfigError(
          f"model.roi_heads: class_agnostic=False needs one box stage, got "
          f"{n}: a cascade refines one class-agnostic box per RoI")

  @classmethod
  def train_batch_keys(cls, cfg):
    keys = super().train_batch_keys(cfg)
    return keys + (SEMANTIC_KEY,) if cfg.semantic else keys

  def setup(self):
    super().setup()
    if self.semantic:
      h = self.semantic_head
      # `semantic_head` is the config field; the module keeps mmdet's name.
      self.semantic_branch = SemanticHead(
          num_classes=h.num_classes, num_convs=h.num_convs,
          conv_to_res=h.conv_to_res, fusion_level=h.fusion_level,
          channels=self.channels, dtype=self.dtype, name="semantic_head")

  def context_and_losses(self, feats, canvas, gt=None):
    ctx, losses = super().context_and_losses(feats, canvas, gt)
    if not self.semantic:
      return ctx, losses
    logits, embedding = self.semantic_branch(feats, ctx.canvas)
    ctx = ctx.replace(
        semantic=embedding,
        semantic_stride=self.feature_strides[self.semantic_head.fusion_level])
    if gt is not None:
      losses["loss_semantic_seg"] = self.semantic_loss(logits, gt.semantic)
    return ctx, losses

  def semantic_loss(self, logits, gt):
    """CE over non-ignored pixels (mmdet 2.8, how SCNet was trained)."""
    cfg = self.semantic_head
    return cfg.loss_weight * semantic_ce(logits, gt, cfg.ignore_label,
                                         self.axis_name, cfg.avg_non_ignore)

  def train_box_stages(self, feats, proposals, gt, image_hw, image_keys,
                       ctx):
    stages = []
    boxes, valid = proposals.boxes, proposals.valid
    for s in range(self.num_stages):
      smp = self.sample(s, image_keys, boxes, valid, gt)
      stages.append(self.box_stage_loss(s, feats, smp, ctx))
      boxes, valid = self.refine(s, stages[-1], image_hw)
    return stages

  def predict_box_stages(self, feats, rois, image_hw, ctx):
    logits = []
    for s in range(self.num_stages):
      cls, deltas, _ = self.box_forward(s, feats, rois, ctx)
      logits.append(cls)
      if s < self.num_stages - 1:
        rois = ops.decode_deltas(rois, deltas,
                                 stds=self.stage_target_stds[s],
                                 image_hw=image_hw, clamp=self.delta_clamp)
    return rois, logits, deltas
