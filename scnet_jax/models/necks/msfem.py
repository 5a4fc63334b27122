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

Each image is computed on its own canvas (structures.Canvas), as the
authors' code computes an image at batch 1: every conv reads its input
zeroed outside it, GroupNorm and the channel gate's mean take their
statistics over it, a stride-2 conv's canvas is the ceil of half its
input's, and `up` resizes each image's canvas cells onto its canvas at
H x W. An image's features do not depend on the bucket it is padded
into.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scnet_jax.errors import ConfigError
from scnet_jax.models.layers import Conv, ConvGN, xavier_uniform
from scnet_jax.models.necks.fpn import FPN
from scnet_jax.ops.resize import resize_bilinear_align_corners

ATTENTIONS = ("rca", "ca", "sca", "none")


def _masked(x, inside):
  """x zeroed outside the canvas cells inside [B, H, W, 1] (None: x)."""
  return x if inside is None else jnp.where(inside, x, jnp.zeros((), x.dtype))


def _extent(inside):
  """[B, 2] int32 canvas rows and columns of a map from its cells."""
  return jnp.stack([jnp.sum(inside[:, :, 0, 0], axis=1),
                    jnp.sum(inside[:, 0, :, 0], axis=1)], axis=-1)


class ChannelGate(nn.Module):
  """Squeeze-excitation weights without biases: y [B, H, W, C] (its mean
  over the canvas cells inside [B, H, W, 1], or all cells if None) ->
  [B, 1, 1, C] in (0, 1)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y, inside=None):
    c = y.shape[-1]
    if inside is None:
      s = jnp.mean(y, axis=(1, 2))
    else:
      s = jnp.sum(_masked(y, inside), axis=(1, 2)) / jnp.sum(
          inside, axis=(1, 2)).astype(y.dtype)
    s = nn.relu(nn.Dense(c // 4, use_bias=False, kernel_init=xavier_uniform,
                         dtype=self.dtype, name="linear1")(s))
    s = nn.sigmoid(nn.Dense(c, use_bias=False, kernel_init=xavier_uniform,
                            dtype=self.dtype, name="linear2")(s))
    return s[:, None, None, :]


class ResidualChannelAttention(nn.Module):
  """RCA: z = y * gate(y); ReLU(z + GN(conv3x3(z))). Shape-preserving;
  inside as ChannelGate's."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y, inside=None):
    z = y * ChannelGate(dtype=self.dtype, name="gate")(y, inside)
    r = ConvGN(y.shape[-1], activation=False, kernel_init=xavier_uniform,
               dtype=self.dtype, name="conv2")(z, inside)
    return nn.relu(z + r)


class MSFEModule(nn.Module, kw_only=True):
  """One level's module: x [B, H, W, C], zero outside the canvas cells
  inside [B, H, W, 1] (None: every cell) -> [B, H, W, C]."""
  num_branches: int = 4
  attention: str = "rca"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, inside=None):
    c, hw = x.shape[-1], x.shape[1:3]

    def branch(k, inp):
      # Sub-branch k (1-based) has b - k stride-2 convs.
      ins = inside
      for j in range(self.num_branches - k):
        inp = ConvGN(c, stride=2, use_bias=True, kernel_init=xavier_uniform,
                     dtype=self.dtype, name=f"branch{k}_{j}")(inp, ins)
        ins = None if ins is None else ins[:, ::2, ::2]
      if inside is None:
        return resize_bilinear_align_corners(inp, hw)
      return resize_bilinear_align_corners(inp, hw, _extent(ins),
                                           _extent(inside))

    outs = [x]
    for k in range(1, self.num_branches):
      outs.append(branch(k, x if k == 1 else
                         jnp.concatenate([outs[-1], x], axis=-1)))
    y = _masked(Conv(c, (1, 1), kernel_init=xavier_uniform,
                     dtype=self.dtype,
                     name="reduce")(jnp.concatenate(outs, axis=-1)), inside)
    if self.attention == "none":
      return y
    if self.attention == "ca":
      return nn.relu(y * ChannelGate(dtype=self.dtype, name="gate")(y,
                                                                    inside))
    if self.attention == "sca":
      pooled = jnp.stack([jnp.mean(y, -1), jnp.max(y, -1)], axis=-1)
      spatial = Conv(1, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                     kernel_init=xavier_uniform, dtype=self.dtype,
                     name="refine_conv")(pooled)
      y = y * nn.sigmoid(spatial)
    return ResidualChannelAttention(dtype=self.dtype, name="rca")(y, inside)


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

  def output_conv(self, i, x, canvas):
    inside = None if canvas is None else canvas.inside(x.shape[1:3])
    return MSFEModule(num_branches=self.num_branches,
                      attention=self.attention, dtype=self.dtype,
                      name=f"fpn_convs_{i}")(x, inside)
