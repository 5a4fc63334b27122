"""Small building blocks shared by the heads: mmcv's ConvModule without
norm and with a canvas GroupNorm, mmdet's SimplifiedBasicBlock, a 2x2
stride-2 transposed conv, and the initialisers mmdet uses."""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scnet_jax.models.structures import mask_canvas
from scnet_jax.ops.conv import conv_general_dilated

# nn.Conv whose kernel gradient is fast on XLA's CPU backend (ops/conv.py);
# parameter names and layouts are nn.Conv's.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)

# mmcv kaiming_init: fan_out, relu gain, normal.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
xavier_uniform = nn.initializers.xavier_uniform()


def normal(std):
  return nn.initializers.normal(std)


def torch_default_conv_init():
  """PyTorch's default Conv2d/Linear init: kaiming_uniform(a=sqrt(5))."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_uniform(fan_in):
  """PyTorch's default init of a layer whose fan-in (as torch counts it)
  is fan_in, for its weight and its bias alike: U(-1/sqrt(fan_in),
  1/sqrt(fan_in))."""
  bound = fan_in ** -0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class ConvModule(nn.Module):
  """mmcv's ConvModule: conv -> optional GroupNorm (num_groups > 0) ->
  optional ReLU; 'same' padding for odd kernels. With a norm, mmcv drops
  the conv bias: pass use_bias=False for that.

  x: [..., H, W, Cin] -> [..., ceil(H / stride), ceil(W / stride),
  features].
  """
  features: int
  kernel_size: int = 3
  activation: bool = True
  kernel_init: Any = kaiming_fan_out
  dtype: Any = jnp.float32
  stride: int = 1
  use_bias: bool = True
  num_groups: int = 0

  @nn.compact
  def __call__(self, x):
    p = self.kernel_size // 2
    x = Conv(self.features, (self.kernel_size, self.kernel_size),
             (self.stride, self.stride), padding=((p, p), (p, p)),
             use_bias=self.use_bias, kernel_init=self.kernel_init,
             dtype=self.dtype, name="conv")(x)
    if self.num_groups:
      x = nn.GroupNorm(num_groups=self.num_groups, epsilon=1e-5,
                       dtype=self.dtype, name="gn")(x)
    return nn.relu(x) if self.activation else x


class SimplifiedBasicBlock(nn.Module):
  """conv3x3 -> ReLU -> conv3x3, + identity, no final ReLU, no norm.
  Weights and biases start at PyTorch's default, as mmdetection's block
  leaves them.

  x: [..., H, W, C] -> same shape. canvas (structures.Canvas, image-level
  maps only): each conv's input is zeroed outside it.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, canvas=None):
    c = x.shape[-1]
    conv = lambda name, y: Conv(c, (3, 3), padding=((1, 1), (1, 1)),
                                kernel_init=torch_default_conv_init(),
                                bias_init=torch_uniform(9 * c),
                                dtype=self.dtype, name=name)(
                                    mask_canvas(y, canvas))
    return conv("conv2", nn.relu(conv("conv1", x))) + x


