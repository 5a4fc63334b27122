"""Multi-task Network Cascades' RoI heads (Dai, He and Sun, CVPR 2016; the
authors' Caffe code `daijifeng001/MNC`): stages 2 and 3 of the cascade,
the RPN being stage 1.

    stage 1: RPN proposals, boxes with their gradient (model.rpn.box_grad)
    sample 64 RoIs per image, 30 % foreground (the authors' solver)
    stage 2: RoIAlign 14x14 -> FC 256 -> FC m*m: a class-agnostic mask,
             sigmoid BCE x2 on the positives
    stage 3: the same RoI features, times the mask resized to 14x14, and
             plain -> 2 FC each -> concatenated -> (N+1)-way softmax and
             class-specific box regression
    5 stages (train_stages=5): the RoIs moved by their best class's
             deltas (with gradient, the authors' stage bridge), labelled
             again against the ground truth (which is added to them), run
             through stages 2 and 3 again with the same weights; its
             losses are named `ext.*` (the authors' `*_ext` layers).

Every later loss depends on the earlier stages' outputs and nothing is
detached between them: the stage-3 loss reaches the mask head through
the mask it multiplies, and, through the RoI coordinates (RoIAlign
differentiated in the box, `box_grad`), the RPN's regression; the 5-stage
losses also reach stage 3's regression through the moved boxes. Targets
(box deltas, mask crops, labels) are constants of the RoIs.

Test (the paper's inference, `test_stages`): stages 2-3 on the proposals,
and with 5 stages again on the proposals moved by their best class's
deltas; the 2P (boxes, masks, scores) candidates go through per-class NMS
(model.test.nms_iou 0.3) to 100 detections, whose masks are replaced by
mask voting (ops.mask_voting: candidates of box IoU >= vote_iou, weighted
by their score of the detection's class, binarised at model.test.mask_thr
0.4).

Its loss and predict are its own, not StandardRoIHeads' box-then-mask
hooks: the mask head feeds the classifier of the same RoIs. It has no
test-time augmentation (TTA is not declared: 5-stage inference and mask
voting are not the steps the TTA views merge).
"""
import functools

import jax
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.errors import ConfigError
from scnet_jax.models.roi_heads.box_stages import BoxStagesBase
from scnet_jax.models.roi_heads.mnc_heads import (MaskConditionedBoxHead,
                                                  MaskRegressionHead)
from scnet_jax.models.roi_heads.sampling import label_and_sample_proposals
from scnet_jax.models.structures import FeatureContext, keys_for

CASCADE_LENGTHS = (3, 5)


