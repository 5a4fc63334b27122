"""RoIAlign with torchvision / mmcv semantics, as a gather.

Each output bin averages grid_h x grid_w bilinear samples. Several FPN
levels are handled in one gather: the levels (and the images of a batch)
are flattened into one [sum(B * H_l * W_l), C] buffer and each RoI carries
its level's offset, size and scale.

sampling_ratio > 0 uses that many samples per bin axis; every sample reads
4 pixels, gathered by flat index and reduced with their weights (cost
K * oh * ow * (2 * sampling_ratio)^2 * C reads).

sampling_ratio = 0 is mmdetection's adaptive rule, exactly: ceil(roi_size /
output_size) samples per bin axis, per RoI, with no cap. The average of a
bin's samples is separable, Wy[i, :] (x) Wx[j, :], where Wy[i, p] is the sum
of the samples' bilinear hat functions on pixel row p, in closed form
(`_hat_weights`); its support is a window of at most grid + 1 pixels (the
samples are under a pixel apart). Each bin reads its window in T x T pixel
tiles: a RoI needing up to T - 1 samples per axis costs one tile (T^2 reads
per bin instead of 4 per sample), larger RoIs a few more. Over FPN levels T
fits the largest square RoI the level mapping sends to a level (5 for 7x7
bins, 3 for 14x14 with mmdet's finest_scale 56 from stride 4); on one map
it is TILE. The tiles of all RoIs form one work list, processed in
fixed-size chunks by a loop whose trip count follows the list's length, so
shapes stay static and the cost follows what each RoI needs (a RoI with no
sample inside the map costs nothing). Its gradient is a custom VJP looping
over the same chunks (a scatter-add of the window taps; the boxes' gradient
from the closed-form weights when asked).

The dense method (small maps) builds the full per-axis matrices Ay [K, oh,
H], Ax [K, ow, W] from the same closed form and computes Ay F Ax^T with
matmuls, forward and backward.

The boxes get no gradient unless `roi_grad=True`: then the bilinear weights
stay differentiable in the box coordinates (exact wherever bilinear
sampling is; the sample counts and the FPN level are piecewise constant
and not differentiated). Float64 inputs are computed in float64,
bfloat16 ones in float32 (ops/precision.py), the output in the inputs'
dtype.
"""

import functools
import math

import jax
import jax.numpy as jnp

from scnet_jax.ops._checks import check_positive_size, check_rank
from scnet_jax.ops.precision import float32_island

# Largest gathered tap array (elements) built at once; 2^26 floats = 256 MiB.
MAX_GATHER_ELEMENTS = 1 << 26
# Pixels per axis of a single-level adaptive-sampling window tile.
TILE = 4


def _compute_dtype(dtype):
  # float64 only when asked for (finite-difference checks); else float32.
  return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _roi_frames(rois, scale, aligned, roi_grad, dtype):
  """(x1, y1, roi_w, roi_h) [K] in feature pixels, mmcv's rule."""
  rois = rois.astype(dtype)
  if not roi_grad:
    rois = jax.lax.stop_gradient(rois)
  scale = scale.astype(dtype)
  shift = 0.5 if aligned else 0.0
  x1 = rois[:, 0] * scale - shift
  y1 = rois[:, 1] * scale - shift
  rw = rois[:, 2] * scale - shift - x1
  rh = rois[:, 3] * scale - shift - y1
  if not aligned:
    rw = jnp.maximum(rw, 1.0)
    rh = jnp.maximum(rh, 1.0)
  return x1, y1, rw, rh


def _grid(length, out_len, sampling_ratio):
  """[K] int32 samples per bin along an axis (0 or less: none)."""
  if sampling_ratio > 0:
    return jnp.full(length.shape, sampling_ratio, jnp.int32)
  return jnp.ceil(jax.lax.stop_gradient(length) / out_len).astype(jnp.int32)


def _first_samples(start, length, out_len, grid):
  """First sample of every bin [K, out_len] and the spacing [K]."""
  spacing = length / out_len / jnp.maximum(grid, 1).astype(length.dtype)
  bins = jnp.arange(out_len, dtype=length.dtype)
  first = (start[:, None] + bins * (length / out_len)[:, None] +
           0.5 * spacing[:, None])
  return first, spacing


