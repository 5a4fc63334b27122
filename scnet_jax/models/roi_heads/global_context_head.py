"""SCNet's global context head on the coarsest level (P6)."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.models.layers import ResConvStack, normal


class GlobalContextHead(nn.Module, kw_only=True):
  """x: [B, H, W, C] (P6); canvas: structures.Canvas or None. Returns
  (multi-label logits [B, num_classes] float32, context vector [B, C]):
  the average pool covers each image's canvas (the whole map without
  one), as mmdet's at batch 1."""
  num_classes: int
  num_convs: int = 4
  conv_to_res: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, canvas=None):
    x = ResConvStack(self.num_convs, x.shape[-1], self.conv_to_res,
                     dtype=self.dtype, name="convs")(x, canvas)
    if canvas is None:
      feat = jnp.mean(x, axis=(1, 2))
    else:
      inside = canvas.inside(x.shape[1:3])
      count = jnp.sum(inside, axis=(1, 2)).astype(jnp.float32)
      feat = (jnp.sum(jnp.where(inside, x, 0).astype(jnp.float32),
                      axis=(1, 2)) / count).astype(x.dtype)
    logits = nn.Dense(self.num_classes, kernel_init=normal(0.01),
                      dtype=self.dtype, name="fc")(feat)
    return logits.astype(jnp.float32), feat
