"""CoMask's collaborative head (the authors' `SIDHead`, built on D2Det's):
one trunk on the 14x14 RoI features of a box feeds dense box regression,
the instance mask and a mask-IoU estimate.

    x [K, 14, 14, C] -> 10 x (conv3x3 + GN 32 + ReLU, no bias; the first
        stride 2) -> t [K, 7, 7, C]
    t -> conv3x3 (C -> 4) -> ReLU -> reg [K, 7, 7, 4]: each cell's
        distances (l, t, r, b) from its centre to the box, in units of the
        RoI's width (l, r) and height (t, b)
    t -> 2 x (deconv2x2 + GN + ReLU) -> conv3x3 (C -> num_classes)
        -> mask logits [K, 28, 28, num_classes]
    [t, sigmoid(maxpool4(stop_gradient(mask logit of the label)))]
        (C + 1) -> 2 x (conv3x3 + GN + ReLU, with bias) -> flatten
        -> FC 1024 -> ReLU -> FC 1024 -> ReLU -> FC num_classes
        -> mask IoU [K, num_classes]

The authors' mask and mask-IoU outputs have a background channel
(mmdetection 1.x's 81 classes; their IoU FC is hard-coded to 81); ours
have num_classes (labels are contiguous, no background), so a COCO head
has 3 * 3 * C + 1 + 1024 + 1 = 2,331 fewer parameters than theirs.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scnet_jax.models.layers import (Conv, ConvModule, Deconv2x2,
                                     kaiming_fan_out, normal)

# mmcv kaiming_init(a=1, mode='fan_in', distribution='uniform'): gain 1.
fc_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


class CoMaskHead(nn.Module, kw_only=True):
  """x: [K, 14, 14, C] RoI features; labels: [K] int32 classes whose mask
  feeds the mask-IoU branch.

  Returns (reg [K, 7, 7, 4] float32 >= 0, mask logits [K, 28, 28,
  num_classes] float32, mask IoU [K, num_classes] float32).
  """
  num_classes: int
  num_convs: int = 10
  channels: int = 256
  fc_dim: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, labels):
    c = self.channels
    for i in range(self.num_convs):
      x = ConvModule(c, 3, stride=2 if i == 0 else 1, use_bias=False,
                     num_groups=32, dtype=self.dtype, name=f"convs_{i}")(x)
    trunk = x
    reg = nn.relu(Conv(4, (3, 3), padding=((1, 1), (1, 1)),
                       kernel_init=normal(0.001), dtype=self.dtype,
                       name="reg")(trunk))
    y = trunk
    for i in (1, 2):
      y = Deconv2x2(c, dtype=self.dtype, name=f"deconv{i}")(y)
      y = nn.relu(nn.GroupNorm(num_groups=32, epsilon=1e-5, dtype=self.dtype,
                               name=f"norm{i}")(y))
    logits = Conv(self.num_classes, (3, 3), padding=((1, 1), (1, 1)),
                  kernel_init=kaiming_fan_out, dtype=self.dtype,
                  name="instance")(y).astype(jnp.float32)
    picked = jnp.take_along_axis(logits, labels[:, None, None, None],
                                 axis=-1)
    k, h, w, _ = picked.shape
    pooled = jnp.max(jax.lax.stop_gradient(picked).reshape(
        k, h // 4, 4, w // 4, 4, 1), axis=(2, 4))
    z = jnp.concatenate([trunk, jax.nn.sigmoid(pooled).astype(trunk.dtype)],
                        axis=-1)
    for i in range(2):
      z = ConvModule(c, 3, num_groups=32, dtype=self.dtype,
                     name=f"iou_convs_{i}")(z)
    z = z.reshape(k, -1)
    for i in range(2):
      z = nn.relu(nn.Dense(self.fc_dim, kernel_init=fc_init,
                           dtype=self.dtype, name=f"iou_fcs_{i}")(z))
    iou = nn.Dense(self.num_classes, kernel_init=normal(0.01),
                   dtype=self.dtype, name="fc_iou")(z)
    return reg.astype(jnp.float32), logits, iou.astype(jnp.float32)
