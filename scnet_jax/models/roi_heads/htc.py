"""Hybrid Task Cascade's RoI heads (Chen et al. 2019; mmdet
`HybridTaskCascadeRoIHead`): Cascade Mask R-CNN with the fused semantic
branch, plus

- interleaved execution: mask head s trains on stage s's boxes *after*
  stage s refined them (sampled again at stage s's IoU), not on its
  input RoIs;
- mask information flow: mask head s adds the conv feature of heads
  0..s-1, run on the same RoIs, through its 1x1 `conv_res`.

At test every head runs in the chain on the detections and their
probabilities are averaged (`test_mask_merge="all_stages"`, mmdet 1.x /
2.x, which produced the published numbers), or only the last head's is
kept (`"last_stage"`, what mmdet 3.3's `HybridTaskCascadeRoIHead` does:
its `aug_masks.append` sits after the stage loop).
"""
from scnet_jax.errors import ConfigError
from scnet_jax.models.roi_heads.cascade import CascadeRoIHeads
from scnet_jax.models.roi_heads.mask_head import MaskHead


class HTCRoIHeads(CascadeRoIHeads, kw_only=True):
  semantic: bool = True
  interleaved: bool = True
  mask_info_flow: bool = True
  test_mask_merge: str = "all_stages"

  MASK_MERGES = ("all_stages", "last_stage")

  @classmethod
  def check_config(cls, cfg):
    super().check_config(cfg)
    if cfg.test_mask_merge not in cls.MASK_MERGES:
      raise ConfigError(
          f"model.roi_heads.test_mask_merge: one of {list(cls.MASK_MERGES)}"
          f", got {cfg.test_mask_merge!r}")
    n = len(cfg.stage_iou_thrs)
    if n < 2 and (cfg.interleaved or cfg.mask_info_flow):
      raise ConfigError(
          f"model.roi_heads: interleaved and mask_info_flow need at least "
          f"two box stages, got {n}")

  def make_mask_head(self, index):
    return MaskHead(num_classes=self.num_classes,
                    num_convs=self.mask_num_convs,
                    conv_to_res=self.mask_conv_to_res,
                    with_conv_res=self.mask_info_flow and index > 0,
                    channels=self.channels, dtype=self.dtype,
                    output_init=self.mask_output_init)

  def mask_losses(self, feats, stages, gt, image_hw, image_keys, ctx):
    losses = {}
    for s, stage in enumerate(stages):
      smp = stage.samples
      if self.interleaved:
        boxes, valid = self.refine(s, stage, image_hw)
        smp = self.sample(s, image_keys, boxes, valid, gt,
                          stream_name=f"mask_stage_{s}")
      pos, x = self.positive_mask_features(feats, smp, ctx)
      logits = self.mask_chain(x, s)[-1]
      losses[self.loss_name(s, "loss_mask")] = self.stage_loss_weights[s] * \
          self.mask_loss(logits, pos, gt, image_hw)
    return losses

  def predict_masks(self, feats, boxes, labels, ctx):
    x = self.roi_features(feats, boxes, self.mask_roi_size, ctx)
    every = self.test_mask_merge == "all_stages"
    return self.mean_mask_probs(
        self.mask_chain(x, self.num_stages - 1, every=every), labels)

  def mask_chain(self, x, last, every=False):
    """Mask heads 0..last on RoI features x [K, 14, 14, C], each fed the
    previous head's conv feature when the information flow is on. Returns
    [logits] of the last head, or of every head when `every`."""
    if not self.mask_info_flow:
      heads = range(last + 1) if every else [last]
      return [self.mask_head[h](x)[0] for h in heads]
    feat, logits = None, []
    for h in range(last + 1):
      want = every or h == last
      out, feat = self.mask_head[h](x, feat, return_logits=want)
      if want:
        logits.append(out)
    return logits
