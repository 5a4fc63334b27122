"""RPN head: shared 3x3 conv + ReLU, then 1x1 objectness and 1x1 deltas."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.models.layers import Conv, normal


class RPNHead(nn.Module):
  """feats: list of [B, H_l, W_l, C]. Returns per level
  (logits [B, H_l * W_l * A] float32, deltas [B, H_l * W_l * A, 4] float32),
  flat index (y * W + x) * A + a as the anchors."""
  num_anchors: int = 3
  feat_channels: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feats):
    conv = Conv(self.feat_channels, (3, 3), padding=((1, 1), (1, 1)),
                kernel_init=normal(0.01), dtype=self.dtype, name="rpn_conv")
    cls = Conv(self.num_anchors, (1, 1), kernel_init=normal(0.01),
               dtype=self.dtype, name="rpn_cls")
    reg = Conv(self.num_anchors * 4, (1, 1), kernel_init=normal(0.01),
               dtype=self.dtype, name="rpn_reg")
    outs = []
    for x in feats:
      h = nn.relu(conv(x))
      b = x.shape[0]
      outs.append((cls(h).reshape(b, -1).astype(jnp.float32),
                   reg(h).reshape(b, -1, 4).astype(jnp.float32)))
    return outs