class MNCRoIHeads(BoxStagesBase, kw_only=True):
  """Stages 2 and 3 of MNC (one set of weights, run once or twice); one
  box stage of BoxStagesBase's fields plus its own.

  mask_size is m, the stage-2 mask side (28; the authors' code uses 21);
  num_shared_fcs and fc_dim size each stage-3 pathway; roi_size is the
  side the 14x14 (mask_roi_size) features are max-pooled to for them.
  """
  num_samples: int = 64
  pos_fraction: float = 0.3
  match_low_quality: bool = False
  fc_dim: int = 4096
  mask_fc_dim: int = 256
  mask_loss_weight: float = 2.0
  train_stages: int = 3
  test_stages: int = 5
  # RoIAlign differentiated in the RoI coordinates (the paper's RoI
  # warping); False trains with the boxes as constants.
  box_grad: bool = True
  # > 0: each stage-3 delta's gradient from the moved boxes bounded by it
  # (the authors' stage bridge: 1 / 512).
  box_grad_clip: float = 0.0
  vote_iou: float = 0.5
  max_voters: int = 64

  @classmethod
  def check_config(cls, cfg):
    n = cls.check_stages(cfg)
    if n != 1:
      raise ConfigError(f"model.roi_heads: MNC has one box stage (run once "
                        f"or twice), got {n}")
    for field in ("train_stages", "test_stages"):
      if cfg[field] not in CASCADE_LENGTHS:
        raise ConfigError(f"model.roi_heads.{field}: one of "
                          f"{CASCADE_LENGTHS}, got {cfg[field]!r}")
    if cfg.class_agnostic:
      raise ConfigError("model.roi_heads.class_agnostic: MNC regresses "
                        "class-specific boxes, set it False")
    if cfg.mask_roi_size % cfg.roi_size:
      raise ConfigError(
          f"model.roi_heads: the stage-3 pathways max-pool the "
          f"{cfg.mask_roi_size}x{cfg.mask_roi_size} RoI features to "
          f"roi_size, which must divide it, got {cfg.roi_size}")

  @property
  def roi_box_grad(self):
    return self.box_grad

  def setup(self):
    # Lists of one, named as the other RoI heads' first stage.
    self.bbox_head = [MaskConditionedBoxHead(
        num_classes=self.num_classes, num_fcs=self.num_shared_fcs,
        fc_dim=self.fc_dim, pool=self.mask_roi_size // self.roi_size,
        dtype=self.dtype)]
    self.mask_head = [MaskRegressionHead(mask_size=self.mask_size,
                                         fc_dim=self.mask_fc_dim,
                                         dtype=self.dtype)]

  # ------------------------------------------------------------ entries
  def loss(self, feats, proposals, gt, canvas, image_keys):
    image_hw = canvas.image_hw
    ctx, losses = FeatureContext(canvas=canvas), {}
    smp = self.sample(0, image_keys, proposals.boxes, proposals.valid, gt)
    rounds = self.train_stages // 2
    for r in range(rounds):
      logits, cls, deltas = self.cascade(feats, smp.rois, ctx)
      name = (lambda n: n) if r == 0 else (lambda n: f"ext.{n}")
      losses[name("loss_mask")] = self.mask_loss_weight * self.mask_loss(
          logits.reshape(-1, *logits.shape[2:], 1),
          smp.replace(labels=jnp.zeros_like(smp.labels)), gt, image_hw)
      losses[name("loss_cls")], losses[name("loss_bbox")] = \
          self.box_losses(0, smp, cls, deltas)
      if r + 1 < rounds:
        smp = self.relabel(self.regress(smp.rois, cls, deltas, image_hw),
                           smp.valid, gt, image_keys)
    return losses

  def predict(self, feats, proposals, canvas):
    """Detections with [B, D, mask_size, mask_size] voted masks over their
    (tight) boxes."""
    image_hw = canvas.image_hw
    ctx = FeatureContext(canvas=canvas)
    rois, valid = proposals.boxes, proposals.valid
    cands = []
    rounds = self.test_stages // 2
    for r in range(rounds):
      logits, cls, deltas = self.cascade(feats, rois, ctx)
      scores = jax.nn.softmax(cls, axis=-1)[..., :self.num_classes]
      cands.append((rois, jax.nn.sigmoid(logits), scores, valid))
      if r + 1 < rounds:
        rois = self.regress(rois, cls, deltas, image_hw)
    boxes, masks, scores, valid = (jnp.concatenate(c, axis=1)
                                   for c in zip(*cands))
    dets = self.detect(boxes[:, :, None, :], scores, valid)
    d = dets.boxes.shape[1]
    kept = jnp.arange(d)[None, :] < dets.num_detections[:, None]
    vote = functools.partial(ops.mask_voting, iou_thr=self.vote_iou,
                             mask_thr=self.test.mask_thr,
                             max_voters=self.max_voters)
    voted_boxes, voted_masks = jax.vmap(vote)(
        dets.boxes, dets.labels, kept, boxes, masks, scores, valid)
    return dets.replace(boxes=voted_boxes, masks=voted_masks)

  # ------------------------------------------------------------ pieces
  def cascade(self, feats, rois, ctx):
    """Stages 2 and 3 on rois [B, K, 4] -> (mask logits [B, K, M, M],
    class logits [B, K, C + 1], deltas [B, K, C, 4])."""
    bsz, k = rois.shape[:2]
    x = self.roi_features(feats, rois, self.mask_roi_size, ctx)
    logits = self.mask_head[0](x)
    cls, deltas, _ = self.bbox_head[0](x, jax.nn.sigmoid(logits))
    return (logits.reshape(bsz, k, *logits.shape[1:]),
            cls.reshape(bsz, k, -1), deltas.reshape(bsz, k, *deltas.shape[1:]))

  def regress(self, rois, cls, deltas, image_hw):
    """The authors' stage bridge: rois [B, K, 4] moved by the deltas of
    their best-scoring object class, clipped to the image; differentiable
    in rois and deltas."""
    best = jnp.argmax(cls[..., :self.num_classes], axis=-1)
    d = jnp.take_along_axis(deltas, best[..., None, None], axis=2)[:, :, 0]
    d = ops.clip_gradient(d, self.box_grad_clip)
    return ops.decode_deltas(rois, d, stds=self.stage_target_stds[0],
                             image_hw=image_hw, clamp=self.delta_clamp)

  def relabel(self, boxes, valid, gt, image_keys):
    """Samples of the 5-stage rounds: every valid box (and the ground
    truth, when add_gt_as_proposals), labelled at the stage IoU, positives
    first, none dropped (the authors' stage bridge keeps them all)."""
    g = gt.boxes.shape[1]
    n = boxes.shape[1] + (g if self.add_gt_as_proposals else 0)
    return label_and_sample_proposals(
        keys_for(image_keys, "mnc_relabel"), boxes, valid, gt.boxes,
        gt.labels, gt.valid, iou_thr=self.stage_iou_thrs[0],
        match_low_quality=self.match_low_quality, num_samples=n,
        pos_fraction=1.0, add_gt_as_proposals=self.add_gt_as_proposals,
        num_classes=self.num_classes)