def _hat_weights(p, first, spacing, grid, extent):
  """Averaged bilinear weight of a bin's samples on pixel p, closed form.

  The bin's samples are y_a = first + a * spacing, a < grid. mmcv's border
  rule: a sample outside [-1, extent] is dropped; one in [-1, 0) reads pixel
  0, one in (extent - 1, extent] reads pixel extent - 1; the rest split
  between floor(y) and floor(y) + 1. So the weight on p sums the hat
  1 - |p - y_a| over the samples in (p - 1, p + 1) that lie in
  [0, extent - 1], plus the clamped ones on the two edge pixels, / grid.
  Each group is a run of consecutive a, summed as an arithmetic series.

  Args (broadcastable): p int pixel index; first, spacing float; grid,
    extent int. Returns: float weight (0 off the support, and for p outside
    [0, extent)).
  """
  dt = first.dtype
  first, spacing, grid = _ascending(first, spacing, grid)
  inv = 1.0 / spacing
  last = grid.astype(dt) - 1.0
  n = extent.astype(dt)
  pf = p.astype(dt)
  below = lambda q: jnp.floor((q - first) * inv)   # last a with y_a <= q
  above = lambda q: jnp.ceil((q - first) * inv)    # first a with y_a >= q
  def run(lo, hi):
    lo, hi = jnp.maximum(lo, 0.0), jnp.minimum(hi, last)
    return jnp.maximum(hi - lo + 1.0, 0.0), lo, hi
  mid_lo, mid_hi = above(0.0), below(n - 1.0)
  n_top, _, _ = run(above(-1.0), mid_lo - 1.0)
  n_bottom, _, _ = run(mid_hi + 1.0, below(n))
  # Sums are taken relative to a0, the last sample at or before p (kept in
  # [0, grid)), so they stay small numbers wherever the RoI is.
  b0 = below(pf)
  a0 = jnp.clip(b0, 0.0, jnp.maximum(last, 0.0))
  e0 = (first - pf) + a0 * spacing                 # y_{a0} - p
  c_l, lo, hi = run(jnp.maximum(below(pf - 1.0) + 1.0, mid_lo),
                    jnp.minimum(b0, mid_hi))
  left = c_l * (1.0 + e0) + spacing * (lo + hi - 2.0 * a0) * c_l * 0.5
  c_r, lo, hi = run(jnp.maximum(b0 + 1.0, mid_lo),
                    jnp.minimum(above(pf + 1.0) - 1.0, mid_hi))
  right = c_r * (1.0 - e0) - spacing * (lo + hi - 2.0 * a0) * c_r * 0.5
  edge = (n_top * (p == 0) + n_bottom * (pf == n - 1.0)).astype(dt)
  inside = (p >= 0) & (pf < n)
  return jnp.where(inside, left + right + edge, 0.0) / jnp.maximum(
      last + 1.0, 1.0)


def _ascending(first, spacing, grid):
  """The same sample set with spacing > 0: an inverted box (fixed
  sampling_ratio) runs backwards, and coincident samples (zero size) are
  one sample."""
  back = spacing < 0
  first = jnp.where(back, first + (grid - 1).astype(first.dtype) * spacing,
                    first)
  spacing = jnp.abs(spacing)
  grid = jnp.where((spacing == 0) & (grid > 0), 1, grid)
  return first, jnp.where(spacing > 0, spacing, 1.0), grid


def _window(first, spacing, grid, extent):
  """First pixel [K, out] and pixel count [K, out] (0: no sample inside the
  border) of each bin's support, from its first and last kept samples."""
  first, spacing = jax.lax.stop_gradient((first, spacing))
  first, spacing, grid = _ascending(first, spacing[:, None], grid[:, None])
  n = extent.astype(first.dtype)[:, None]
  g = grid.astype(first.dtype)
  inv = 1.0 / spacing
  a_lo = jnp.maximum(jnp.ceil((-1.0 - first) * inv), 0.0)
  a_hi = jnp.minimum(jnp.floor((n - first) * inv), g - 1.0)
  pix = lambda a: jnp.floor(jnp.clip(first + a * spacing, 0.0, n - 1.0))
  p_lo = pix(a_lo)
  p_hi = jnp.minimum(pix(a_hi) + 1.0, n - 1.0)
  count = jnp.where(a_hi >= a_lo, p_hi - p_lo + 1.0, 0.0)
  return p_lo.astype(jnp.int32), count.astype(jnp.int32)


