"""CoMask's RoI heads ("Accurate Instance Segmentation via Collaborative
Learning", Chen, Hu, Xiao, Zhang, Wang; the authors' `SID` detector on
D2Det, clelouch/CoMask): a classification-only box head, and one
collaborative head (roi_heads/comask_head.py) whose dense box regression
is weighted by its own mask.

    train: proposals -> sample (IoU 0.5) -> RoIAlign 7x7 -> 2 FC -> CE x2
           positives -> jitter +-15% -> at most reg_samples_per_image
           -> RoIAlign 14x14 -> CoMaskHead -> reg, mask, mask IoU
             loss_reg:      IoU loss of the 49 cell boxes vs the gt box,
                            weighted by w = p * (p > 0.5), p the label's
                            mask probability resized to 7x7
                            (stop_gradient: the box loss never reaches the
                            mask layers): every cell x the batch's mean w
                            (reg_weighting="mean", the authors' code as it
                            runs) or each cell x its own w ("cell"),
                            x reg_loss_weight (2)
             loss_mask:     BCE on the label's 28x28 mask
             loss_mask_iou: MSE on the IoU of the binarised mask with the
                            whole gt mask, targets in (0.1, 1], x0.5
    test:  proposals -> softmax -> multiclass NMS (boxes = proposals)
           -> CoMaskHead on the detections -> box = sum_c w_c b_c / sum w_c
              (w = p, unthresholded) -> RoIAlign again -> CoMaskHead
           -> masks; mask score = score + mask_iou_weight x mask IoU

`collaborative=False` (the paper's ablation): unit cell weights in the
loss and the plain mean of the 49 cell boxes at test.

Every RoI, box or mask, is pooled on the level of its area ratio to the
image (ops/ratio_roi_align.py). Differences from the authors' code: the
cap on the head's positives is per image (reg_samples_per_image = 96,
their 192 per GPU of 2 images), so a batch splits over devices the same
way; the cell weights are detached (their code lets the box loss into the
mask logits through them; the paper's description detaches them); losses
are means over the valid positives (theirs over every sampled row, all
valid there). No test-time augmentation (TTA is not declared: the boxes
come from the mask head after the NMS, not from box stages the TTA views
could merge).

Shapes: B images, S sampled RoIs, K = reg_samples_per_image, D
detections, C classes.
"""
import jax
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.errors import ConfigError
from scnet_jax.models.losses import iou_loss, normalizer, softmax_ce
from scnet_jax.models.roi_heads.base import RoIHeadsBase
from scnet_jax.models.roi_heads.bbox_head import BBoxHead
from scnet_jax.models.roi_heads.comask_head import CoMaskHead
from scnet_jax.models.roi_heads.deform_roi_pool_pack import DeformRoIPoolPack
from scnet_jax.models.structures import keys_for
from scnet_jax.ops.ratio_roi_align import ratio_roi_align, ratio_roi_levels

POOLINGS = ("align", "dpool", "mdpool")
REG_WEIGHTINGS = ("mean", "cell")


