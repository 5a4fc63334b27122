"""mmcv's `DeformRoIPoolPack` / `ModulatedDeformRoIPoolPack` on one
pyramid level: plain RoI pooling, FCs that predict every bin's offset
(and, modulated, a sigmoid weight per bin), then deformable pooling at
those offsets (ops/deform_roi_pool.py), times the weights.

    x = pool(f, rois)                                  [K, 7, 7, C]
    offsets = FC(49C -> 1024) ReLU FC(1024) ReLU FC(-> 49 x 2)
    mask    = sigmoid(FC(49C -> 1024) ReLU FC(-> 49))  (modulated only)
    out     = pool(f, rois, gamma * offsets) * mask

The last FC of each branch starts at zero (mmcv), so a fresh pack pools
exactly as RoIAlign (aligned=True), times 0.5 when modulated. The
authors' CoMask config pools its box features with mmdetection 1.x's
(non-modulated, PS-RoI-style) DeformRoIPoolingPack; `modulated=False`
is the nearer of the two here.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.models.layers import torch_default_conv_init
from scnet_jax.ops.deform_roi_pool import deform_roi_pool


class DeformRoIPoolPack(nn.Module, kw_only=True):
  """features [B, H, W, C], rois [B, K, 4] -> [B, K, size, size, C]."""
  spatial_scale: float
  output_size: int = 7
  sampling_ratio: int = 0
  max_grid: int = 4
  gamma: float = 0.1
  fc_dim: int = 1024
  modulated: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, rois):
    s = self.output_size
    pool = lambda offsets: deform_roi_pool(
        features, rois, offsets, s, self.spatial_scale, self.sampling_ratio,
        self.gamma, self.max_grid)
    x = pool(None)
    b, k = rois.shape[:2]
    flat = x.reshape(b * k, -1)
    dense = lambda n, name, init=torch_default_conv_init(): nn.Dense(
        n, kernel_init=init, dtype=self.dtype, name=name)
    zeros = nn.initializers.zeros
    o = nn.relu(dense(self.fc_dim, "offset_fc_0")(flat))
    o = nn.relu(dense(self.fc_dim, "offset_fc_1")(o))
    o = dense(s * s * 2, "offset_fc_2", zeros)(o)
    out = pool(o.reshape(b, k, s, s, 2).astype(jnp.float32))
    if not self.modulated:
      return out
    m = nn.relu(dense(self.fc_dim, "mask_fc_0")(flat))
    m = nn.sigmoid(dense(s * s, "mask_fc_1", zeros)(m).astype(jnp.float32))
    return out * m.reshape(b, k, s, s, 1).astype(out.dtype)
