"""AggMask's head (Wang, Liew, Li, Chen, Feng 2021; facts from the
authors' `AggMaskHead`, mmdetection 1.x): SOLO whose mask for a grid cell
is not the cell's own mask channel but an aggregation of its neighbours'.

    SOLO's towers and outputs (solo_head.py), plus
      weight generator: the category tower's S x S feature -> 3x3 conv ->
        tanh -> per cell, the weights of a small CNN (ops/aggregate.py;
        3 layers, 4 hidden channels, 3x3: 945 values for K = 5); only
        evaluated at the cells whose masks are aggregated
      context: P2..P6 resized to P2 (bilinear, align corners) and
        concatenated -> 1x1 conv (C) -> GN -> ReLU -> 1x1 conv (16) -> ReLU
    a cell's mask: its CNN on [K neighbours' mask logits, context resized
      to the level's mask map] -> one logit map; Dice x 3 on it.

Mask interpolation (`mask_grids` coarser than `num_grids`): the mask
branch predicts S_m^2 < S_c^2 masks and each category cell aggregates the
4 mask cells around its position. With equal grids the 5 cells of the
cross around it (ops.aggregate.neighbour_cells).

Static shapes: in training every positive slot of SOLO's loss (cap per
image and level, SOLOHead's `max_positives` to lower it) is aggregated;
at test the `test.max_cells` best cells of each level (by their best
class score after point NMS) are: exact whenever no more cells per level
pass `test.score_thr`, as the authors aggregate every such cell.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scnet_jax import ops
from scnet_jax.errors import ConfigError
from scnet_jax.models.dense_heads.solo_head import (SOLOHead, _inside,
                                                    level_extents, point_nms)
from scnet_jax.models.layers import (CanvasGroupNorm, Conv, normal,
                                     torch_default_conv_init)
from scnet_jax.ops.aggregate import (aggregate, identity_weights,
                                     layer_shapes, neighbour_cells,
                                     num_generated)


def torch_default_bias_init(fan_in):
  """PyTorch's default conv bias: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound)


MASK_ACTIVATIONS = {"none": lambda x: x, "sigmoid": jax.nn.sigmoid,
                    "relu": jax.nn.relu}


class CellConv(nn.Module):
  """A 3x3 'same' convolution (nn.Conv's kernel [3, 3, C_in, features] and
  bias) evaluated at chosen cells only: x [B, S, S, C_in], cells [B, K]
  int32 (i * S + j) -> [B, K, features]. The generator's output is read at
  a few cells, so computing it everywhere would be waste."""
  features: int
  kernel_init: Any
  bias_init: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, cells):
    b, s, _, c = x.shape
    kernel = self.param("kernel", self.kernel_init, (3, 3, c, self.features))
    bias = self.param("bias", self.bias_init, (self.features,))
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    i, j = cells // s, cells % s
    taps = [padded[jnp.arange(b)[:, None], i + dy, j + dx]
            for dy in range(3) for dx in range(3)]       # 9 x [B, K, C]
    patches = jnp.stack(taps, 2).reshape(b, cells.shape[1], 9 * c)
    out = patches.astype(self.dtype) @ kernel.reshape(9 * c, -1).astype(
        self.dtype)
    return out + bias.astype(self.dtype)


class ResizedLevelsConv(nn.Module):
  """A 1x1 convolution (nn.Conv's kernel [1, 1, L * C, features] and
  bias) of L levels [B, H_l, W_l, C] resized onto the first one's map
  (bilinear, align corners, each level's extent onto the first's) and
  concatenated -> [B, H_0, W_0, features]. Resizing is linear and per
  channel, so each level is multiplied by its block of the kernel at its
  own size and then resized, and the sum taken: the same numbers without
  the L * C channels at the first level's size (the context branch was
  7-9 % of the tiny AggMask's training step in a profile, mostly that
  concatenation and its product)."""
  features: int
  kernel_init: Any
  bias_init: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feats, extents):
    c, n = feats[0].shape[-1], len(feats)
    kernel = self.param("kernel", self.kernel_init,
                        (1, 1, n * c, self.features))
    bias = self.param("bias", self.bias_init, (self.features,))
    blocks = kernel.reshape(n, c, self.features).astype(self.dtype)
    hw = feats[0].shape[1:3]
    out = sum(ops.resize_bilinear_align_corners(
        f.astype(self.dtype) @ w, hw, e, extents[0])
              for f, w, e in zip(feats, blocks, extents))
    return out + bias.astype(self.dtype)


