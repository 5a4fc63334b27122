"""Box head with shared FCs (mmdet Shared2FCBBoxHead / SCNetBBoxHead)."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.models.layers import normal, xavier_uniform


class BBoxHead(nn.Module, kw_only=True):
  """x: [K, 7, 7, C] RoI features (flattened in (H, W, C) order; the
  converter permutes mmdet's (C, H, W) weights).

  Returns:
    cls_logits [K, num_classes + 1] float32 (background last),
    deltas [K, 4] (class-agnostic) or [K, num_classes, 4] float32, or
      None without `with_reg` (a classification-only head, CoMask's),
    shared [K, fc_dim], the last shared FC output (SCNet's relayed feature).
  """
  num_classes: int
  class_agnostic: bool = True
  num_shared_fcs: int = 2
  fc_dim: int = 1024
  with_reg: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    for i in range(self.num_shared_fcs):
      x = nn.relu(nn.Dense(self.fc_dim, kernel_init=xavier_uniform,
                           dtype=self.dtype, name=f"shared_fcs_{i}")(x))
    cls = nn.Dense(self.num_classes + 1, kernel_init=normal(0.01),
                   dtype=self.dtype, name="fc_cls")(x)
    if not self.with_reg:
      return cls.astype(jnp.float32), None, x
    n_reg = 4 if self.class_agnostic else 4 * self.num_classes
    reg = nn.Dense(n_reg, kernel_init=normal(0.001), dtype=self.dtype,
                   name="fc_reg")(x)
    if not self.class_agnostic:
      reg = reg.reshape(x.shape[0], self.num_classes, 4)
    return cls.astype(jnp.float32), reg.astype(jnp.float32), x
