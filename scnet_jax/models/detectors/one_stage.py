"""A one-stage instance segmenter: backbone -> neck -> mask head (SOLO),
no proposals and no RoIs; parts picked from their registries by `type`.

`loss(batch)` -> named float32 losses; `predict(batch)` -> Detections with
image-level masks (structures.IMAGE_MASKS); both jittable, static shapes.
"""
from scnet_jax.errors import ConfigError
from scnet_jax.models import registry
from scnet_jax.models.detectors.base import DTYPES, Detector
from scnet_jax.models.losses import merge_losses
from scnet_jax.models.structures import IMAGE_KEYS, INSTANCE_KEYS, GroundTruth


def part_arguments(cfg, axis_name=None):
  """What the detector passes each part besides its config section."""
  dt = DTYPES[cfg.dtype]
  return {"backbone": dict(dtype=dt), "neck": dict(dtype=dt),
          "mask_head": dict(num_classes=cfg.num_classes,
                            channels=cfg.neck.channels, test=cfg.test,
                            dtype=dt, axis_name=axis_name)}


class OneStageDetector(Detector):
  """cfg, axis_name: see detectors/base.Detector."""

  part_arguments = staticmethod(part_arguments)

  PARTS = (("backbone", registry.BACKBONES), ("neck", registry.NECKS),
           ("mask_head", registry.MASK_HEADS))
  # The mask head trains on the instances.
  TRAIN_KEYS = IMAGE_KEYS + INSTANCE_KEYS

  @classmethod
  def check_config(cls, cfg):
    """Detector.check_config, then the mask head's test settings and its
    grids against the neck's levels."""
    super().check_config(cfg)
    head = registry.part_class(registry.MASK_HEADS, "mask_head",
                               cfg.mask_head)
    head.check_test(cfg.test)
    if len(cfg.neck.strides) != len(cfg.mask_head.num_grids):
      raise ConfigError(f"model.mask_head.num_grids: one per neck level "
                        f"({len(cfg.neck.strides)}), got "
                        f"{len(cfg.mask_head.num_grids)}")

  def loss(self, batch):
    """Named float32 losses (weights applied); the total is their sum:
    the neck's own (e.g. SFPN's semantic loss) and the mask head's."""
    keys = self.sampling_keys(batch)
    gt = GroundTruth.from_batch(batch)
    c_feats, canvas = self.backbone_features(batch["image"],
                                             batch["image_hw"])
    feats, neck_losses = self.neck.loss(c_feats, canvas, gt, self.axis_name)
    return merge_losses(neck_losses,
                        self.mask_head.loss(feats, canvas, gt, keys))

  def predict(self, batch):
    """Detections in resized-image pixels, masks over the canvas."""
    feats, canvas = self.neck_and_canvas(batch["image"], batch["image_hw"])
    self.sow("intermediates", "fpn", tuple(feats))
    return self.mask_head.predict(feats, canvas)
