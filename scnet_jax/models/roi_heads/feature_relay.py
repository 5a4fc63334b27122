"""SCNet's feature relay: box-head feature -> FC -> 7x7 map -> x2 bilinear
(align_corners=True), added to the mask RoI features."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.models.layers import kaiming_fan_out
from scnet_jax.ops.resize import resize_bilinear_align_corners


class FeatureRelayHead(nn.Module, kw_only=True):
  """x: [K, in_channels] -> [K, 2 * roi_feat_size, 2 * roi_feat_size,
  out_channels]. Rows of the FC are in (H, W, C) order (the converter
  permutes mmdet's (C, H, W) rows)."""
  out_channels: int = 256
  roi_feat_size: int = 7
  scale_factor: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = self.roi_feat_size
    y = nn.Dense(s * s * self.out_channels, kernel_init=kaiming_fan_out,
                 dtype=self.dtype, name="fc")(x)
    y = y.reshape(x.shape[0], s, s, self.out_channels)
    return resize_bilinear_align_corners(
        y, (s * self.scale_factor, s * self.scale_factor))