class CoMaskRoIHeads(RoIHeadsBase, kw_only=True):
  """CoMask: one box stage (stage_iou_thrs of one entry). Fields beyond
  RoIHeadsBase's:

  collaborative: mask-weighted dense regression (False: unweighted).
  loss_cls_weight, reg_loss_weight, mask_iou_loss_weight: 2, 2, 0.5.
  reg_num_convs: the trunk's convs (10). reg_fc_dim: the IoU branch FCs.
  reg_samples_per_image: cap on the positives given to the head.
  jitter: amplitude of the positives' random jitter (0.15).
  mask_iou_weight: mask score = cls score + this x predicted mask IoU.
  max_level: of the area-ratio level rule.
  roi_pooling: the box head's pooling, RoIAlign or deformable.
  """
  collaborative: bool = True
  loss_cls_weight: float = 2.0
  reg_loss_weight: float = 2.0
  mask_iou_loss_weight: float = 0.5
  reg_num_convs: int = 10
  reg_fc_dim: int = 1024
  reg_samples_per_image: int = 96
  jitter: float = 0.15
  mask_iou_weight: float = 0.3
  max_level: int = 3
  # Deformable pooling's adaptive sampling keeps a static cap: its offsets
  # move the samples, so the exact separable RoIAlign does not apply.
  deform_max_grid: int = 4
  reg_weight_thr: float = 0.5
  # mmdet's MaskIoUHead and the authors' code compare mask *logits* with
  # 0.5 when binarising the prediction for the IoU target.
  mask_iou_logit_thr: float = 0.5
  iou_target_range: tuple = (0.1, 1.0)
  # Box-head pooling: "align" (RoIAlign), "dpool" / "mdpool" (deformable,
  # plain / modulated; one pack per level, as mmdet's extractor builds).
  roi_pooling: str = "align"
  # How the cell weights w enter the dense IoU loss. "mean" (the authors'
  # code as it runs): their IoULoss multiplies the loss [N * 49] by w
  # [N * 49, 1], a broadcast to [N * 49, N * 49] whose mean is mean(loss)
  # x mean(w): every cell regresses, scaled by the batch's mean weight.
  # "cell" (the paper's description): each cell's loss x its
  # own w, so the cells outside the predicted mask never learn, though the
  # test-time mean still weights them by their (unthresholded) p.
  reg_weighting: str = "mean"
  # > 0: a second per-class NMS at this IoU on the refined boxes (D2Det's
  # detection-only test path has one, soft-NMS 0.5; the authors' CoMask
  # and D2Det mask paths have none: 0, the default).
  refined_nms_iou: float = 0.0

  @classmethod
  def check_config(cls, cfg):
    if len(cfg.stage_iou_thrs) != 1:
      raise ConfigError(f"model.roi_heads.stage_iou_thrs: CoMask has one "
                        f"box stage, got {len(cfg.stage_iou_thrs)} entries")
    if cfg.mask_roi_size != 2 * cfg.roi_size:
      raise ConfigError(f"model.roi_heads.mask_roi_size: CoMask's trunk "
                        f"halves it to the {cfg.roi_size}x{cfg.roi_size} "
                        f"regression map, got {cfg.mask_roi_size}")
    if cfg.mask_size != 4 * cfg.roi_size:
      raise ConfigError(f"model.roi_heads.mask_size: two deconvs make "
                        f"{4 * cfg.roi_size}, got {cfg.mask_size}")
    if cfg.reg_samples_per_image < 1:
      raise ConfigError("model.roi_heads.reg_samples_per_image: at least 1")
    if cfg.reg_weighting not in REG_WEIGHTINGS:
      raise ConfigError(f"model.roi_heads.reg_weighting: one of "
                        f"{REG_WEIGHTINGS}, got {cfg.reg_weighting!r}")
    if cfg.roi_pooling not in POOLINGS:
      raise ConfigError(f"model.roi_heads.roi_pooling: one of {POOLINGS}, "
                        f"got {cfg.roi_pooling!r}")

  def setup(self):
    self.bbox_head = [BBoxHead(num_classes=self.num_classes, with_reg=False,
                               num_shared_fcs=self.num_shared_fcs,
                               fc_dim=self.fc_dim, dtype=self.dtype)]
    self.comask_head = CoMaskHead(num_classes=self.num_classes,
                                  num_convs=self.reg_num_convs,
                                  channels=self.channels,
                                  fc_dim=self.reg_fc_dim, dtype=self.dtype)
    if self.roi_pooling != "align":
      self.box_pool = [DeformRoIPoolPack(
          spatial_scale=1.0 / s, output_size=self.roi_size,
          sampling_ratio=self.sampling_ratio,
          max_grid=self.deform_max_grid,
          modulated=self.roi_pooling == "mdpool", dtype=self.dtype)
                       for s in self.feature_strides[:self.num_roi_levels]]

  @property
  def num_reg_samples(self):
    return min(self.reg_samples_per_image, self.num_pos_slots)

  # ------------------------------------------------------------ pieces
  def ratio_features(self, feats, rois, size, canvas):
    """RoIAlign of rois [B, K, 4] on the area-ratio levels ->
    [B * K, size, size, C]."""
    strides = tuple(self.feature_strides[:self.num_roi_levels])
    # Bilinear taps at the canvas border clamp there, as on the canvas
    # (StandardRoIHeads.roi_features).
    x = ratio_roi_align(feats[:self.num_roi_levels], rois, canvas.image_hw,
                        size, strides, self.sampling_ratio, self.aligned,
                        self.max_level, canvas_hw=canvas.hw)
    return x.reshape(-1, *x.shape[2:])

  def class_logits(self, feats, rois, canvas):
    """rois [B, K, 4] -> [B, K, C + 1] class logits."""
    bsz, k = rois.shape[:2]
    if self.roi_pooling == "align":
      x = self.ratio_features(feats, rois, self.roi_size, canvas)
    else:
      lvl = ratio_roi_levels(rois, canvas.image_hw, self.num_roi_levels,
                             self.max_level)
      x = 0
      for i, pool in enumerate(self.box_pool):
        x = x + jnp.where((lvl == i)[..., None, None, None],
                          pool(feats[i], rois), 0)
      x = x.reshape(-1, *x.shape[2:]).astype(feats[0].dtype)
    cls, _, _ = self.bbox_head[0](x)
    return cls.reshape(bsz, k, -1)

  def run_head(self, feats, boxes, labels, canvas):
    """CoMaskHead on boxes [B, K, 4] with labels [B, K] -> (reg [B, K, 7,
    7, 4], mask logits of the labels [B, K, 28, 28], all mask logits
    [B * K, 28, 28, C], mask IoU of the labels [B, K])."""
    bsz, k = boxes.shape[:2]
    x = self.ratio_features(feats, boxes, self.mask_roi_size, canvas)
    lab = jnp.minimum(labels, self.num_classes - 1).reshape(-1)
    reg, logits, iou = self.comask_head(x, lab)
    picked = jnp.take_along_axis(logits, lab[:, None, None, None],
                                 axis=-1)[..., 0]
    iou = jnp.take_along_axis(iou, lab[:, None], axis=-1)[:, 0]
    return (reg.reshape(bsz, k, *reg.shape[1:]),
            picked.reshape(bsz, k, *picked.shape[1:]), logits,
            iou.reshape(bsz, k))

  def cell_boxes(self, boxes, reg):
    """boxes [..., 4], reg [..., m, m, 4] (l, t, r, b per unit size) ->
    [..., m, m, 4] each cell's box (x1, y1, x2, y2)."""
    m = reg.shape[-2]
    c = (jnp.arange(m, dtype=jnp.float32) + 0.5) / m
    w = (boxes[..., 2] - boxes[..., 0])[..., None, None]
    h = (boxes[..., 3] - boxes[..., 1])[..., None, None]
    cx = boxes[..., 0, None, None] + w * c[None, :]
    cy = boxes[..., 1, None, None] + h * c[:, None]
    return jnp.stack([cx - reg[..., 0] * w, cy - reg[..., 1] * h,
                      cx + reg[..., 2] * w, cy + reg[..., 3] * h], axis=-1)

  def cell_weights(self, mask_logits, threshold):
    """Detached [..., 28, 28] label mask logits -> [..., 7, 7] weights:
    the probability resized (bilinear, align_corners=True), zeroed at or
    below `threshold` (None: kept)."""
    m = self.roi_size
    p = jax.nn.sigmoid(ops.resize_bilinear_align_corners(
        jax.lax.stop_gradient(mask_logits)[..., None], (m, m))[..., 0])
    return p if threshold is None else jnp.where(p > threshold, p, 0.0)

  def dense_reg_loss(self, cell, weight, valid):
    """Mean of the cell losses cell [B, K, m, m] of the valid [B, K]
    positives, weighted by weight [B, K, m, m] (None: unweighted) as
    reg_weighting says -> float32 scalar."""
    keep = valid[..., None, None]
    cells = normalizer(jnp.sum(valid), self.axis_name) * (
        cell.shape[-1] * cell.shape[-2])
    cell = jnp.where(keep, cell, 0.0)
    if weight is not None:
      weight = jnp.where(keep, weight, 0.0)
      if self.reg_weighting == "mean":
        # One scalar, the batch's mean weight (pmean: over all devices').
        total = jnp.sum(weight)
        if self.axis_name is not None:
          total = jax.lax.pmean(total, self.axis_name)
        weight = total / cells
      cell = cell * weight
    return jnp.sum(cell) / cells

  def jittered(self, keys, boxes, image_hw):
    """Boxes [B, K, 4] with centres moved and sizes scaled by up to
    +-jitter of their size (the authors' _random_jitter), clipped."""
    off = jax.vmap(lambda k: jax.random.uniform(
        k, (boxes.shape[1], 4), minval=-self.jitter,
        maxval=self.jitter))(keys)
    cxcy = (boxes[..., :2] + boxes[..., 2:]) / 2
    wh = jnp.abs(boxes[..., 2:] - boxes[..., :2])
    cxcy = cxcy + wh * off[..., :2]
    wh = wh * (1 + off[..., 2:])
    out = jnp.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=-1)
    return ops.clip_boxes(out, image_hw)

  def reg_subset(self, keys, pos):
    """At most num_reg_samples positives per image, drawn at random from
    the positive slots -> Samples [B, num_reg_samples]."""
    n = self.num_reg_samples

    def one(k, is_pos):
      r = jax.random.uniform(k, is_pos.shape)
      return jax.lax.top_k(jnp.where(is_pos, r, -1.0), n)[1]

    idx = jax.vmap(one)(keys, pos.is_pos)
    return jax.tree.map(lambda a: jnp.take_along_axis(
        a, idx.reshape(*idx.shape, *([1] * (a.ndim - 2))), axis=1), pos)

  def area_ratio(self, gt, boxes, gt_index):
    """Share of each matched gt mask's area inside boxes [B, K, 4], from
    the gt crops (each crop cell counted at its centre) -> [B, K]."""
    crops = jnp.take_along_axis(gt.mask_crops, gt_index[..., None, None],
                                axis=1).astype(jnp.float32)
    win = jnp.take_along_axis(gt.mask_windows, gt_index[..., None], axis=1)
    r = crops.shape[-1]
    c = (jnp.arange(r, dtype=jnp.float32) + 0.5) / r
    xs = win[..., 0, None] + (win[..., 2] - win[..., 0])[..., None] * c
    ys = win[..., 1, None] + (win[..., 3] - win[..., 1])[..., None] * c
    inx = (xs >= boxes[..., 0, None]) & (xs <= boxes[..., 2, None])
    iny = (ys >= boxes[..., 1, None]) & (ys <= boxes[..., 3, None])
    inside = iny[..., :, None] & inx[..., None, :]
    total = jnp.sum(crops, axis=(-1, -2))
    return jnp.sum(crops * inside, axis=(-1, -2)) / jnp.maximum(total, 1e-7)

  # ------------------------------------------------------------ entries
  def loss(self, feats, proposals, gt, canvas, image_keys):
    image_hw = canvas.image_hw
    losses = {}
    smp = self.sample(0, image_keys, proposals.boxes, proposals.valid, gt)
    cls = self.class_logits(feats, smp.rois, canvas)
    norm = normalizer(jnp.sum(smp.valid), self.axis_name)
    losses["loss_cls"] = self.loss_cls_weight * jnp.sum(
        softmax_ce(cls, smp.labels) * smp.valid) / norm

    pos = self.reg_subset(keys_for(image_keys, "comask_subset"),
                          smp.first(self.num_pos_slots))
    pos = pos.replace(rois=self.jittered(keys_for(image_keys, "comask_jitter"),
                                         pos.rois, image_hw))
    reg, picked, logits, iou = self.run_head(feats, pos.rois, pos.labels,
                                             canvas)
    valid = pos.is_pos
    norm = normalizer(jnp.sum(valid), self.axis_name)

    # Dense regression: the cells' boxes against the matched gt box.
    pred = self.cell_boxes(pos.rois, reg)
    target = jnp.broadcast_to(pos.target_boxes[:, :, None, None, :],
                              pred.shape)
    weight = (self.cell_weights(picked, self.reg_weight_thr)
              if self.collaborative else None)
    losses["loss_reg"] = self.reg_loss_weight * self.dense_reg_loss(
        iou_loss(pred, target), weight, valid)

    losses["loss_mask"] = self.mask_loss(logits, pos, gt, image_hw)

    # Mask IoU: binarised prediction vs the whole gt mask, whose area is
    # the target's area over the share of the mask inside the box.
    targets = self.positive_mask_targets(pos, gt, image_hw)
    binary = (jax.lax.stop_gradient(picked) > self.mask_iou_logit_thr
              ).astype(jnp.float32)
    overlap = jnp.sum(binary * targets, axis=(-1, -2))
    full = jnp.sum(targets, axis=(-1, -2)) / (
        self.area_ratio(gt, ops.clip_boxes(pos.rois, image_hw),
                        pos.gt_index) + 1e-7)
    iou_t = jnp.maximum(overlap / (jnp.abs(jnp.sum(binary, axis=(-1, -2)) +
                                           full - overlap) + 1e-7), 0.0)
    lo, hi = self.iou_target_range
    keep = valid & (iou_t > lo) & (iou_t <= hi)
    losses["loss_mask_iou"] = self.mask_iou_loss_weight * jnp.sum(
        jnp.where(keep, (iou - iou_t) ** 2, 0.0)) / norm
    return losses

  def predict(self, feats, proposals, canvas):
    """Detections with [B, D, 28, 28] masks over the refined boxes and
    mask_scores."""
    cls = self.class_logits(feats, proposals.boxes, canvas)
    scores = jax.nn.softmax(cls, axis=-1)[..., :self.num_classes]
    dets = self.detect(proposals.boxes[:, :, None, :], scores,
                       proposals.valid)
    boxes = self.refine_boxes(feats, dets.boxes, dets.labels, canvas)
    if self.refined_nms_iou > 0:
      dets = self.second_nms(dets.replace(boxes=boxes))
      boxes = dets.boxes
    _, picked, _, iou = self.run_head(feats, boxes, dets.labels, canvas)
    kept = (jnp.arange(boxes.shape[1])[None, :] <
            dets.num_detections[:, None])
    return dets.replace(
        boxes=jnp.where(kept[..., None], boxes, 0.0),
        masks=jax.nn.sigmoid(picked),
        mask_scores=jnp.where(kept, dets.scores + self.mask_iou_weight * iou,
                              0.0))

  def second_nms(self, dets):
    """Per-class NMS at refined_nms_iou over the refined detections (they
    converge on the same objects); survivors first, in score order."""
    d = dets.boxes.shape[1]

    def one(boxes, scores, labels, num):
      valid = jnp.arange(d) < num
      keep, n = ops.batched_nms(boxes, scores, labels, self.refined_nms_iou,
                                d, valid=valid)
      kept = keep >= 0
      sel = jnp.maximum(keep, 0)
      return (jnp.where(kept[:, None], boxes[sel], 0.0),
              jnp.where(kept, scores[sel], 0.0),
              jnp.where(kept, labels[sel], 0), n)

    boxes, scores, labels, num = jax.vmap(one)(
        dets.boxes, dets.scores, dets.labels, dets.num_detections)
    return dets.replace(boxes=boxes, scores=scores, labels=labels,
                        num_detections=num)

  def refine_boxes(self, feats, boxes, labels, canvas):
    """Detections' boxes [B, D, 4] -> the mask-weighted (collaborative) or
    plain mean of the head's 49 cell boxes, clipped to the image."""
    reg, picked, _, _ = self.run_head(feats, boxes, labels, canvas)
    cells = self.cell_boxes(boxes, reg)
    w = (self.cell_weights(picked, None) if self.collaborative else
         jnp.ones(cells.shape[:-1]))
    refined = jnp.sum(cells * w[..., None], axis=(-2, -3)) / (
        jnp.sum(w, axis=(-1, -2))[..., None] + 1e-5)
    return ops.clip_boxes(refined, canvas.image_hw)
