"""ResNet / ResNeXt backbone (mmdet `ResNet`, style='pytorch') with frozen
BatchNorm statistics (norm_eval=True) and frozen early stages.

Every block zeroes its maps outside each image's canvas
(structures.Canvas) after its first norm and at its output, the two places
a 3x3 conv or pool reads next, so a padded bucket computes what
mmdetection computes on the image's own canvas.

Names follow torchvision (conv1, bn1, layer{L}_{b}/conv1 ...), so weights
convert 1:1. BatchNorm always runs in inference mode: running statistics
live in the `batch_stats` collection and are never updated; scale and bias
are parameters (trained from layer2 on).
"""
import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scnet_jax.models.layers import Conv
from scnet_jax.models.structures import mask_canvas

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
                101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features, kernel, stride=1, groups=1, dtype=jnp.float32, name=None):
  p = kernel // 2
  return Conv(features, (kernel, kernel), (stride, stride),
              padding=((p, p), (p, p)), use_bias=False,
              feature_group_count=groups, kernel_init=conv_init,
              dtype=dtype, name=name)


class BasicBlock(nn.Module):
  planes: int
  stride: int
  downsample: bool
  norm: Any
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, canvas=None):
    out = nn.relu(mask_canvas(self.norm(name="bn1")(
        _conv(self.planes, 3, self.stride, dtype=self.dtype, name="conv1")(x)),
                              canvas))
    out = self.norm(name="bn2")(
        _conv(self.planes, 3, dtype=self.dtype, name="conv2")(out))
    if self.downsample:
      x = self.norm(name="downsample_bn")(_conv(
          self.planes, 1, self.stride, dtype=self.dtype,
          name="downsample_conv")(x))
    return mask_canvas(nn.relu(out + x), canvas)


class Bottleneck(nn.Module):
  planes: int
  stride: int
  downsample: bool
  norm: Any
  groups: int = 1
  base_width: int = 64
  base_channels: int = 64
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, canvas=None):
    if self.groups == 1:
      width = self.planes
    else:  # ResNeXt: mmdet's floor(planes * base_width / 64) * groups.
      width = (self.planes * self.base_width // self.base_channels) * \
          self.groups
    out = nn.relu(mask_canvas(self.norm(name="bn1")(
        _conv(width, 1, dtype=self.dtype, name="conv1")(x)), canvas))
    out = nn.relu(self.norm(name="bn2")(_conv(
        width, 3, self.stride, self.groups, self.dtype, name="conv2")(out)))
    out = self.norm(name="bn3")(
        _conv(self.planes * 4, 1, dtype=self.dtype, name="conv3")(out))
    if self.downsample:
      x = self.norm(name="downsample_bn")(_conv(
          self.planes * 4, 1, self.stride, dtype=self.dtype,
          name="downsample_conv")(x))
    return mask_canvas(nn.relu(out + x), canvas)


class ResNet(nn.Module, kw_only=True):
  """Returns C2..C5.

  Input: images [B, H, W, 3] (normalised, zero outside each image), H and
    W multiples of 32; canvas: structures.Canvas of the batch, or None
    (no masking: the whole map is the canvas).
  Output: list of 4 arrays [B, H/s, W/s, C_s] for s = 4, 8, 16, 32 with
    C_s = base_channels * (1, 2, 4, 8) * expansion.
  frozen_stages=k stops gradients into the stem and the first k stages
  (-1: nothing frozen). norm='gn' replaces frozen BatchNorm by GroupNorm,
  for training without ImageNet weights.
  """
  depth: int = 50
  groups: int = 1
  base_width: int = 64
  base_channels: int = 64
  frozen_stages: int = 1
  norm: str = "frozen_bn"
  gn_groups: int = 8
  dtype: Any = jnp.float32

  @classmethod
  def frozen_parameters(cls, cfg):
    """The parameters that cfg.frozen_stages freezes (no update, no weight
    decay): a regex on their "/"-joined paths under the backbone (the
    stem, then layer1..layer{frozen_stages}); None when nothing is."""
    if cfg.frozen_stages < 0:
      return None
    layers = "".join(f"|layer{i}_" for i in range(1, cfg.frozen_stages + 1))
    return re.compile(rf"^(conv1|bn1{layers})")

  @nn.compact
  def __call__(self, x, canvas=None):
    if self.depth not in STAGE_BLOCKS:
      raise ValueError(f"ResNet depth must be one of {sorted(STAGE_BLOCKS)}, "
                       f"got {self.depth}")
    if self.norm == "frozen_bn":
      norm = functools.partial(nn.BatchNorm, use_running_average=True,
                               epsilon=1e-5, dtype=self.dtype)
    elif self.norm == "gn":  # for training from scratch (tiny configs)
      norm = functools.partial(nn.GroupNorm, num_groups=self.gn_groups,
                               epsilon=1e-5, dtype=self.dtype)
    else:
      raise ValueError(f"backbone.norm must be 'frozen_bn' or 'gn', got "
                       f"{self.norm!r}")
    block_cls = BasicBlock if self.depth < 50 else Bottleneck
    extra = {} if block_cls is BasicBlock else dict(
        groups=self.groups, base_width=self.base_width,
        base_channels=self.base_channels)
    x = x.astype(self.dtype)
    x = nn.relu(mask_canvas(norm(name="bn1")(_conv(
        self.base_channels, 7, 2, dtype=self.dtype, name="conv1")(x)),
                            canvas))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    if self.frozen_stages >= 0:
      x = jax.lax.stop_gradient(x)
    outs = []
    in_ch = self.base_channels
    for stage, num_blocks in enumerate(STAGE_BLOCKS[self.depth]):
      planes = self.base_channels * 2 ** stage
      for b in range(num_blocks):
        stride = 2 if (b == 0 and stage > 0) else 1
        out_ch = planes * block_cls.expansion
        x = block_cls(planes=planes, stride=stride,
                      downsample=(b == 0 and (stride != 1 or in_ch != out_ch)),
                      norm=norm, dtype=self.dtype,
                      name=f"layer{stage + 1}_{b}", **extra)(x, canvas)
        in_ch = out_ch
      if stage + 1 <= self.frozen_stages:
        x = jax.lax.stop_gradient(x)
      outs.append(x)
    return outs
