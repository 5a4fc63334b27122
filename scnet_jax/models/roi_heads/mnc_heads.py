"""MNC's stage-2 and stage-3 heads (Dai, He and Sun 2016; the authors'
`models/VGG16/mnc_5stage/train.prototxt`)."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scnet_jax.models.layers import normal, xavier_uniform


class MaskRegressionHead(nn.Module, kw_only=True):
  """Stage 2, class-agnostic mask regression: x [K, 14, 14, C] RoI
  features (flattened in (H, W, C) order) -> FC fc_dim + ReLU -> FC
  mask_size^2 -> logits [K, mask_size, mask_size] float32."""
  mask_size: int = 28
  fc_dim: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.fc_dim, kernel_init=xavier_uniform,
                         dtype=self.dtype, name="fc_mask")(x))
    x = nn.Dense(self.mask_size * self.mask_size, kernel_init=normal(0.001),
                 dtype=self.dtype, name="mask_pred")(x)
    return x.reshape(-1, self.mask_size, self.mask_size).astype(jnp.float32)


class MaskConditionedBoxHead(nn.Module, kw_only=True):
  """Stage 3, categorisation: two pathways of num_fcs FCs (fc_dim, ReLU),
  one on the RoI features multiplied by the predicted mask (resized to the
  feature grid), one on the plain RoI features, both max-pooled by
  `pool` first (the authors pool their 14x14 warped features to 7x7);
  their outputs concatenated feed the (N+1)-way classifier and the
  class-specific box regression.

  x: [K, S, S, C] RoI features; mask: [K, M, M] probabilities.
  Returns cls_logits [K, num_classes + 1] float32 (background last),
  deltas [K, num_classes, 4] float32, joint [K, 2 * fc_dim].
  """
  num_classes: int
  num_fcs: int = 2
  fc_dim: int = 4096
  pool: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    k, s = x.shape[:2]
    # Plain bilinear (half-pixel) resize, differentiable in the mask.
    resized = jax.image.resize(mask.astype(jnp.float32), (k, s, s),
                               "bilinear", antialias=False)
    masked = x * resized[..., None].astype(x.dtype)

    def pathway(v, prefix):
      if self.pool > 1:
        v = nn.max_pool(v, (self.pool, self.pool), (self.pool, self.pool))
      v = v.reshape(k, -1)
      for i in range(self.num_fcs):
        v = nn.relu(nn.Dense(self.fc_dim, kernel_init=xavier_uniform,
                             dtype=self.dtype, name=f"{prefix}_{i}")(v))
      return v

    joint = jnp.concatenate([pathway(masked, "mask_fcs"),
                             pathway(x, "box_fcs")], axis=-1)
    cls = nn.Dense(self.num_classes + 1, kernel_init=normal(0.01),
                   dtype=self.dtype, name="fc_cls")(joint)
    reg = nn.Dense(4 * self.num_classes, kernel_init=normal(0.001),
                   dtype=self.dtype, name="fc_reg")(joint)
    return (cls.astype(jnp.float32),
            reg.reshape(k, self.num_classes, 4).astype(jnp.float32), joint)