def _axis_samples(start, bin_size, out_len, grid, cap, length):
  """1-D sample positions and bilinear taps along one axis.

  Args:
    start: [K] RoI start on this axis (feature pixels).
    bin_size: [K] bin size.
    out_len: static output length along the axis.
    grid: [K] int samples per bin (<= cap); 0 means no samples.
    cap: static maximum of grid.
    length: [K] border-rule length along the axis.
  Returns:
    index: [K, out_len, cap, 2] int32 low/high pixel index.
    weight: [K, out_len, cap, 2] bilinear weight (start's dtype), 0 for
      samples past `grid` or outside [-1, length].
  """
  dt = start.dtype
  p = jnp.arange(out_len, dtype=dt)[None, :, None]
  g = jnp.arange(cap, dtype=dt)[None, None, :]
  gridf = jnp.maximum(grid, 1).astype(dt)[:, None, None]
  b = bin_size[:, None, None]
  pos = start[:, None, None] + p * b + (g + 0.5) * b / gridf
  n = length.astype(dt)[:, None, None]
  inside = (pos >= -1.0) & (pos <= n) & (g < grid[:, None, None])
  pos = jnp.maximum(pos, 0.0)
  low = jnp.floor(pos)
  at_edge = low >= n - 1.0
  low = jnp.where(at_edge, n - 1.0, low)
  high = jnp.where(at_edge, n - 1.0, low + 1.0)
  pos = jnp.where(at_edge, low, pos)
  frac = pos - low
  index = jnp.stack([low, high], axis=-1).astype(jnp.int32)
  weight = jnp.stack([1.0 - frac, frac], axis=-1) * inside[..., None]
  return index, weight


