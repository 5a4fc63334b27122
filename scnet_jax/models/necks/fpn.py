"""FPN (mmdet `FPN`, add_extra_convs=False): P2..P5 from C2..C5, plus
P6 = P5[::2, ::2] (max-pool with kernel 1, stride 2). Maps are zeroed
outside each image's canvas before the 3x3 convs and at the output
(structures.Canvas).

Every neck answers two calls: `__call__(inputs, canvas)` -> levels
(test), and `loss(inputs, canvas, gt, axis_name)` -> (levels, its own
named losses) in training; `train_batch_keys(cfg)` names the batch keys
that loss reads. FPN has no loss of its own; SFPN (necks/sfpn.py) has one.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.models.layers import Conv, xavier_uniform
from scnet_jax.models.structures import mask_canvas


class FPN(nn.Module, kw_only=True):
  """inputs: list of [B, H_i, W_i, C_i] (C2..C5, strides 4..32, sizes
  halving exactly). Returns len(strides) maps [B, H, W, channels], one per
  output stride (4, 8, 16, 32, 64 for P2..P6); levels past the inputs are
  strided subsamples of the last one. canvas: structures.Canvas or None
  (output modules read maps zeroed outside it)."""
  channels: int = 256
  strides: Sequence[int] = (4, 8, 16, 32, 64)
  dtype: Any = jnp.float32

  @classmethod
  def train_batch_keys(cls, cfg):
    """Batch keys `loss` reads besides the image."""
    del cfg
    return ()

  @nn.compact
  def __call__(self, inputs, canvas=None):
    laterals = [self.conv(1, f"lateral_convs_{i}")(x) for i, x in
                enumerate(inputs)]
    for i in range(len(laterals) - 1, 0, -1):
      up = jnp.repeat(jnp.repeat(laterals[i], 2, axis=1), 2, axis=2)
      laterals[i - 1] = laterals[i - 1] + up
    outs = [mask_canvas(self.output_conv(i, mask_canvas(x, canvas), canvas),
                        canvas) for i, x in enumerate(laterals)]
    while len(outs) < len(self.strides):
      outs.append(outs[-1][:, ::2, ::2])
    return outs

  def loss(self, inputs, canvas, gt, axis_name=None):
    """(levels, {}): FPN trains only through the heads' losses."""
    del gt, axis_name
    return self(inputs, canvas), {}

  def conv(self, k, name):
    return Conv(self.channels, (k, k), padding=((k // 2, k // 2),) * 2,
                kernel_init=xavier_uniform, dtype=self.dtype, name=name)

  def output_conv(self, i, x, canvas):
    """The output module of level i on x, zero outside the canvas (a 3x3
    conv, whose zero padding is the canvas's; MSFEM replaces it)."""
    del canvas
    return self.conv(3, f"fpn_convs_{i}")(x)
