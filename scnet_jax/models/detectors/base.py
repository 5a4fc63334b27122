"""What every detector shares: the config check of its dtype, and the
backbone -> neck path on a batch of images padded into one bucket.

Each detector (two_stage.py, one_stage.py) builds `self.backbone` and
`self.neck` from its registries in `setup`; the methods here read them.
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax import ops
from scnet_jax.errors import ConfigError
from scnet_jax.models import registry
from scnet_jax.models.structures import Canvas, image_keys

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_dtype(cfg):
  """Refuses an unknown model.dtype (ConfigError)."""
  if cfg.dtype not in DTYPES:
    raise ConfigError(f"model.dtype: one of {sorted(DTYPES)}, got "
                      f"{cfg.dtype!r}")


class Detector(nn.Module, kw_only=True):
  """cfg: the `model` FrozenConfigDict of a config file; axis_name: the
  data-parallel axis of the loss normalisers (None outside pmap /
  shard_map)."""
  cfg: Any
  axis_name: Optional[str] = None

  @classmethod
  def check_config(cls, cfg):
    """Runs each part's own `check_config(section)` classmethod, where it
    has one, on the resolved model section (models.resolve_model): a
    ConfigError in one line naming the field."""
    for section, reg in cls.PARTS:
      part = registry.part_class(reg, section, cfg[section])
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

  def with_part_keys(self, keys, parts):
    """`keys` plus, once each, the batch keys that the `train_batch_keys`
    of each (section, registry) part of `parts` names."""
    for section, reg in parts:
      cls = registry.part_class(reg, section, self.cfg[section])
      keys += tuple(k for k in cls.train_batch_keys(self.cfg[section])
                    if k not in keys)
    return keys

  def features(self, image, image_hw):
    """-> the neck's levels [B, H_l, W_l, C] (see backbone_features)."""
    return self.neck(*self.backbone_features(image, image_hw))

  def __call__(self, batch, train: bool = False):
    """init entry: runs the path that creates every parameter."""
    return self.loss(batch) if train else self.predict(batch)
