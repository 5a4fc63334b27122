"""Fused semantic head (HTC `FusedSemanticHead`, SCNet `SCNetSemanticHead`):
all pyramid levels resized (bilinear, align_corners=True) to the fusion
level, 1x1 lateral convs summed, convs, then per-pixel logits and a
256-channel embedding that is fused into the RoI features. With a canvas,
each image's levels are resized between their own canvas extents, as
PyTorch resizes an image of that size, and zeroed outside it."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.models.layers import (Conv, ConvModule, ResConvStack,
                                     kaiming_fan_out)
from scnet_jax.models.structures import mask_canvas
from scnet_jax.ops.resize import resize_bilinear_align_corners


class SemanticHead(nn.Module, kw_only=True):
  """feats: list of [B, H_l, W_l, C] (P2..P6); canvas: structures.Canvas
  or None.

  Returns (logits [B, H_f, W_f, num_classes] float32, embedding
  [B, H_f, W_f, channels]) at the fusion level's stride (8 for level 1).
  """
  # Set from the config's `semantic_head` sub-section (config_lib writes
  # its defaults) and the part that holds the head.
  num_classes: int
  num_convs: int
  conv_to_res: bool
  fusion_level: int
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feats, canvas=None):
    target = feats[self.fusion_level].shape[1:3]
    x = None
    for i in [self.fusion_level] + [j for j in range(len(feats))
                                    if j != self.fusion_level]:
      f = feats[i]
      if i != self.fusion_level and canvas is not None:
        f = resize_bilinear_align_corners(
            f, target, canvas.extent(f.shape[1:3]), canvas.extent(target))
      else:
        f = resize_bilinear_align_corners(f, target)
      f = ConvModule(self.channels, 1, dtype=self.dtype,
                     name=f"lateral_convs_{i}")(f)
      x = f if x is None else x + f
    x = ResConvStack(self.num_convs, self.channels, self.conv_to_res,
                     dtype=self.dtype, name="convs")(x, canvas)
    logits = Conv(self.num_classes, (1, 1), kernel_init=kaiming_fan_out,
                  dtype=self.dtype, name="conv_logits")(x)
    embedding = ConvModule(self.channels, 1, dtype=self.dtype,
                           name="conv_embedding")(x)
    return logits.astype(jnp.float32), mask_canvas(embedding, canvas)
