"""A two-stage detector composed of named parts (detectron2's
`GeneralizedRCNN`): backbone -> neck -> RPN -> RoI heads, each picked from
its registry by the `type` of its config section.

    image -> backbone -> neck (levels P2..P6; in training also its own
             losses, e.g. SFPN's semantic loss) -> RPN -> Proposals
          -> RoI heads (box stages, mask branch, their own context) ->
             losses, or Detections

Two entry points, both jittable with static shapes:
  `loss(batch)`    -> dict of named, weighted float32 losses;
  `predict(batch)` -> Detections (models/structures.py).
`batch_keys(cfg, train)` (a classmethod) names the batch entries they
read (the neck's and the RoI heads' `train_batch_keys` in training;
shapes in structures.batch_spec); `index` [B] int32, the image's
position in the global batch, may be added for training: sampling keys
are derived from it, so a global batch samples the same RoIs however it
is split.
"""
from scnet_jax.models import registry
from scnet_jax.models.detectors.base import DTYPES, Detector
from scnet_jax.models.losses import merge_losses
from scnet_jax.models.structures import IMAGE_KEYS, GroundTruth


def part_arguments(cfg, axis_name=None):
  """What the detector passes each part besides its config section."""
  dt = DTYPES[cfg.dtype]
  neck = cfg.neck
  shared = dict(delta_clamp=cfg.delta_clamp, dtype=dt, axis_name=axis_name)
  return {
      "backbone": dict(dtype=dt),
      "neck": dict(dtype=dt),
      "rpn": dict(channels=neck.channels, strides=tuple(neck.strides),
                  **shared),
      "roi_heads": dict(num_classes=cfg.num_classes, channels=neck.channels,
                        feature_strides=tuple(neck.strides), test=cfg.test,
                        **shared)}


class TwoStageDetector(Detector):
  """cfg, axis_name: see detectors/base.Detector."""

  part_arguments = staticmethod(part_arguments)

  PARTS = (("backbone", registry.BACKBONES), ("neck", registry.NECKS),
           ("rpn", registry.DENSE_HEADS), ("roi_heads", registry.ROI_HEADS))
  # The instances come through the RoI heads' train_batch_keys.
  TRAIN_KEYS = IMAGE_KEYS

  def loss(self, batch):
    """Named float32 losses (weights applied); the total is their sum."""
    keys = self.sampling_keys(batch)
    gt = GroundTruth.from_batch(batch)
    c_feats, canvas = self.backbone_features(batch["image"],
                                             batch["image_hw"])
    feats, neck_losses = self.neck.loss(c_feats, canvas, gt, self.axis_name)
    rpn_losses, proposals = self.rpn_head.loss_and_proposals(feats, gt,
                                                             canvas, keys)
    return merge_losses(
        neck_losses, rpn_losses,
        self.roi_heads.loss(feats, proposals, gt, canvas, keys))

  def predict(self, batch):
    """Detections in resized-image pixels (structures.Detections)."""
    feats, canvas = self.neck_and_canvas(batch["image"], batch["image_hw"])
    rpn_out = self.rpn_head(feats)
    proposals = self.rpn_head.proposals(feats, canvas, rpn_out)
    # Named intermediates for probing and parity tests:
    # apply(..., mutable=["intermediates"]).
    self.sow("intermediates", "fpn", tuple(feats))
    self.sow("intermediates", "rpn", tuple(rpn_out))
    self.sow("intermediates", "proposals", (proposals.boxes, proposals.valid))
    return self.roi_heads.predict(feats, proposals, canvas)