class AggMaskHead(SOLOHead, kw_only=True):
  """SOLOHead's fields, plus: mask_grids (one per level, each <= the
  category grid; empty: equal to num_grids), agg_layers / agg_channels /
  agg_kernel (the generated CNN), context_channels. The test section adds
  max_cells."""
  mask_grids: Sequence[int] = ()
  agg_layers: int = 3
  agg_channels: int = 4
  agg_kernel: int = 3
  context_channels: int = 16
  # False: the authors' aggregation, generator at PyTorch's default init
  # (they start from an ImageNet backbone). True: a cell's mask is its own
  # (the mean of the 4 around it with mask interpolation) plus the
  # generated CNN's output, whose last layer starts near zero and earlier
  # layers at tanh(1) x (+-) that mix, generator kernel N(0, 0.01): so
  # training starts as SOLO. From scratch on the shapes the authors' form
  # settles on one constant mask with every ReLU dead (AP 0; also from an
  # identity start, at lr 0.005, on sigmoid inputs, and with gradients
  # clipped at norm 1); the residual form trains with
  # generator_grad_scale 0.01 (config_lib.aggmask_tiny_shapes).
  residual: bool = False
  # Multiplies the gradient that leaves the generated weights (into the
  # generator and the category tower), the forward unchanged: 1 is the
  # authors'. From scratch the generator's first gradients are ~600x
  # SOLO's whole gradient (a few generated values move a whole mask);
  # clipping the global norm to tame them (at 1) also starved the
  # category branch (0.30 segm AP against SOLO's 0.48 on the shapes).
  generator_grad_scale: float = 1.0
  # What the aggregation reads of the neighbours' masks (the authors'
  # s2_maskactivation): "none" (their configs: logits), "sigmoid", "relu".
  mask_activation: str = "none"

  @classmethod
  def check_config(cls, cfg):
    super().check_config(cfg)
    grids = cfg.num_grids
    masks = cfg.mask_grids or grids
    if len(masks) != len(grids):
      raise ConfigError(f"model.mask_head.mask_grids: one per level, "
                        f"{len(grids)} as num_grids; got {len(masks)}")
    equal = [m == s for m, s in zip(masks, grids)]
    if any(m > s for m, s in zip(masks, grids)):
      raise ConfigError("model.mask_head.mask_grids: each at most the "
                        "category grid (num_grids)")
    if cfg.mask_activation not in MASK_ACTIVATIONS:
      raise ConfigError(f"model.mask_head.mask_activation: one of "
                        f"{sorted(MASK_ACTIVATIONS)}, got "
                        f"{cfg.mask_activation!r}")
    if any(equal) and not all(equal):
      # The generator is shared by the levels: one neighbour count.
      raise ConfigError("model.mask_head.mask_grids: equal to num_grids at "
                        "every level or coarser at every level")

  @classmethod
  def check_test(cls, test):
    super().check_test(test)
    if test.get("max_cells", 0) < 1:
      raise ConfigError("model.test.max_cells: the cells per level that "
                        "get an aggregated mask at test, >= 1")

  def mask_grid(self, level):
    return (self.mask_grids or self.num_grids)[level]

  def neighbours(self, level):
    """[S_c^2, K] int32 mask cells aggregated by each category cell."""
    return neighbour_cells(self.num_grids[level], self.mask_grid(level))

  def agg_shapes(self):
    k = self.neighbours(0).shape[1]
    return layer_shapes(k + self.context_channels, self.agg_channels,
                        self.agg_layers, self.agg_kernel)

  def own_mask_mix(self):
    """[K] float32: the weights of the aggregated cells that make a
    category cell's own mask (one-hot on the centre of the cross, the
    mean of the 4 surrounding mask cells)."""
    k = self.neighbours(0).shape[1]
    return (np.eye(k, dtype=np.float32)[k // 2] if k % 2
            else np.full(k, 1.0 / k, np.float32))

  def setup(self):
    super().setup()
    shapes = self.agg_shapes()
    if self.residual:
      start = identity_weights(shapes, self.own_mask_mix())
      start[-num_generated(shapes[-1:]):] = 0.0   # the last layer
      inits = dict(kernel_init=normal(0.01),
                   bias_init=lambda *_: jnp.asarray(start))
    else:
      inits = dict(kernel_init=torch_default_conv_init(),
                   bias_init=torch_default_bias_init(self.feat_channels * 9))
    self.weight_generator = CellConv(features=num_generated(shapes),
                                     dtype=self.dtype, name="learned_weights",
                                     **inits)
    fused = self.channels * len(self.num_grids)
    self.context_reduce = ResizedLevelsConv(
        features=self.channels, kernel_init=torch_default_conv_init(),
        bias_init=torch_default_bias_init(fused), dtype=self.dtype,
        name="context_fusion_0")
    self.context_norm = CanvasGroupNorm(num_groups=self.num_groups,
                                        dtype=self.dtype,
                                        name="context_fusion_1")
    self.context_out = Conv(
        self.context_channels, (1, 1), kernel_init=torch_default_conv_init(),
        bias_init=torch_default_bias_init(self.channels), dtype=self.dtype,
        name="context_fusion_3")

  def context(self, feats, canvas):
    """P2..P6 resized to P2 (align corners, each level's canvas onto
    P2's) -> [B, H2, W2, context_channels], zero off the canvas, and its
    extents [B, 2]."""
    extents = level_extents(feats, canvas)
    inside = _inside(extents[0], feats[0].shape[1:3])
    x = nn.relu(self.context_norm(self.context_reduce(feats, extents),
                                  inside))
    x = nn.relu(self.context_out(x))
    return jnp.where(inside, x, 0.0), extents[0]

  def __call__(self, feats, canvas):
    """SOLOHead's outputs plus context [B, H2, W2, context_channels] and
    context_extent [B, 2]."""
    out = super().__call__(feats, canvas)
    out["context"], out["context_extent"] = self.context(feats, canvas)
    return out

  def generated_weights(self, out, level, cells):
    """[B, K, P] float32: tanh of the generator at cells [B, K] of the
    level's category tower feature (the aggregation's weights)."""
    w = jnp.tanh(self.weight_generator(out["cls_feats"][level], cells)
                 .astype(jnp.float32))
    g = self.generator_grad_scale
    return w if g == 1.0 else g * w + jax.lax.stop_gradient((1.0 - g) * w)

  def cell_mask_logits(self, out, level, cells, weights=None):
    """The aggregated masks of category cells `cells` [B, K] ->
    [B, K, h, w] logits at the level's mask resolution; weights: [B, K, P]
    to aggregate with instead of the generated ones (probing, tests)."""
    ext = out["mask_extents"][level]
    nb = jnp.asarray(self.neighbours(level))[cells]          # [B, K, n]
    masks = self.mask_logits_at(out, level, nb).astype(jnp.float32)
    h, w = masks.shape[-2:]                                  # [B,K,n,h,w]
    inputs = MASK_ACTIVATIONS[self.mask_activation](masks)
    ctx = ops.resize_bilinear_align_corners(
        out["context"].astype(jnp.float32), (h, w), out["context_extent"],
        ext)
    if weights is None:
      weights = self.generated_weights(out, level, cells)
    inside = _inside(ext, (h, w))
    agg = aggregate(inputs, weights, self.agg_shapes(), inside, shared=ctx)
    if self.residual:  # the cell's own logits, zero off the map as agg
      own = jnp.einsum("bknhw,n->bkhw", masks, self.own_mask_mix())
      agg = agg + jnp.where(inside[:, None, ..., 0], own, 0.0)
    return agg

  def candidates(self, out):
    """The test.max_cells best category cells of each level (by their
    best class score after point NMS), with their aggregated masks."""
    probs, scores, cell_strides = [], [], []
    for level, c in enumerate(out["cls_logits"]):
      sc = point_nms(jax.nn.sigmoid(c.astype(jnp.float32))).reshape(
          c.shape[0], -1, self.num_classes)
      m = min(sc.shape[1], self.test.max_cells)
      _, cells = jax.lax.top_k(jnp.max(sc, -1), m)
      logits = jnp.moveaxis(self.cell_mask_logits(out, level, cells), 1, -1)
      probs.append(self.probs_at_output(out, level, logits))
      scores.append(jnp.take_along_axis(sc, cells[..., None], axis=1))
      cell_strides.append(np.full(m, self.strides[level], np.float32))
    return (jnp.concatenate(probs, -1), jnp.concatenate(scores, 1),
            np.concatenate(cell_strides))
