"""What every detector shares: building its parts, the config checks,
the batch keys, the sampling keys, and the backbone -> neck path on a
batch of images padded into one bucket.

Each detector (two_stage.py, one_stage.py) names its parts (PARTS), what
it passes them (`part_arguments`), the batch keys of its own training
(TRAIN_KEYS), and its `loss` and `predict`.
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.errors import ConfigError
from scnet_jax.models import registry
from scnet_jax.models.structures import IMAGE_KEYS, Canvas, image_keys

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_dtype(cfg):
  """Refuses an unknown model.dtype or model.param_dtype (ConfigError)."""
  if "param_dtype" not in cfg:
    raise ConfigError('model.param_dtype: missing (a config.json written '
                      'before the field existed: add "param_dtype": '
                      '"float32" to its model section)')
  for field in ("dtype", "param_dtype"):
    if cfg[field] not in DTYPES:
      raise ConfigError(f"model.{field}: one of {sorted(DTYPES)}, got "
                        f"{cfg[field]!r}")


class Detector(nn.Module, kw_only=True):
  """cfg: the `model` FrozenConfigDict of a config file; axis_name: the
  data-parallel axis of the loss normalisers (None outside pmap /
  shard_map)."""
  cfg: Any
  axis_name: Optional[str] = None

  # The attribute (and parameter scope) each config section's part is
  # built as, where it is not the section's name (mmdetection's names).
  ATTRIBUTES = {"rpn": "rpn_head"}

  def setup(self):
    """Builds each part of PARTS from its registry with its config
    section and what `part_arguments` passes it."""
    args = self.part_arguments(self.cfg, self.axis_name)
    for section, reg in self.PARTS:
      setattr(self, self.ATTRIBUTES.get(section, section),
              registry.build_part(reg, section, self.cfg[section],
                                  **args[section]))

  @classmethod
  def check_config(cls, cfg):
    """Runs each part's own `check_config(section)` classmethod, where it
    has one, on the resolved model section (models.resolve_model): a
    ConfigError in one line naming the field. A part's CHOICES class
    attribute ({field: allowed values}) is checked first."""
    for section, reg in cls.PARTS:
      part = registry.part_class(reg, section, cfg[section])
      for field, allowed in getattr(part, "CHOICES", {}).items():
        if cfg[section][field] not in allowed:
          raise ConfigError(f"model.{section}.{field}: one of "
                            f"{list(allowed)}, got {cfg[section][field]!r}")
      if hasattr(part, "check_config"):
        part.check_config(cfg[section])

  def backbone_features(self, image, image_hw):
    """[B, H, W, 3] uint8 pixels, each image top-left, [B, 2] its resized
    size -> (the backbone's C2..C5, the batch's structures.Canvas). Maps
    are zero outside each image's canvas: inside it, what the network
    computes on that image alone padded to a multiple of 32."""
    x = ops.normalize_and_pad(image, image_hw, self.cfg.pixel_mean,
                              self.cfg.pixel_std)
    canvas = Canvas.of(image_hw, image.shape[1:3])
    return self.backbone(x, canvas), canvas

  def sampling_keys(self, batch):
    """[B] per-image PRNG keys of the loss's random choices, from the
    'sample' stream and each image's `index` in the global batch (when
    the step adds it), so a global batch draws the same however it is
    split over devices."""
    index = batch.get("index", jnp.arange(batch["image"].shape[0]))
    return image_keys(self.make_rng("sample"), index)

  @classmethod
  def batch_keys(cls, cfg, train):
    """The batch entries `loss` (train) or `predict` reads, from the
    resolved model section cfg alone (no model is built): the images'
    keys, and in training the detector's TRAIN_KEYS plus, once each, what
    the `train_batch_keys` classmethod of each part that has one names
    (e.g. the RoI heads' instances, SFPN's gt_semantic)."""
    if not train:
      return IMAGE_KEYS
    keys = cls.TRAIN_KEYS
    for section, reg in cls.PARTS:
      part = registry.part_class(reg, section, cfg[section])
      if hasattr(part, "train_batch_keys"):
        keys += tuple(k for k in part.train_batch_keys(cfg[section])
                      if k not in keys)
    return keys

  def neck_and_canvas(self, image, image_hw):
    """(the neck's levels [B, H_l, W_l, C], the batch's Canvas) at test
    (see backbone_features)."""
    c_feats, canvas = self.backbone_features(image, image_hw)
    return self.neck(c_feats, canvas), canvas

  def __call__(self, batch, train: bool = False):
    """init entry (model.init): the predict path, or the loss path with
    train=True. Both create the same parameters (tests/models/test_init.py
    checks a tiny config of each kind of head); predict needs no axis
    binding, so a model built with an axis_name initialises outside the
    data-parallel map."""
    return self.loss(batch) if train else self.predict(batch)
