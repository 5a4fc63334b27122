"""Mask R-CNN's RoI heads (mmdet `StandardRoIHead`, detectron2
`StandardROIHeads`), the box-then-mask flow the cascades, HTC and SCNet
reuse (the fields and pieces every RoI heads class shares are in base.py
and box_stages.py).

    proposals -> sample (stage IoU) -> RoIAlign 7x7 -> box head -> losses
              -> positives -> RoIAlign 14x14 -> mask head -> BCE
    test: proposals -> box head -> softmax, decode -> multiclass NMS
          -> RoIAlign 14x14 of the detections -> mask head -> sigmoid

The fields are BoxStagesBase's plus the mask head's. The subclasses
change only what differs, through these methods:
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

import jax
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.errors import ConfigError
from scnet_jax.models.losses import merge_losses
from scnet_jax.models.roi_heads.bbox_head import BBoxHead
from scnet_jax.models.roi_heads.box_stages import BoxStagesBase
from scnet_jax.models.roi_heads.mask_head import MaskHead
from scnet_jax.models.structures import FeatureContext, Samples


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


class StandardRoIHeads(BoxStagesBase, kw_only=True):
  """One box stage and one mask head (Mask R-CNN)."""
  TTA = True

  # Mask head (FCNMaskHead).
  mask_num_convs: int = 4
  mask_conv_to_res: bool = False
  # How each mask head's upsample and conv_logits start: "kaiming"
  # (FCNMaskHead.init_weights, as mmdetection 2.x runs it for every head)
  # or "torch" (PyTorch's defaults: mmdetection 3.3 keeps the per-stage
  # mask heads of Cascade Mask R-CNN and HTC in a torch ModuleList that
  # its init_weights never enters).
  mask_output_init: str = "kaiming"
  CHOICES = {**BoxStagesBase.CHOICES,
             "mask_output_init": MaskHead.OUTPUT_INITS}

  @classmethod
  def check_config(cls, cfg):
    """Refuses combinations that cannot work (ConfigError, one line)."""
    n = cls.check_stages(cfg)
    if n != 1:
      raise ConfigError(f"model.roi_heads: type {cfg.type!r} has one box "
                        f"stage, got {n} (a cascade type has several)")

  @property
  def num_stages(self):
    return len(self.stage_iou_thrs)

  @property
  def num_mask_heads(self):
    return self.num_stages

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
                    channels=self.channels, dtype=self.dtype,
                    output_init=self.mask_output_init)

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

  def mean_mask_probs(self, logits, labels):
    """Mean over heads of sigmoid(logits [B * D, M, M, C]) at each
    detection's label [B, D] -> [B, D, M, M]."""
    bsz, d = labels.shape
    probs = [jax.nn.sigmoid(jnp.take_along_axis(
        lg.reshape(bsz, d, *lg.shape[1:]), labels[:, :, None, None, None],
        axis=-1)[..., 0]) for lg in logits]
    return jnp.mean(jnp.stack(probs), axis=0)