class ResConvStack(nn.Module):
  """`num_convs` 3x3 convs: plain ConvModules, or (conv_to_res) pairs of
  them as SimplifiedBasicBlocks, as SCNet's heads use.

  x: [..., H, W, C] -> [..., H, W, features]. canvas (structures.Canvas,
  image-level maps only): each conv's input is zeroed outside it.
  """
  num_convs: int
  features: int
  conv_to_res: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, canvas=None):
    if self.conv_to_res:
      for i in range(self.num_convs // 2):
        x = SimplifiedBasicBlock(dtype=self.dtype, name=f"convs_{i}")(
            x, canvas)
    else:
      for i in range(self.num_convs):
        x = ConvModule(self.features, 3, dtype=self.dtype,
                       name=f"convs_{i}")(mask_canvas(x, canvas))
    return x


class Deconv2x2(nn.Module):
  """ConvTranspose2d(kernel 2, stride 2, padding 0) as an explicit einsum:
  out[n, 2i+a, 2j+b, o] = sum_c x[n, i, j, c] * kernel[a, b, c, o] + bias[o].

  x: [N, H, W, Cin] -> [N, 2H, 2W, features]. torch_init: PyTorch's
  default init (weight and bias U(+-1/sqrt(4 features)), torch counting a
  transposed conv's fan-in over its outputs) instead of mmcv's
  kaiming_init (fan_out, normal, zero bias).
  """
  features: int
  dtype: Any = jnp.float32
  torch_init: bool = False

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    torch_init = torch_uniform(4 * self.features)
    kernel = self.param("kernel", torch_init if self.torch_init else
                        kaiming_fan_out, (2, 2, cin, self.features))
    bias = self.param("bias", torch_init if self.torch_init else
                      nn.initializers.zeros, (self.features,))
    x = x.astype(self.dtype)
    y = jnp.einsum("nijc,abco->niajbo", x, kernel.astype(self.dtype))
    n, h, _, w, _, o = y.shape
    return y.reshape(n, 2 * h, 2 * w, o) + bias.astype(self.dtype)


class CanvasGroupNorm(nn.Module):
  """GroupNorm (eps 1e-5, affine: params scale and bias, as nn.GroupNorm)
  whose statistics are taken over each image's canvas only, so a map
  padded into a bucket normalises as the image alone would.

  x: [B, H, W, C]; inside: [B, H, W, 1] bool or None (the whole map) ->
  [B, H, W, C] in x's dtype (float32 statistics).
  """
  num_groups: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, inside=None):
    b, h, w, c = x.shape
    g = self.num_groups
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    xf = x.astype(jnp.float32).reshape(b, h, w, g, c // g)
    weight = (jnp.ones((b, h, w, 1, 1), jnp.float32) if inside is None
              else inside.astype(jnp.float32)[..., None])
    count = jnp.sum(weight, axis=(1, 2, 3, 4), keepdims=True) * (c // g)
    mean = jnp.sum(xf * weight, axis=(1, 2, 4), keepdims=True) / count
    var = jnp.sum(jnp.square(xf - mean) * weight, axis=(1, 2, 4),
                  keepdims=True) / count
    y = ((xf - mean) * jax.lax.rsqrt(var + 1e-5)).reshape(b, h, w, c)
    return (y * scale + bias).astype(self.dtype)


class ConvGN(nn.Module):
  """mmcv's ConvModule with GroupNorm: 3x3 conv (bias only if use_bias;
  mmcv drops it before a norm) -> canvas GroupNorm -> ReLU (if
  activation); the conv reads its input zeroed outside the canvas.

  x: [B, H, W, Cin]; inside: [B, H, W, 1] bool (the input's canvas cells)
  or None -> [B, ceil(H / stride), ceil(W / stride), features], normalised
  over the output's canvas cells: the canvas is a top-left rectangle, so
  those are `inside[:, ::stride, ::stride]`, the cells an image alone on
  its canvas computes.
  """
  features: int
  num_groups: int = 32
  kernel_init: Any = kaiming_fan_out
  dtype: Any = jnp.float32
  stride: int = 1
  use_bias: bool = False
  activation: bool = True

  @nn.compact
  def __call__(self, x, inside=None):
    if inside is not None:
      x = jnp.where(inside, x, jnp.zeros((), x.dtype))
      inside = inside[:, ::self.stride, ::self.stride]
    x = Conv(self.features, (3, 3), (self.stride, self.stride),
             padding=((1, 1), (1, 1)), use_bias=self.use_bias,
             kernel_init=self.kernel_init, dtype=self.dtype,
             name="conv")(x)
    x = CanvasGroupNorm(num_groups=self.num_groups, dtype=self.dtype,
                        name="gn")(x, inside)
    return nn.relu(x) if self.activation else x
