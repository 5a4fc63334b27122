"""SCNet's RoI heads (Vu, Kang and Yoo 2021; mmdet `SCNetRoIHead`): the
cascade with the semantic branch, plus the paper's three changes, each a
switch (Table 2):

- sample_consistency: the mask branch trains on the samples of the last
  box stage, the boxes it will see at test. "single" (SCNet): one deep mask
  head, its loss weighted by the sum of the stage weights; "naive" (Table
  3): the cascade's per-stage mask heads all moved after the last stage;
  "none": the cascade's head per stage on that stage's samples.
- feature_relay: the box head's last shared FC feature of the same RoIs,
  FC -> 7x7 -> x2 bilinear, added to the mask RoI features; one relay per
  mask head, from the box stage that feeds it (Table 4: on Mask R-CNN with
  one stage, on the cascade without sample consistency). Not detached: the
  mask loss trains that box head's shared FCs.
- global_context: a multi-label classifier on the coarsest level whose
  pooled feature is added to every RoI feature; glbctx_loss_weight (3)
  scales its loss (Table 5, 0 keeps the branch without its loss).
"""
import jax
import jax.numpy as jnp

from scnet_jax.errors import ConfigError
from scnet_jax.models.losses import sigmoid_bce
from scnet_jax.models.roi_heads.cascade import CascadeRoIHeads
from scnet_jax.models.roi_heads.feature_relay import FeatureRelayHead
from scnet_jax.models.roi_heads.global_context_head import GlobalContextHead

SAMPLE_CONSISTENCY = ("single", "naive", "none")


class SCNetRoIHeads(CascadeRoIHeads, kw_only=True):
  semantic: bool = True
  sample_consistency: str = "single"
  feature_relay: bool = True
  global_context: bool = True
  glbctx_loss_weight: float = 3.0

  @classmethod
  def check_config(cls, cfg):
    super().check_config(cfg)
    if cfg.sample_consistency not in SAMPLE_CONSISTENCY:
      raise ConfigError(
          f"model.roi_heads.sample_consistency: one of {SAMPLE_CONSISTENCY},"
          f" got {cfg.sample_consistency!r}")
    if cfg.feature_relay and cfg.mask_roi_size % cfg.roi_size:
      raise ConfigError(
          f"model.roi_heads: feature_relay upsamples the {cfg.roi_size}x"
          f"{cfg.roi_size} box feature, so mask_roi_size must be a multiple "
          f"of roi_size, got {cfg.mask_roi_size}")

  @property
  def mask_sources(self):
    """The box stage whose samples (and relayed feature) feed each mask
    head."""
    last = self.num_stages - 1
    if self.sample_consistency == "single":
      return (last,)
    if self.sample_consistency == "naive":
      return (last,) * self.num_stages
    return tuple(range(self.num_stages))

  @property
  def num_mask_heads(self):
    return len(self.mask_sources)

  def setup(self):
    super().setup()
    if self.feature_relay:
      n = self.num_mask_heads
      # One relay keeps mmdet's name, `feat_relay_head`.
      self.relays = [FeatureRelayHead(
          out_channels=self.channels, roi_feat_size=self.roi_size,
          scale_factor=self.mask_roi_size // self.roi_size, dtype=self.dtype,
          name="feat_relay_head" if n == 1 else f"feat_relay_head_{h}")
                     for h in range(n)]
    if self.global_context:
      self.glbctx_head = GlobalContextHead(num_classes=self.num_classes,
                                           dtype=self.dtype)

  def context_and_losses(self, feats, canvas, gt=None):
    ctx, losses = super().context_and_losses(feats, canvas, gt)
    if not self.global_context:
      return ctx, losses
    logits, vector = self.glbctx_head(feats[-1], ctx.canvas)
    if gt is not None:
      present = jax.nn.one_hot(gt.labels, self.num_classes) * \
          gt.valid[..., None]
      losses["loss_glbctx"] = self.glbctx_loss_weight * jnp.mean(
          sigmoid_bce(logits, present.max(axis=1)))
    return ctx.replace(global_context=vector), losses

  def relayed(self, head, x, shared):
    """Mask RoI features x [K, 14, 14, C] plus the relay of the box
    feature shared [K, fc_dim] (x itself without the relay)."""
    if not self.feature_relay:
      return x
    return x + self.relays[head](shared).astype(x.dtype)

  def mask_losses(self, feats, stages, gt, image_hw, image_keys, ctx):
    single = self.sample_consistency == "single"
    losses = {}
    for h, src in enumerate(self.mask_sources):
      pos, x = self.positive_mask_features(feats, stages[src].samples, ctx)
      shared = stages[src].shared[:, :self.num_pos_slots]
      logits, _ = self.mask_head[h](self.relayed(
          h, x, shared.reshape(-1, shared.shape[-1])))
      loss = self.mask_loss(logits, pos, gt, image_hw)
      if single:
        losses["loss_mask"] = sum(self.stage_loss_weights) * loss
      else:
        losses[self.loss_name(h, "loss_mask")] = \
            self.stage_loss_weights[h] * loss
    return losses

  def predict_masks(self, feats, boxes, labels, ctx):
    x = self.roi_features(feats, boxes, self.mask_roi_size, ctx)
    shared = {}
    if self.feature_relay:
      for src in sorted(set(self.mask_sources)):
        _, _, s = self.box_forward(src, feats, boxes, ctx)
        shared[src] = s.reshape(-1, s.shape[-1])
    logits = [self.mask_head[h](self.relayed(h, x, shared.get(src)))[0]
              for h, src in enumerate(self.mask_sources)]
    return self.mean_mask_probs(logits, labels)
