"""SOLO's head (Wang et al. 2020; mmdet 3.3 `SOLOHead`): per FPN level an
S x S category grid and S^2 image-level masks, one per grid cell.

    P2..P6 -> resized to strides 8, 8, 16, 32, 32 (P2 halved, P6 to P5;
      `strides` may keep a level at its own, e.g. P2 at 4 for small images)
      mask tower: + CoordConv (x, y in [-1, 1] over the canvas), 7 x
        (3x3 conv, GN 32, ReLU), x2 bilinear, 1x1 conv to S^2 channels
      category tower: bilinear to S x S, 7 x (3x3 conv, GN, ReLU), 3x3
        conv to num_classes sigmoid logits
Training: targets from centre regions (ops/solo_targets.py); Focal loss
on every cell / (positives + 1), Dice loss on each positive cell's mask
at the level's mask resolution / positives. Inference (static shapes):
2x2 point NMS on the category grid, score > score_thr, masks > mask_thr
with more pixels than the level's stride, score x mean mask probability,
top nms_pre, Matrix NMS, top max_per_img; masks at level 0's mask stride
(4; 2 with P2 kept) over the canvas (structures.IMAGE_MASKS).

Maps are NHWC; each image's canvas (structures.Canvas) is the region
mmdet computes on, and every spatial op reads only that region.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scnet_jax import ops
from scnet_jax.errors import ConfigError
from scnet_jax.models.layers import Conv, ConvGN, normal
from scnet_jax.models.losses import dice, normalizer, sigmoid_focal
from scnet_jax.models.structures import IMAGE_MASKS, Detections, keys_for
from scnet_jax.ops.matrix_nms import KERNELS, matrix_nms
from scnet_jax.ops.solo_targets import (center_of_mass, level_targets,
                                        rescaled_masks)

# mmdet's bias_init_with_prob(0.01): sigmoid(bias) = 0.01 at the start.
PRIOR_BIAS = float(-np.log((1 - 0.01) / 0.01))


def coordinates(inside_hw, map_hw):
  """[B, h, w, 2] (x, y) CoordConv channels, mmdet's generate_coordinate
  on each image's map: linspace(-1, 1) over its extent, zero past it.
  inside_hw: [B, 2] int32 extents; map_hw: static (h, w)."""
  def axis(n, ext):
    i = jnp.arange(n, dtype=jnp.float32)[None, :]
    e = ext.astype(jnp.float32)[:, None]
    v = -1.0 + 2.0 * i / jnp.maximum(e - 1.0, 1.0)
    return jnp.where(i < e, v, 0.0)
  y = axis(map_hw[0], inside_hw[:, 0])[:, :, None]
  x = axis(map_hw[1], inside_hw[:, 1])[:, None, :]
  y, x = jnp.broadcast_arrays(y, x)
  return jnp.stack([x, y], -1)


class SOLOHead(nn.Module, kw_only=True):
  """Fields as mmdet's SOLOHead (stacked_convs, strides (each level's
  input stride: P(l+2)'s own 4 * 2^l, twice it or half it), scale_ranges
  (min, max) of sqrt(box area), num_grids, pos_scale); the loss weights
  and focal parameters; max_positives (one per level, > 0: at most that
  many positive cells per image enter the level's mask loss; 0, or the
  sequence empty: every one, mmdet's SOLO); test: the model's test
  section (score_thr, mask_thr, filter_thr, nms_pre, max_per_img, kernel,
  sigma). Injected by the detector: num_classes, channels (the neck's),
  dtype, axis_name."""
  num_classes: int
  channels: int
  test: Any
  feat_channels: int = 256
  stacked_convs: int = 7
  strides: Sequence[int] = (8, 8, 16, 32, 32)
  scale_ranges: Sequence[Sequence[float]] = ((1, 96), (48, 192), (96, 384),
                                             (192, 768), (384, 2048))
  num_grids: Sequence[int] = (40, 36, 24, 16, 12)
  pos_scale: float = 0.2
  num_groups: int = 32
  focal_gamma: float = 2.0
  focal_alpha: float = 0.25
  loss_cls_weight: float = 1.0
  loss_mask_weight: float = 3.0
  # The mask loss's cost grows with these slots, filled or not, times the
  # level's map size (AggMask's aggregation most of all): per-level caps
  # let the levels where the positives lie keep theirs without paying
  # the same at the others.
  max_positives: Sequence[int] = ()
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None

  @classmethod
  def check_config(cls, cfg):
    n = len(cfg.num_grids)
    for field in ("strides", "scale_ranges"):
      if len(cfg[field]) != n:
        raise ConfigError(f"model.mask_head.{field}: one per level, "
                          f"{n} as num_grids; got {len(cfg[field])}")
    for level, stride in enumerate(cfg.strides):
      own = pyramid_stride(level)
      if stride not in (own, 2 * own) and not (level and 2 * stride == own):
        raise ConfigError(
            f"model.mask_head.strides[{level}]: P{level + 2}'s own stride "
            f"{own}, twice it, or half it (not at P2); got {stride}")
    caps = cfg.max_positives
    if caps and (len(caps) != n or min(caps) < 0):
      raise ConfigError(f"model.mask_head.max_positives: one per level "
                        f"({n}), each >= 0, or none; got {tuple(caps)}")
    if cfg.feat_channels % cfg.num_groups:
      raise ConfigError("model.mask_head.feat_channels: a multiple of "
                        "num_groups (GroupNorm)")

  @classmethod
  def check_test(cls, test):
    if test.kernel not in KERNELS:
      raise ConfigError(f"model.test.kernel: one of {KERNELS}, got "
                        f"{test.kernel!r}")

  def mask_grid(self, level):
    """Side of the level's mask grid (S^2 mask channels); AggMask's can
    be coarser than the category grid."""
    return self.num_grids[level]

  def setup(self):
    init = normal(0.01)
    tower = lambda name: [ConvGN(features=self.feat_channels,
                                 num_groups=self.num_groups,
                                 kernel_init=init, dtype=self.dtype,
                                 name=f"{name}_{i}")
                          for i in range(self.stacked_convs)]
    self.mask_convs = tower("mask_convs")
    self.cls_convs = tower("cls_convs")
    prior = nn.initializers.constant(PRIOR_BIAS)
    self.conv_mask_list = [
        Conv(self.mask_grid(i) ** 2, (1, 1), kernel_init=init,
             bias_init=prior, dtype=self.dtype, name=f"conv_mask_list_{i}")
        for i in range(len(self.num_grids))]
    self.conv_cls = Conv(self.num_classes, (3, 3), padding=((1, 1),) * 2,
                         kernel_init=init, bias_init=prior, dtype=self.dtype,
                         name="conv_cls")

  def head_inputs(self, feats, canvas):
    """The pyramid at the head's strides: level l (P(l+2), stride 4 * 2^l)
    is halved when strides[l] is twice its own (mmdet: P2 to 8), resized
    onto the level below when half (P6 to P5's 32), bilinear, half-pixel
    -> list of ([B, h, w, C], [B, 2] extents)."""
    out = []
    extents = level_extents(feats, canvas)
    for i, (x, ext) in enumerate(zip(feats, extents)):
      own = pyramid_stride(i)
      if self.strides[i] == 2 * own:
        hw = (x.shape[1] // 2, x.shape[2] // 2)
        x, ext = ops.resize_bilinear_half_pixel(x, hw, ext, ext // 2), \
            ext // 2
      elif self.strides[i] * 2 == own:
        hw = feats[i - 1].shape[1:3]
        x, ext = ops.resize_bilinear_half_pixel(x, hw, ext, extents[i - 1]), \
            extents[i - 1]
      out.append((x, ext))
    return out

  def __call__(self, feats, canvas):
    """feats: the neck's P2..P6 [B, H_l, W_l, C]; canvas: structures.Canvas.
    Returns a dict of per-level lists: mask_feats [B, 2h_l, 2w_l,
    feat_channels] (the mask tower's upsampled output, zero outside each
    image's canvas region of the map), mask_logits [B, 2h_l, 2w_l, M_l^2]
    (M_l = mask_grid(l); conv_mask_list of mask_feats), mask_extents
    [B, 2] (that region), cls_logits [B, S_l, S_l, num_classes],
    cls_feats [B, S_l, S_l, feat_channels] (the category tower's
    output)."""
    out = {k: [] for k in ("mask_feats", "mask_logits", "mask_extents",
                           "cls_logits", "cls_feats")}
    for level, (x, ext) in enumerate(self.head_inputs(feats, canvas)):
      hw = x.shape[1:3]
      inside = _inside(ext, hw)
      m = jnp.concatenate([x, coordinates(ext, hw).astype(x.dtype)], -1)
      for conv in self.mask_convs:
        m = conv(m, inside)
      up = (2 * hw[0], 2 * hw[1])
      m = ops.resize_bilinear_half_pixel(m, up, ext, 2 * ext)
      out["mask_feats"].append(m)
      out["mask_logits"].append(self.conv_mask_list[level](m))
      out["mask_extents"].append(2 * ext)
      s = self.num_grids[level]
      grid = jnp.full_like(ext, s)
      c = ops.resize_bilinear_half_pixel(x, (s, s), ext, grid)
      for conv in self.cls_convs:
        c = conv(c)
      out["cls_feats"].append(c)
      out["cls_logits"].append(self.conv_cls(c))
    return out

  def most_positives(self, level, num_gt):
    """The most positive cells an image can have at `level`: each ground
    truth claims at most 3 x 3 of the S x S cells."""
    s = self.num_grids[level]
    return min(s * s, 9 * num_gt)

  def positive_cap(self, level, num_gt):
    """Static number of positive slots per image at `level`: without
    max_positives, most_positives (exact); with it, an image with more
    positives than that gives the mask loss a random subset of them
    (positive_slots)."""
    cap = self.most_positives(level, num_gt)
    limit = self.max_positives[level] if self.max_positives else 0
    return min(cap, limit) if limit > 0 else cap

  def positive_slots(self, level, positive, num_gt, keys):
    """positive [B, S^2] bool -> [B, positive_cap] int32 cells, the
    positives first. When an image has more than the cap, which ones is
    drawn with its key of `keys` [B], uniformly and fresh each step: the
    first in raster order would leave out the same objects' cells every
    time, those lowest in the image."""
    cap = self.positive_cap(level, num_gt)
    if cap == self.most_positives(level, num_gt):   # room for all
      (idx,) = jax.vmap(lambda p: jnp.nonzero(p, size=cap, fill_value=0))(
          positive)
      return idx
    draw = jax.vmap(lambda k: jax.random.uniform(k, positive.shape[1:]))(
        keys)
    return jax.lax.top_k(jnp.where(positive, draw, -1.0), cap)[1]

  def mask_logits_at(self, out, level, cells):
    """Channels `cells` [B, ...] int32 (mask cells i * M + j) of the
    level's mask logits -> [B, ..., h, w]: out["mask_logits"][level] at
    those channels, computed as the mask features times those columns of
    conv_mask_list's kernel. A training step reads no other channel, so
    XLA drops the full M^2-channel map, and with it the gather across
    channels and the transposes to cell-major maps with their gradients
    (the tiny AggMask's training step: 378 -> 360 ms, medians of 8
    interleaved rounds on a 2-core CPU)."""
    p = self.conv_mask_list[level].variables["params"]
    flat = cells.reshape(cells.shape[0], -1)
    kernel = jnp.take(p["kernel"][0, 0], flat, axis=1)       # [C, B, N]
    feats = out["mask_feats"][level]
    y = jnp.einsum("bhwc,cbn->bnhw", feats.astype(self.dtype),
                   kernel.astype(self.dtype))
    y = y + p["bias"][flat][..., None, None].astype(self.dtype)
    return y.reshape(cells.shape + feats.shape[1:3])

  def cell_mask_logits(self, out, level, cells):
    """Mask logits of category cells `cells` [B, K] int32 (i * S + j) ->
    [B, K, h, w] at the level's mask resolution (SOLO: the cell's own
    mask channel). A function of the head's outputs `out` only."""
    return self.mask_logits_at(out, level, cells)

  def loss(self, feats, canvas, gt, keys):
    """Named float32 losses: loss_cls (Focal over every cell / (positives
    + 1)), loss_mask (Dice x 3, mean over the positives' masks; every
    positive has one unless positive_cap leaves some out). keys: [B]
    per-image PRNG keys (the positives drawn under a cap)."""
    out = self(feats, canvas)
    com_h, com_w, area = jax.vmap(jax.vmap(center_of_mass))(
        gt.mask_crops, gt.mask_windows)
    nonempty = area > 0
    g = gt.boxes.shape[1]
    num_pos, num_masks, focal_sum, dice_sum = 0.0, 0.0, 0.0, 0.0
    for level, cls_logits in enumerate(out["cls_logits"]):
      s = self.num_grids[level]
      targets = jax.vmap(lambda b, l, v, ch, cw, ne, hw: level_targets(
          b, l, v, (ch, cw), ne, hw, num_grid=s,
          scale_range=tuple(self.scale_ranges[level]),
          pos_scale=self.pos_scale, num_classes=self.num_classes))
      labels, positive, owner = targets(gt.boxes, gt.labels, gt.valid,
                                        com_h, com_w, nonempty, canvas.hw)
      onehot = jax.nn.one_hot(labels, self.num_classes + 1)[..., :-1]
      focal_sum += jnp.sum(sigmoid_focal(cls_logits, onehot,
                                         self.focal_gamma, self.focal_alpha))
      num_pos += jnp.sum(positive)
      idx = self.positive_slots(level, positive, g, keys_for(keys, f"level_{level}"))
      cap = idx.shape[1]
      used = jnp.arange(cap)[None] < jnp.sum(positive, -1, keepdims=True)
      num_masks += jnp.sum(used)
      pred = self.cell_mask_logits(out, level, idx)
      hw = pred.shape[2:]
      out_stride = canvas.bucket[0] // hw[0]
      inside = _inside(out["mask_extents"][level], hw)[..., 0]

      def image_dice(pred, idx, own, used, crops, windows, ins):
        target = rescaled_masks(crops, windows, hw, out_stride)[own[idx]]
        loss = dice(pred, target, jnp.broadcast_to(ins, pred.shape))
        return jnp.sum(jnp.where(used, loss, 0.0))

      dice_sum += jnp.sum(jax.vmap(image_dice)(
          pred, idx, owner, used, gt.mask_crops, gt.mask_windows, inside))
    return {"loss_cls": self.loss_cls_weight * focal_sum /
                        normalizer(num_pos + 1, self.axis_name),
            "loss_mask": self.loss_mask_weight * dice_sum /
                         normalizer(num_masks, self.axis_name)}

  def candidates(self, out):
    """The cells scored at test: (mask probabilities [B, h, w, N] at the
    first level's mask resolution, zero outside the canvas; their
    category scores after point NMS [B, N, num_classes]; each one's
    level stride [N]). SOLO: every cell of every level."""
    probs, scores, cell_strides = [], [], []
    for level, c in enumerate(out["cls_logits"]):
      probs.append(self.probs_at_output(out, level,
                                        out["mask_logits"][level]))
      scores.append(point_nms(jax.nn.sigmoid(c.astype(jnp.float32)))
                    .reshape(c.shape[0], -1, self.num_classes))
      cell_strides.append(np.full(probs[-1].shape[-1], self.strides[level],
                                  np.float32))
    return (jnp.concatenate(probs, -1), jnp.concatenate(scores, 1),
            np.concatenate(cell_strides))

  def probs_at_output(self, out, level, logits):
    """Sigmoid of `level`'s mask logits [B, h, w, K], resized (bilinear,
    half-pixel) onto the first level's mask map -> [B, h0, w0, K]."""
    out_hw = out["mask_logits"][0].shape[1:3]
    out_ext = out["mask_extents"][0]
    ext = out["mask_extents"][level]
    p = jax.nn.sigmoid(logits.astype(jnp.float32))
    if p.shape[1:3] == out_hw:
      return jnp.where(_inside(ext, out_hw), p, 0.0)
    return ops.resize_bilinear_half_pixel(p, out_hw, ext, out_ext)

  def predict(self, feats, canvas):
    """Detections with image-level masks at level 0's mask stride over the
    canvas; boxes are the masks' bounding boxes (mmdet's SOLO returns
    none)."""
    out = self(feats, canvas)
    self.sow("intermediates", "mask_logits", tuple(out["mask_logits"]))
    self.sow("intermediates", "cls_logits", tuple(out["cls_logits"]))
    t = self.test
    probs, scores, cell_strides = self.candidates(out)
    stride = canvas.bucket[0] // probs.shape[1]
    b, h, w, n = probs.shape
    flat = probs.reshape(b, h * w, n)
    binary = (flat > t.mask_thr).astype(jnp.float32)
    area = jnp.sum(binary, 1)                     # [B, N]
    maskness = jnp.sum(flat * binary, 1) / jnp.maximum(area, 1.0)
    keep = (scores > t.score_thr) & (area > jnp.asarray(cell_strides))[
        ..., None]
    cand = jnp.where(keep, scores * maskness[..., None], -1.0)
    k = min(t.nms_pre, n * self.num_classes)
    top, index = jax.lax.top_k(cand.reshape(b, -1), k)
    cell, label = index // self.num_classes, index % self.num_classes

    def image_nms(bin_, top, cell, label, area):
      cand_masks = jnp.take(bin_, cell, axis=1).T
      return matrix_nms(cand_masks, label, top, top >= 0,
                        jnp.take(area, cell), kernel=t.kernel,
                        sigma=t.sigma, filter_thr=t.filter_thr,
                        max_num=t.max_per_img)

    det_scores, det_labels, which, valid = jax.vmap(image_nms)(
        binary, top, cell, label, area)
    det_cell = jnp.take_along_axis(cell, which, 1)
    det_masks = jnp.take_along_axis(flat, det_cell[:, None, :], 2)
    det_masks = jnp.where(valid[:, None, :], det_masks, 0.0)
    det_masks = jnp.moveaxis(det_masks, -1, 1).reshape(b, -1, h, w)
    boxes = mask_boxes(det_masks > t.mask_thr, stride, canvas.image_hw)
    return Detections(boxes=boxes, scores=det_scores, labels=det_labels,
                      num_detections=jnp.sum(valid, 1).astype(jnp.int32),
                      masks=det_masks, mask_kind=IMAGE_MASKS,
                      mask_stride=stride)


def pyramid_stride(level):
  """Stride of the neck's level `level` (P2..P6: 4..64), the one the head's
  `strides` resize from."""
  return 4 * 2 ** level


def level_extents(feats, canvas):
  """[B, 2] canvas extents of the neck's levels. The last level (P6) is
  P5[::2, ::2]: ceil(P5's extent / 2), which Canvas.extent misses when
  the bucket is not a multiple of 64."""
  extents = [canvas.extent(x.shape[1:3]) for x in feats[:-1]]
  return extents + [(extents[-1] + 1) // 2]


def _inside(ext, hw):
  """[B, h, w, 1] bool: the first ext [B, 2] rows and columns."""
  ys = jnp.arange(hw[0])[None, :] < ext[:, 0:1]
  xs = jnp.arange(hw[1])[None, :] < ext[:, 1:2]
  return (ys[:, :, None] & xs[:, None, :])[..., None]


def point_nms(probs):
  """SOLO's 2x2 point NMS: a cell keeps its score where it is the maximum
  of itself and its top, left and top-left neighbours (mmdet: max_pool2d
  kernel 2, stride 1, padding 1, cropped). probs [B, S, S, C]."""
  pad = jnp.pad(probs, ((0, 0), (1, 0), (1, 0), (0, 0)),
                constant_values=-jnp.inf)
  local = jnp.maximum(jnp.maximum(pad[:, 1:, 1:], pad[:, :-1, 1:]),
                      jnp.maximum(pad[:, 1:, :-1], pad[:, :-1, :-1]))
  return probs * (local == probs)


def mask_boxes(masks, stride, image_hw):
  """(x1, y1, x2, y2) [B, D, 4] image pixels of binary masks [B, D, h, w]
  at `stride` (the cells' outer edges, clipped to image_hw [B, 2]); zero
  for an empty mask."""
  rows, cols = jnp.any(masks, 3), jnp.any(masks, 2)
  def span(v):
    n = v.shape[-1]
    idx = jnp.arange(n)
    lo = jnp.min(jnp.where(v, idx, n), -1)
    hi = jnp.max(jnp.where(v, idx + 1, 0), -1)
    return lo, hi
  y1, y2 = span(rows)
  x1, x2 = span(cols)
  box = jnp.stack([x1, y1, x2, y2], -1).astype(jnp.float32) * stride
  hw = image_hw.astype(jnp.float32)[:, None]
  box = jnp.minimum(box, jnp.stack([hw[..., 1], hw[..., 0]] * 2, -1))
  return jnp.where(jnp.any(rows, -1)[..., None], box, 0.0)
