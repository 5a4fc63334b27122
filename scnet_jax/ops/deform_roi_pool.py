"""Deformable RoI pooling (mmcv 2.x `DeformRoIPool`, Dai et al. 2017 /
Zhu et al. 2019): RoIAlign whose bins are each moved by a learned offset,
differentiable in the offsets.

For RoI (x1, y1, x2, y2) at spatial scale s, bin (i, j) of an oh x ow
grid and offsets (dx, dy)[i, j] the bin's samples sit at

    x = x1 * s - 0.5 + gamma * w * dx + (j + (gx + 0.5) / g) * w / ow

(w = (x2 - x1) * s; y alike), g x g samples per bin read bilinearly
with RoIAlign's border rule (a sample past [-1, size] reads 0). Zero
offsets give RoIAlign with aligned=True. The boxes get no gradient; the
offsets do, through the bilinear weights (piecewise linear in them).

Static shapes: sampling_ratio > 0 (samples per bin axis), or 0 for the
adaptive rule ceil(roi_size / output_size) capped at max_grid, as
ops.roi_align.
"""
import jax
import jax.numpy as jnp

from scnet_jax.ops._checks import check_positive_size


def _bilinear_taps(pos, length):
  """Positions [...] along an axis of `length` pixels -> (index [..., 2]
  int32, weight [..., 2]) with RoIAlign's border rule."""
  n = jnp.asarray(length, pos.dtype)
  inside = (pos >= -1.0) & (pos <= n)
  pos = jnp.maximum(pos, 0.0)
  low = jnp.floor(jax.lax.stop_gradient(pos))
  at_edge = low >= n - 1.0
  low = jnp.where(at_edge, n - 1.0, low)
  high = jnp.where(at_edge, n - 1.0, low + 1.0)
  frac = jnp.where(at_edge, 0.0, pos - low)
  index = jnp.stack([low, high], axis=-1).astype(jnp.int32)
  weight = jnp.stack([1.0 - frac, frac], axis=-1) * inside[..., None]
  return index, weight


def deform_roi_pool(features, rois, offsets, output_size, spatial_scale,
                    sampling_ratio, gamma=0.1, max_grid=4):
  """Deformable RoI pooling on a batch.

  Args:
    features: [B, H, W, C] float32 or bfloat16.
    rois: [B, K, 4] (x1, y1, x2, y2) in image pixels (no gradient).
    offsets: [B, K, oh, ow, 2] (dx, dy) per bin, in units of gamma x the
      RoI's width / height; None for zero offsets.
    output_size: int or (oh, ow).
    spatial_scale: feature pixels per image pixel.
    sampling_ratio: samples per bin axis; 0 for the adaptive rule.
    gamma: offset scale (mmcv's default 0.1).
    max_grid: static cap of the adaptive rule.
  Returns:
    [B, K, oh, ow, C] in the features' dtype.
  """
  oh, ow = check_positive_size("deform_roi_pool output_size", output_size)
  if sampling_ratio < 0:
    raise ValueError(f"deform_roi_pool sampling_ratio must be >= 0, got "
                     f"{sampling_ratio}")
  bsz, h, w, c = features.shape
  k = rois.shape[1]
  # Positions and weights in float32 (float64 for float64 features).
  dt = jnp.promote_types(features.dtype, jnp.float32)
  r = jax.lax.stop_gradient(rois.astype(dt)) * spatial_scale - 0.5
  rw = r[..., 2] - r[..., 0]
  rh = r[..., 3] - r[..., 1]
  if sampling_ratio > 0:
    cap = int(sampling_ratio)
    gh = gw = jnp.full(rw.shape, cap, jnp.int32)
  else:
    cap = int(max_grid)
    gh = jnp.clip(jnp.ceil(rh / oh), 1, cap).astype(jnp.int32)
    gw = jnp.clip(jnp.ceil(rw / ow), 1, cap).astype(jnp.int32)
  if offsets is None:
    offsets = jnp.zeros((bsz, k, oh, ow, 2), dt)
  off = offsets.astype(dt)
  g = jnp.arange(cap, dtype=dt)

  def positions(start, size, bins, grid, shift, axis):
    # [B, K, oh, ow, cap] sample positions along one axis.
    b = jnp.arange(bins, dtype=dt)
    b = b[:, None] if axis == 0 else b[None, :]
    gridf = grid.astype(dt)[..., None, None, None]
    base = (start[..., None, None] + gamma * size[..., None, None] * shift +
            b * (size / bins)[..., None, None])[..., None]
    return base + (g + 0.5) * (size / bins)[..., None, None, None] / gridf

  ys = positions(r[..., 1], rh, oh, gh, off[..., 1], 0)
  xs = positions(r[..., 0], rw, ow, gw, off[..., 0], 1)
  iy, wy = _bilinear_taps(ys, h)
  ix, wx = _bilinear_taps(xs, w)
  wy = wy * (g < gh[..., None, None, None])[..., None]
  wx = wx * (g < gw[..., None, None, None])[..., None]
  count = (gh * gw).astype(dt)[..., None, None]
  # Every (sample y, sample x) pair of a bin: [B, K, oh, ow, T] taps.
  t = (cap * 2) ** 2
  shape = (bsz, k, oh, ow, t)
  index = (iy.reshape(bsz, k, oh, ow, cap * 2, 1) * w +
           ix.reshape(bsz, k, oh, ow, 1, cap * 2)).reshape(shape)
  weight = (wy.reshape(bsz, k, oh, ow, cap * 2, 1) *
            wx.reshape(bsz, k, oh, ow, 1, cap * 2)).reshape(shape)
  image = jnp.arange(bsz, dtype=jnp.int32)[:, None, None, None, None]
  flat = features.reshape(-1, c)
  values = jnp.take(flat, index + image * (h * w), axis=0, mode="clip")
  out = jnp.sum(values.astype(dt) * weight[..., None], axis=-2)
  return (out / count[..., None]).astype(features.dtype)
