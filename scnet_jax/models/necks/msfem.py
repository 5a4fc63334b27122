"""CoMask's MSFEM neck (multi-scale feature enhancement; the authors'
`MFPN` with its `SIM` module, clelouch/CoMask): an FPN whose per-level
3x3 output conv is replaced by chained multi-scale sub-branches and a
channel attention.

Per level, with x the lateral sum [B, H, W, C] and b = num_branches:

    branch 0: x                                   (identity)
    branch 1: up(d^(b-1)(x))                      b-1 stride-2 convs
    branch k: up(d^(b-k)(concat(branch k-1, x)))  k = 2 .. b-1
    y = conv1x1(concat(branch 0 .. b-1))          b*C -> C, with bias
    out = attention(y)

d = 3x3 stride-2 conv (bias) + GroupNorm 32 + ReLU, `up` = bilinear with
align_corners=True back to H x W. For b = 4: 3, 2, 1 downsampling convs,
concat 1024 -> 256. Attentions (the authors' options):
  rca: s = sigmoid(FC(ReLU(FC(avgpool y)))) (C -> C/4 -> C, no biases),
       z = y * s, out = ReLU(z + GN(conv3x3(z)))  (conv without bias)
  ca:  out = ReLU(y * s)
  sca: y * sigmoid(conv3x3([mean_c y, max_c y]))  (2 -> 1, no bias), then rca
  none: out = y
The authors' SIM returns its input unchanged for b < 3, although it
builds the 1x1 reduction for b inputs; we apply the layer list for every
b (b = 1: 1x1 conv and attention only), so the paper's 1/2/4 ablation
rows differ in their sub-branches alone. All convs and FCs are
xavier-uniform initialised (MFPN.init_weights).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.errors import ConfigError
from scnet_jax.models.layers import Conv, ConvModule, xavier_uniform
from scnet_jax.models.necks.fpn import FPN
from scnet_jax.ops.resize import resize_bilinear_align_corners

ATTENTIONS = ("rca", "ca", "sca", "none")


class ChannelGate(nn.Module):
  """Squeeze-excitation weights without biases: [B, H, W, C] -> [B, 1, 1,
  C] in (0, 1)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y):
    c = y.shape[-1]
    s = jnp.mean(y, axis=(1, 2))
    s = nn.relu(nn.Dense(c // 4, use_bias=False, kernel_init=xavier_uniform,
                         dtype=self.dtype, name="linear1")(s))
    s = nn.sigmoid(nn.Dense(c, use_bias=False, kernel_init=xavier_uniform,
                            dtype=self.dtype, name="linear2")(s))
    return s[:, None, None, :]


class ResidualChannelAttention(nn.Module):
  """RCA: z = y * gate(y); ReLU(z + GN(conv3x3(z))). Shape-preserving."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y):
    z = y * ChannelGate(dtype=self.dtype, name="gate")(y)
    r = ConvModule(y.shape[-1], 3, activation=False, use_bias=False,
                   num_groups=32, kernel_init=xavier_uniform,
                   dtype=self.dtype, name="conv2")(z)
    return nn.relu(z + r)


class MSFEModule(nn.Module, kw_only=True):
  """One level's module: x [B, H, W, C] -> [B, H, W, C]."""
  num_branches: int = 4
  attention: str = "rca"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c, hw = x.shape[-1], x.shape[1:3]

    def branch(k, inp):
      # Sub-branch k (1-based) has b - k stride-2 convs.
      for j in range(self.num_branches - k):
        inp = ConvModule(c, 3, stride=2, num_groups=32,
                         kernel_init=xavier_uniform, dtype=self.dtype,
                         name=f"branch{k}_{j}")(inp)
      return resize_bilinear_align_corners(inp, hw)

    outs = [x]
    for k in range(1, self.num_branches):
      outs.append(branch(k, x if k == 1 else
                         jnp.concatenate([outs[-1], x], axis=-1)))
    y = Conv(c, (1, 1), kernel_init=xavier_uniform, dtype=self.dtype,
             name="reduce")(jnp.concatenate(outs, axis=-1))
    if self.attention == "none":
      return y
    if self.attention == "ca":
      return nn.relu(y * ChannelGate(dtype=self.dtype, name="gate")(y))
    if self.attention == "sca":
      pooled = jnp.stack([jnp.mean(y, -1), jnp.max(y, -1)], axis=-1)
      spatial = Conv(1, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                     kernel_init=xavier_uniform, dtype=self.dtype,
                     name="refine_conv")(pooled)
      y = y * nn.sigmoid(spatial)
    return ResidualChannelAttention(dtype=self.dtype, name="rca")(y)


class MSFEM(FPN, kw_only=True):
  """FPN with MSFEModule as every level's output module (P6 is still the
  strided subsample of P5). Shapes as FPN's."""
  num_branches: int = 4
  attention: str = "rca"

  @classmethod
  def check_config(cls, cfg):
    b = cfg.num_branches
    if not isinstance(b, int) or b < 1:
      raise ConfigError(f"model.neck.num_branches: a positive integer, got "
                        f"{b!r}")
    if cfg.attention not in ATTENTIONS:
      raise ConfigError(f"model.neck.attention: one of {list(ATTENTIONS)}, "
                        f"got {cfg.attention!r}")
    if cfg.channels % 32:
      raise ConfigError(f"model.neck.channels: a multiple of 32 (GroupNorm "
                        f"32), got {cfg.channels}")

  def output_conv(self, i, x):
    return MSFEModule(num_branches=self.num_branches,
                      attention=self.attention, dtype=self.dtype,
                      name=f"fpn_convs_{i}")(x)
