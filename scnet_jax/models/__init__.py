"""Model registry: `build_model(config)` returns the detector of
config.model.family."""
import ml_collections

from scnet_jax.models.detectors.cascade_mask_rcnn import CascadeMaskRCNN
from scnet_jax.models.detectors.htc import HTC
from scnet_jax.models.detectors.mask_rcnn import MaskRCNN
from scnet_jax.models.detectors.scnet import SCNet

FAMILIES = {"mask_rcnn": MaskRCNN, "cascade_mask_rcnn": CascadeMaskRCNN,
            "htc": HTC, "scnet": SCNet}


def build_model(config, axis_name=None):
  """config: a full config (with .model) or its model section."""
  model_cfg = config.model if "model" in config else config
  family = model_cfg.family
  if family not in FAMILIES:
    raise ValueError(f"model.family: unknown family {family!r}; one of "
                     f"{sorted(FAMILIES)}")
  return FAMILIES[family](cfg=ml_collections.FrozenConfigDict(model_cfg),
                          axis_name=axis_name)