def _chunked(fn, args, per_item, k):
  """fn over the leading axis of args, in chunks bounding the gathered
  taps (materialised before their reduction) to MAX_GATHER_ELEMENTS."""
  if k * per_item > MAX_GATHER_ELEMENTS and k > 1:
    return jax.lax.map(fn, args, batch_size=max(
        1, MAX_GATHER_ELEMENTS // per_item))
  return fn(args)


def _sample_gather(flat, rois, scale, width, offset, extent, output_size,
                   grid_h, grid_w, cap, aligned, roi_grad):
  """Gather of every bin's grid_h x grid_w samples (<= cap per axis), 4
  taps each: the fixed sampling_ratio kernel.

  Args: as `_roi_align_flat`; grid_h, grid_w [K] int32. Returns [K, oh, ow,
    C] in the compute dtype.
  """
  oh, ow = output_size
  dt = _compute_dtype(flat.dtype)
  x1, y1, rw, rh = _roi_frames(rois, scale, aligned, roi_grad, dt)
  iy, wy = _axis_samples(y1, rh / oh, oh, grid_h, cap, extent[0])
  ix, wx = _axis_samples(x1, rw / ow, ow, grid_w, cap, extent[1])
  wy = wy / jnp.maximum(grid_h, 1).astype(dt)[:, None, None, None]
  wx = wx / jnp.maximum(grid_w, 1).astype(dt)[:, None, None, None]
  k = rois.shape[0]
  taps = cap * 2
  iy = iy.reshape(k, oh, 1, taps, 1)
  wy = wy.reshape(k, oh, 1, taps, 1)
  ix = ix.reshape(k, 1, ow, 1, taps)
  wx = wx.reshape(k, 1, ow, 1, taps)
  index = (offset[:, None, None, None, None] + iy *
           width[:, None, None, None, None] + ix).reshape(k, oh, ow,
                                                          taps * taps)
  weight = (wy * wx).reshape(k, oh, ow, taps * taps)
  def gather(idx_w):
    idx, wgt = idx_w
    values = jnp.take(flat, idx, axis=0, mode="clip")
    return jnp.sum(values.astype(dt) * wgt[..., None], axis=-2)
  return _chunked(gather, (index, weight),
                  oh * ow * taps * taps * flat.shape[-1], k)


class _Plan:
  """The adaptive work list: per-RoI windows and tile counts (int32, no
  gradient) and the item -> (RoI, tile) map."""

  def __init__(self, rois, scale, meta, output_size, aligned, tile, dtype):
    oh, ow = output_size
    x1, y1, rw, rh = _roi_frames(rois, scale, aligned, False, dtype)
    self.grid_h, self.grid_w = _grid(rh, oh, 0), _grid(rw, ow, 0)
    fy, sy = _first_samples(y1, rh, oh, self.grid_h)
    fx, sx = _first_samples(x1, rw, ow, self.grid_w)
    self.lo_y, ny = _window(fy, sy, self.grid_h, meta[:, 3])
    self.lo_x, nx = _window(fx, sx, self.grid_w, meta[:, 4])
    tiles = lambda n: (jnp.max(n, axis=1) + tile - 1) // tile
    self.ty, self.tx = tiles(ny), tiles(nx)
    count = self.ty * self.tx
    self.cum = jnp.cumsum(count)
    self.total = self.cum[-1]
    self.count = count

  def items(self, e):
    """Item ids [M] -> RoI, tile row/column and validity [M]."""
    k = self.cum.shape[0]
    roi = jnp.minimum(jnp.searchsorted(self.cum, e, side="right"), k - 1)
    t = e - (self.cum[roi] - self.count[roi])
    tx = jnp.maximum(self.tx[roi], 1)
    return roi, t // tx, t % tx, e < self.total


def _tile_taps(rois, scale, meta, grid_h, grid_w, lo_y, lo_x, ty, tx, valid,
               output_size, aligned, roi_grad, tile, dtype):
  """Flat indices and weights [M, oh, ow, tile^2] of one window tile of
  each item's bins; rois [M, 4] are the items' RoIs (differentiable when
  roi_grad), the rest their plan entries."""
  oh, ow = output_size
  x1, y1, rw, rh = _roi_frames(rois, scale, aligned, roi_grad, dtype)
  t = jnp.arange(tile, dtype=jnp.int32)
  def axis(start, length, out_len, grid, lo, which, extent, size):
    first, spacing = _first_samples(start, length, out_len, grid)
    p = lo[:, :, None] + (which * tile)[:, None, None] + t
    w = _hat_weights(p, first[..., None], spacing[:, None, None],
                     grid[:, None, None], extent[:, None, None])
    return jnp.clip(p, 0, size[:, None, None] - 1), w
  py, wy = axis(y1, rh, oh, grid_h, lo_y, ty, meta[:, 3], meta[:, 0])
  px, wx = axis(x1, rw, ow, grid_w, lo_x, tx, meta[:, 4], meta[:, 1])
  m = rois.shape[0]
  index = (meta[:, 2, None, None, None, None] +
           py[:, :, None, :, None] * meta[:, 1, None, None, None, None] +
           px[:, None, :, None, :]).reshape(m, oh, ow, tile * tile)
  weight = (wy[:, :, None, :, None] * wx[:, None, :, None, :]).reshape(
      m, oh, ow, tile * tile) * valid[:, None, None, None]
  return index, weight


def _chunk_size(output_size, channels, k, tile):
  # Items per loop step: one per RoI when they fit (most RoIs need one
  # tile), fewer when the gathered taps would not.
  oh, ow = output_size
  return max(1, min(k, MAX_GATHER_ELEMENTS // (oh * ow * tile * tile *
                                               channels)))


def _chunk_inputs(plan, rois, scale, meta, c, chunk):
  e = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
  roi, ty, tx, valid = plan.items(e)
  return roi, valid, (rois[roi], scale[roi], meta[roi], plan.grid_h[roi],
                      plan.grid_w[roi], plan.lo_y[roi], plan.lo_x[roi], ty,
                      tx, valid)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _adaptive(static, flat, rois, scale, meta):
  """Exact sampling_ratio=0 RoIAlign over a flat buffer (see the module
  docstring). static: (output_size, aligned, roi_grad, tile). Returns
  [K, oh, ow, C] in the compute dtype."""
  return _adaptive_fwd(static, flat, rois, scale, meta)[0]


def _adaptive_fwd(static, flat, rois, scale, meta):
  output_size, aligned, roi_grad, tile = static
  dt = _compute_dtype(flat.dtype)
  k, ch = rois.shape[0], flat.shape[-1]
  plan = _Plan(rois, scale, meta, output_size, aligned, tile, dt)
  chunk = _chunk_size(output_size, ch, k, tile)

  def body(carry):
    c, out = carry
    roi, valid, args = _chunk_inputs(plan, rois, scale, meta, c, chunk)
    idx, w = _tile_taps(*args, output_size, aligned, False, tile, dt)
    vals = jnp.take(flat, idx, axis=0, mode="clip").astype(dt)
    part = jnp.sum(vals * w[..., None], axis=-2)
    return c + 1, out.at[jnp.where(valid, roi, k)].add(part, mode="drop")

  steps = (plan.total + chunk - 1) // chunk
  out = jnp.zeros((k, *output_size, ch), dt)
  _, out = jax.lax.while_loop(lambda cr: cr[0] < steps, body,
                              (jnp.int32(0), out))
  return out, (flat, rois, scale, meta)


def _adaptive_bwd(static, res, g_out):
  output_size, aligned, roi_grad, tile = static
  flat, rois, scale, meta = res
  dt = _compute_dtype(flat.dtype)
  k, ch = rois.shape[0], flat.shape[-1]
  plan = _Plan(rois, scale, meta, output_size, aligned, tile, dt)
  chunk = _chunk_size(output_size, ch, k, tile)
  g_out = g_out.astype(dt)

  def body(carry):
    c, d_flat, d_rois = carry
    roi, valid, args = _chunk_inputs(plan, rois, scale, meta, c, chunk)
    g = g_out[roi][:, :, :, None, :]
    taps = lambda r: _tile_taps(r, *args[1:], output_size, aligned,
                                roi_grad, tile, dt)[::-1]
    if roi_grad:
      w, pull, idx = jax.vjp(taps, args[0], has_aux=True)
      vals = jnp.take(flat, idx, axis=0, mode="clip").astype(dt)
      d_r, = pull(jnp.sum(vals * g, axis=-1))
      d_rois = d_rois.at[jnp.where(valid, roi, k)].add(
          d_r.astype(d_rois.dtype), mode="drop")
    else:
      w, idx = taps(args[0])
    d_vals = (w[..., None] * g).reshape(-1, ch)
    d_flat = d_flat.at[idx.reshape(-1)].add(d_vals, mode="drop")
    return c + 1, d_flat, d_rois

  steps = (plan.total + chunk - 1) // chunk
  init = (jnp.int32(0), jnp.zeros(flat.shape, dt), jnp.zeros_like(rois))
  _, d_flat, d_rois = jax.lax.while_loop(lambda cr: cr[0] < steps, body,
                                         init)
  return d_flat.astype(flat.dtype), d_rois, None, None


_adaptive.defvjp(_adaptive_fwd, _adaptive_bwd)


def _roi_align_flat(flat, rois, scale, height, width, offset, output_size,
                    sampling_ratio, aligned, roi_grad=False, extent=None,
                    tile=TILE):
  """Gather kernel over a flattened feature buffer.

  Args:
    flat: [S, C] features, one or several levels flattened row-major.
    rois: [K, 4] boxes in image pixels.
    scale: [K] spatial scale of each RoI's level.
    height, width: [K] int32 size of each RoI's level.
    offset: [K] int32 start of each RoI's level in `flat`.
    extent: ([K], [K]) int32 height and width the bilinear border rule
      uses (the image's canvas on that level, <= height, width); None for
      the whole level.
    tile: static pixels per axis of an adaptive window tile.
  Returns:
    [K, oh, ow, C] in flat's dtype; float32 for an integer buffer (binary
    masks are read as they are stored).
  """
  extent = (height, width) if extent is None else extent
  rois, scale = jnp.asarray(rois), jnp.asarray(scale)
  if sampling_ratio > 0:
    grid = jnp.full(rois.shape[:1], sampling_ratio, jnp.int32)
    out = _sample_gather(flat, rois, scale, width, offset, extent,
                         output_size, grid, grid, int(sampling_ratio),
                         aligned, roi_grad)
  elif rois.shape[0] == 0:  # nothing to loop over
    out = jnp.zeros((0, *output_size, flat.shape[-1]), flat.dtype)
  else:
    meta = jnp.stack([height, width, offset, extent[0], extent[1]],
                     axis=1).astype(jnp.int32)
    if not roi_grad:
      rois = jax.lax.stop_gradient(rois)
    out = _adaptive((tuple(output_size), aligned, roi_grad, tile), flat, rois,
                    scale.astype(_compute_dtype(flat.dtype)), meta)
  if not jnp.issubdtype(flat.dtype, jnp.floating):
    return out
  return out.astype(flat.dtype)


def _roi_align_dense(features, rois, extent, spatial_scale, output_size,
                     sampling_ratio, aligned, roi_grad=False):
  """Separable dense kernel: out = Ay @ F @ Ax^T per RoI, with Ay [K, oh, H]
  and Ax [K, ow, W] the averaged bilinear weights in closed form (any
  number of samples). Two matmuls forward and backward, cheaper than
  gather + scatter-add on small maps. extent: [2] int32 height and width of
  the border rule (<= the map's). Computed in the compute dtype (float32
  for bfloat16 features, ops/precision.py); the caller casts back."""
  h, w, _ = features.shape
  k = rois.shape[0]
  oh, ow = output_size
  dt = _compute_dtype(features.dtype)
  x1, y1, rw, rh = _roi_frames(rois, jnp.full((k,), spatial_scale, dt),
                               aligned, roi_grad, dt)
  def axis(start, length, out_len, n, size):
    grid = _grid(length, out_len, sampling_ratio)
    first, spacing = _first_samples(start, length, out_len, grid)
    p = jnp.arange(size, dtype=jnp.int32)
    return _hat_weights(p, first[..., None], spacing[:, None, None],
                        grid[:, None, None], n)
  ay = axis(y1, rh, oh, extent[0], h)
  ax = axis(x1, rw, ow, extent[1], w)
  # Rows first on [H, C, W]: both products then need no copy of the
  # K-times larger intermediate [K, oh, C, W], only of the output.
  rows = jnp.einsum("kih,hcw->kicw", ay,
                    jnp.swapaxes(features, 1, 2).astype(dt))
  return jnp.einsum("kicw,kjw->kijc", rows, ax)


def roi_align(features, rois, output_size, spatial_scale, sampling_ratio,
              aligned=True, method="auto", roi_grad=False, canvas_hw=None):
  """RoIAlign on one image or a batch.

  Args:
    features: [H, W, C] or [B, H, W, C], float32 or bfloat16.
    rois: [K, 4] or [B, K, 4] float (x1, y1, x2, y2) in image pixels.
    output_size: int or (oh, ow).
    spatial_scale: feature pixels per image pixel (1 / stride).
    sampling_ratio: samples per bin axis; 0 for the adaptive rule.
    aligned: True for the half-pixel shift (mmcv default, detectron2);
      False for torchvision's legacy behaviour (roi size clamped to >= 1).
    method: "gather", "dense" (separable matmuls, for small maps such as
      the stride-8 semantic feature), or "auto": on CPU by a static cost
      model, on GPU and TPU "dense", chosen where the program is lowered
      (jax.lax.platform_dependent).
    roi_grad: differentiate the output in `rois` too (default: the boxes
      are constants, as in torchvision and mmcv).
    canvas_hw: [B, 2] (or [2] unbatched) int32 height and width in image
      pixels of each image's own canvas, at the top-left of the padded
      map; the border rule (samples past the edge read 0, samples in the
      last pixel clamp to it) then uses ceil(canvas * spatial_scale)
      instead of the map's size, so a padded bucket gives what the image
      gives alone. None: the whole map.
  Returns:
    [K, oh, ow, C] or [B, K, oh, ow, C] in the features' dtype; bins
    outside the map are 0.
  """
  return _align("roi_align", [features], rois,
                lambda r: jnp.zeros(r.shape[:2], jnp.int32), [spatial_scale],
                output_size, sampling_ratio, aligned, method,
                roi_grad, canvas_hw, TILE)


def map_roi_levels(rois, num_levels, finest_scale=56, mapper="mmdet"):
  """FPN level of each RoI.

  mmdet: floor(log2(sqrt(area) / finest_scale + 1e-6)).
  torchvision: floor(4 + log2(sqrt(area) / 224) + 1e-6) - 2, the same rule
  with the epsilon placed differently.

  Args:
    rois: [..., 4]. Returns: [...] int32 in [0, num_levels - 1].
  """
  r = rois.astype(jnp.float32)
  scale = jnp.sqrt(jnp.maximum((r[..., 2] - r[..., 0]) *
                               (r[..., 3] - r[..., 1]), 0.0))
  if mapper == "mmdet":
    lvl = jnp.floor(jnp.log2(scale / finest_scale + 1e-6))
  elif mapper == "torchvision":
    lvl = jnp.floor(4.0 + jnp.log2(scale / 224.0) + 1e-6) - 2.0
  else:
    raise ValueError(f"unknown level mapper {mapper!r}")
  return jnp.clip(lvl, 0, num_levels - 1).astype(jnp.int32)


def _dense_cost(h, w, output_size):
  oh, ow = output_size
  return ow * h * w + oh * ow * h


def _gather_cost(output_size, sampling_ratio, tile):
  # A gathered tap (forward gather, backward scatter-add) costs about 20
  # of the dense method's multiply-adds on CPU, and an adaptive bin reads
  # one or two tiles. Fitted forward+backward, 8 images x 32 RoIs, 64
  # channels: at 128 px (P2-P5 32..4 px) the dense method ran 1.4x (7x7)
  # and 1.8x (14x14) faster than the gather at sampling ratio 2 (the
  # factor of 8 used before had picked the gather); at 256 px with the
  # adaptive rule the gather ran 1.2x and 1.6x faster (model: 1.2x, 1.9x).
  oh, ow = output_size
  taps = (2 * sampling_ratio) ** 2 if sampling_ratio > 0 else 1.5 * tile ** 2
  return 20 * oh * ow * taps


def multilevel_roi_align(features, rois, output_size, strides,
                         sampling_ratio, aligned=True, finest_scale=56,
                         mapper="mmdet",
                         method="auto", roi_grad=False, canvas_hw=None):
  """RoIAlign over FPN levels with level mapping, one image or a batch.

  Args:
    features: sequence of L arrays [H_l, W_l, C] (e.g. P2..P5), or
      [B, H_l, W_l, C] for a batch.
    rois: [K, 4] (or [B, K, 4]) boxes in image pixels.
    output_size: int or (oh, ow).
    strides: L ints, the stride of each level (spatial scale 1 / stride).
    sampling_ratio, aligned, roi_grad, canvas_hw: as in
      `roi_align` (the level assignment is never differentiated; the
      canvas on level l is ceil(canvas_hw / strides[l])).
    finest_scale: 56 in mmdet (224 / 2^2 in torchvision's terms).
    mapper: "mmdet" or "torchvision" epsilon placement.
    method: "gather" (one gather over all levels and images), "dense"
      (per-level separable matmuls, each RoI weighted 0 on the levels it
      does not use; cheaper on small maps) or "auto".
  Returns:
    [K, oh, ow, C] (or [B, K, oh, ow, C]) in the features' dtype.
  """
  if len(features) != len(strides):
    raise ValueError(f"multilevel_roi_align: {len(features)} feature maps "
                     f"but {len(strides)} strides")
  return _align("multilevel_roi_align", features, rois,
                lambda r: map_roi_levels(r, len(features), finest_scale,
                                         mapper),
                [1.0 / s for s in strides], output_size, sampling_ratio,
                aligned, method, roi_grad, canvas_hw,
                _level_tile(output_size, strides, finest_scale))


def _level_tile(output_size, strides, finest_scale):
  """Tile of the adaptive windows over FPN levels: the mapping sends a RoI
  to a level where its side (if square) is under 2 * finest_scale /
  strides[0] feature pixels, so up to ceil(that / out) samples per bin and
  a window one pixel longer fit one tile."""
  size = check_positive_size("multilevel_roi_align output_size",
                             output_size)
  side = 2.0 * finest_scale / strides[0]
  return int(min(max(math.ceil(side / min(size)) + 1, 2), 6))


def _align(name, features, rois, level_of, scales, output_size,
           sampling_ratio, aligned, method, roi_grad, canvas_hw, tile):
  """Shared body of `roi_align` and `multilevel_roi_align`: a float32
  island (ops/precision.py) returning the features' dtype.

  Args:
    features: L arrays [H_l, W_l, C], or [B, H_l, W_l, C] with rois
      [B, K, 4].
    level_of: [B, K, 4] rois -> [B, K] int32 level of each RoI.
    scales: L floats, spatial scale of each level.
    canvas_hw: [B, 2] (or [2]) int32 image pixels, or None.
  """
  batched = _check_batch(name, features, rois)
  if not batched:
    features, rois = [f[None] for f in features], rois[None]
    if canvas_hw is not None:
      canvas_hw = jnp.asarray(canvas_hw)[None]
  extents = _level_extents(name, features, scales, canvas_hw)
  output_size = check_positive_size(f"{name} output_size", output_size)
  if sampling_ratio < 0:
    raise ValueError(f"roi_align sampling_ratio must be >= 0, got "
                     f"{sampling_ratio}")
  lvl = level_of(jax.lax.stop_gradient(rois))

  def dense(features, rois, lvl, extents):
    out = 0
    for i, (f, scale) in enumerate(zip(features, scales)):
      part = jax.vmap(lambda fi, r, e, scale=scale: _roi_align_dense(
          fi, r, e, scale, output_size, sampling_ratio, aligned,
          roi_grad))(f, rois, extents[:, i])
      out = part if len(features) == 1 else out + jnp.where(
          (lvl == i)[..., None, None, None], part, 0)
    return out.astype(features[0].dtype)

  def gather(features, rois, lvl, extents):
    return _roi_align_levels(features, rois, lvl, extents, scales,
                             output_size, sampling_ratio, aligned, roi_grad,
                             tile)

  args = (features, rois, lvl, extents)
  method = _pick_method(method, [f.shape[1:3] for f in features],
                        output_size, sampling_ratio, tile)
  with float32_island("roi_align"):
    if method == "auto":
      # Decided where the program is lowered, by its platform.
      out = jax.lax.platform_dependent(*args, cpu=gather, default=dense)
    else:
      out = (dense if method == "dense" else gather)(*args)
  return out if batched else out[0]


def _level_extents(name, features, scales, canvas_hw):
  """[B, L, 2] int32 border-rule height and width of each image on each
  level: the map's, or the image's canvas on it."""
  bsz = features[0].shape[0]
  sizes = jnp.asarray([f.shape[1:3] for f in features], jnp.int32)
  if canvas_hw is None:
    return jnp.broadcast_to(sizes, (bsz, *sizes.shape))
  canvas_hw = jnp.asarray(canvas_hw)
  if canvas_hw.shape != (bsz, 2):
    raise ValueError(f"{name} canvas_hw: expected shape ({bsz}, 2), got "
                     f"{tuple(canvas_hw.shape)}")
  scale = jnp.asarray(scales, jnp.float32)[None, :, None]
  ext = jnp.ceil(canvas_hw.astype(jnp.float32)[:, None, :] * scale)
  return jnp.clip(ext.astype(jnp.int32), 0, sizes[None])


def _roi_align_levels(features, rois, lvl, extents, scales, output_size,
                      sampling_ratio, aligned, roi_grad, tile):
  """One gather over every level of every image.

  A vmap of the single-image gather becomes a batched gather, which XLA's
  CPU backend runs an order of magnitude slower; folding the batch into the
  flat offsets keeps it one plain gather (and one scatter-add backward).

  Args:
    features: L arrays [B, H_l, W_l, C].
    rois: [B, K, 4]; lvl: [B, K] int32 level of each RoI.
    extents: [B, L, 2] int32 border-rule size of each image on each level.
    scales: L floats, spatial scale of each level.
  Returns:
    [B, K, oh, ow, C].
  """
  bsz, k = rois.shape[:2]
  sizes = [f.shape[1:3] for f in features]
  starts = [0]
  for h, w in sizes[:-1]:
    starts.append(starts[-1] + bsz * h * w)
  flat = jnp.concatenate(
      [f.reshape(-1, f.shape[-1]) for f in features], axis=0)
  pick = lambda vals, dtype: jnp.asarray(vals, dtype)[lvl]
  height = pick([h for h, _ in sizes], jnp.int32)
  width = pick([w for _, w in sizes], jnp.int32)
  image = jnp.arange(bsz, dtype=jnp.int32)[:, None]
  offset = pick(starts, jnp.int32) + image * height * width
  flatten = lambda x: x.reshape(bsz * k, *x.shape[2:])
  ext = jnp.take_along_axis(extents, lvl[..., None], axis=1)
  out = _roi_align_flat(
      flat, flatten(rois), flatten(pick(scales, jnp.float32)),
      flatten(height), flatten(width), flatten(offset), output_size,
      sampling_ratio, aligned, roi_grad,
      (flatten(ext[..., 0]), flatten(ext[..., 1])), tile)
  return out.reshape(bsz, k, *out.shape[1:])


def _check_batch(name, features, rois):
  """Checks ranks; True when features and rois carry a batch dim."""
  batched = rois.ndim == 3
  check_rank(f"{name} rois", rois, 3 if batched else 2, 4)
  for i, f in enumerate(features):
    check_rank(f"{name} features[{i}]", f, 4 if batched else 3)
    if batched and f.shape[0] != rois.shape[0]:
      raise ValueError(f"{name}: features[{i}] has batch {f.shape[0]} but "
                       f"rois have batch {rois.shape[0]}")
  return batched


def _pick_method(method, sizes, output_size, sampling_ratio, tile):
  """The method, or "auto" when it depends on the platform. "auto" on
  CPU: the static cost model's choice; on GPU and TPU always "dense"
  (measured on an H100: docs/benchmarks.md), so "auto" stays open only
  when the model picks "gather" for CPU."""
  if method == "auto":
    dense = sum(_dense_cost(h, w, output_size) for h, w in sizes)
    gather = _gather_cost(output_size, sampling_ratio, tile)
    return "dense" if dense < gather else "auto"
  if method not in ("gather", "dense"):
    raise ValueError(f"roi_align method must be auto, gather or dense, got "
                     f"{method!r}")
  return method
