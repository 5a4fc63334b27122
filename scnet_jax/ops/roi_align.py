"""RoIAlign with torchvision / mmcv semantics, as a gather.

Each output bin averages grid_h x grid_w bilinear samples; every sample
reads 4 pixels. We gather those pixels by flat index and reduce with their
weights, so the cost is K * oh * ow * 4 * grid_h * grid_w * C reads, with no
dense [K, H, W] interpolation matrix (the one-hot/einsum form costs more
than the backbone on P2).

Several FPN levels are handled in one gather: the levels are flattened into
one [sum(H_l * W_l), C] buffer and each RoI carries its level's offset,
size and scale.

sampling_ratio > 0 uses that many samples per bin axis. sampling_ratio = 0
is the adaptive rule (ceil(roi_size / output_size) samples per axis, as
mmdetection's configs use); static shapes need a cap, `max_grid`, and the
result is exact whenever ceil(roi_size / output_size) <= max_grid. Larger
RoIs fall back to max_grid evenly spaced samples per axis.

The boxes get no gradient unless `roi_grad=True`: then the bilinear weights
stay differentiable in the box coordinates (exact wherever bilinear
sampling is; the sample counts and the FPN level are piecewise constant
and not differentiated). Float64 inputs are computed in float64.
"""

import jax
import jax.numpy as jnp

from scnet_jax.ops._checks import check_positive_size, check_rank

DEFAULT_MAX_GRID = 4
# Largest gathered tap array (elements) built at once; 2^26 floats = 256 MiB.
MAX_GATHER_ELEMENTS = 1 << 26


def _compute_dtype(dtype):
  # float64 only when asked for (finite-difference checks); else float32.
  return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _axis_samples(start, bin_size, out_len, grid, cap, length):
  """1-D sample positions and bilinear taps along one axis.

  Args:
    start: [K] RoI start on this axis (feature pixels).
    bin_size: [K] bin size.
    out_len: static output length along the axis.
    grid: [K] int samples per bin (<= cap); 0 means no samples.
    cap: static maximum of grid.
    length: [K] feature-map length along the axis.
  Returns:
    index: [K, out_len, cap, 2] int32 low/high pixel index.
    weight: [K, out_len, cap, 2] bilinear weight (start's dtype), 0 for samples
      past `grid` or outside [-1, length].
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


def _sample_taps(rois, scale, height, width, output_size, sampling_ratio,
                 aligned, max_grid, roi_grad=False, dtype=jnp.float32):
  """Per-axis sample taps of every bin: (iy, wy, ix, wx, cap); see
  `_axis_samples` for the shapes. The weights are differentiable in `rois`
  only when `roi_grad`."""
  oh, ow = output_size
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
  bin_h = rh / oh
  bin_w = rw / ow
  if sampling_ratio > 0:
    cap = int(sampling_ratio)
    grid_h = jnp.full(rois.shape[:1], cap, jnp.int32)
    grid_w = grid_h
  else:
    cap = int(max_grid)
    grid_h = jnp.minimum(jnp.ceil(rh / oh), cap).astype(jnp.int32)
    grid_w = jnp.minimum(jnp.ceil(rw / ow), cap).astype(jnp.int32)
  iy, wy = _axis_samples(y1, bin_h, oh, grid_h, cap, height)
  ix, wx = _axis_samples(x1, bin_w, ow, grid_w, cap, width)
  wy = wy / jnp.maximum(grid_h, 1).astype(dtype)[:, None, None, None]
  wx = wx / jnp.maximum(grid_w, 1).astype(dtype)[:, None, None, None]
  return iy, wy, ix, wx, cap


def _roi_align_flat(flat, rois, scale, height, width, offset, output_size,
                    sampling_ratio, aligned, max_grid, roi_grad=False):
  """Gather kernel over a flattened feature buffer.

  Args:
    flat: [S, C] features, one or several levels flattened row-major.
    rois: [K, 4] boxes in image pixels.
    scale: [K] spatial scale of each RoI's level.
    height, width: [K] int32 size of each RoI's level.
    offset: [K] int32 start of each RoI's level in `flat`.
  Returns:
    [K, oh, ow, C] in flat's dtype.
  """
  oh, ow = output_size
  dt = _compute_dtype(flat.dtype)
  iy, wy, ix, wx, cap = _sample_taps(rois, scale, height, width, output_size,
                                     sampling_ratio, aligned, max_grid,
                                     roi_grad, dt)
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

  # The gathered taps are materialised before the reduction; bound them by
  # mapping over chunks of RoIs when they would not fit comfortably.
  per_roi = oh * ow * taps * taps * flat.shape[-1]
  if k * per_roi > MAX_GATHER_ELEMENTS and k > 1:
    chunk = max(1, MAX_GATHER_ELEMENTS // per_roi)
    out = jax.lax.map(gather, (index, weight), batch_size=chunk)
  else:
    out = gather((index, weight))
  return out.astype(flat.dtype)


def _roi_align_dense(features, rois, spatial_scale, output_size,
                     sampling_ratio, aligned, max_grid, roi_grad=False):
  """Separable dense kernel: out = Ay @ F @ Ax^T per RoI, with Ay [K, oh, H]
  and Ax [K, ow, W] the averaged bilinear taps. Two matmuls forward and
  backward, cheaper than gather + scatter-add on small maps."""
  h, w, _ = features.shape
  k = rois.shape[0]
  const = lambda v: jnp.full((k,), v, jnp.int32)
  dt = _compute_dtype(features.dtype)
  iy, wy, ix, wx, _ = _sample_taps(
      rois, jnp.full((k,), spatial_scale, dt), const(h), const(w),
      output_size, sampling_ratio, aligned, max_grid, roi_grad, dt)
  dense = lambda idx, wgt, n: jnp.einsum(
      "kigt,kigtn->kin", wgt, jax.nn.one_hot(idx, n, dtype=dt))
  ay = dense(iy, wy, h).astype(features.dtype)
  ax = dense(ix, wx, w).astype(features.dtype)
  cols = jnp.einsum("kjw,hwc->kjhc", ax, features)
  return jnp.einsum("kih,kjhc->kijc", ay, cols)


def roi_align(features, rois, output_size, spatial_scale, sampling_ratio,
              aligned=True, max_grid=DEFAULT_MAX_GRID, method="auto",
              roi_grad=False):
  """RoIAlign on one image or a batch.

  Args:
    features: [H, W, C] or [B, H, W, C], float32 or bfloat16.
    rois: [K, 4] or [B, K, 4] float (x1, y1, x2, y2) in image pixels.
    output_size: int or (oh, ow).
    spatial_scale: feature pixels per image pixel (1 / stride).
    sampling_ratio: samples per bin axis; 0 for the adaptive rule.
    aligned: True for the half-pixel shift (mmcv default, detectron2);
      False for torchvision's legacy behaviour (roi size clamped to >= 1).
    max_grid: static cap of the adaptive rule.
    method: "gather", "dense" (separable matmuls, for small maps such as
      the stride-8 semantic feature), or "auto" (by a static cost model).
    roi_grad: differentiate the output in `rois` too (default: the boxes
      are constants, as in torchvision and mmcv).
  Returns:
    [K, oh, ow, C] or [B, K, oh, ow, C] in the features' dtype; bins
    outside the map are 0.
  """
  return _align("roi_align", [features], rois,
                lambda r: jnp.zeros(r.shape[:2], jnp.int32), [spatial_scale],
                output_size, sampling_ratio, aligned, max_grid, method,
                roi_grad)


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


def _gather_cost(output_size, sampling_ratio, max_grid):
  # Gather + scatter-add cost about 8 multiply-adds per tap on CPU.
  oh, ow = output_size
  taps = 2 * (sampling_ratio if sampling_ratio > 0 else max_grid)
  return 8 * oh * ow * taps * taps


def multilevel_roi_align(features, rois, output_size, strides,
                         sampling_ratio, aligned=True, finest_scale=56,
                         max_grid=DEFAULT_MAX_GRID, mapper="mmdet",
                         method="auto", roi_grad=False):
  """RoIAlign over FPN levels with level mapping, one image or a batch.

  Args:
    features: sequence of L arrays [H_l, W_l, C] (e.g. P2..P5), or
      [B, H_l, W_l, C] for a batch.
    rois: [K, 4] (or [B, K, 4]) boxes in image pixels.
    output_size: int or (oh, ow).
    strides: L ints, the stride of each level (spatial scale 1 / stride).
    sampling_ratio, aligned, max_grid, roi_grad: as in `roi_align` (the
      level assignment is never differentiated).
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
                aligned, max_grid, method, roi_grad)


def _align(name, features, rois, level_of, scales, output_size,
           sampling_ratio, aligned, max_grid, method, roi_grad):
  """Shared body of `roi_align` and `multilevel_roi_align`.

  Args:
    features: L arrays [H_l, W_l, C], or [B, H_l, W_l, C] with rois
      [B, K, 4].
    level_of: [B, K, 4] rois -> [B, K] int32 level of each RoI.
    scales: L floats, spatial scale of each level.
  """
  batched = _check_batch(name, features, rois)
  if not batched:
    features, rois = [f[None] for f in features], rois[None]
  output_size = check_positive_size(f"{name} output_size", output_size)
  if sampling_ratio < 0:
    raise ValueError(f"roi_align sampling_ratio must be >= 0, got "
                     f"{sampling_ratio}")
  lvl = level_of(jax.lax.stop_gradient(rois))
  method = _pick_method(method, [f.shape[1:3] for f in features],
                        output_size, sampling_ratio, max_grid)
  if method == "dense":
    out = 0
    for i, (f, scale) in enumerate(zip(features, scales)):
      part = jax.vmap(lambda fi, r, scale=scale: _roi_align_dense(
          fi, r, scale, output_size, sampling_ratio, aligned,
          max_grid, roi_grad))(f, rois)
      out = part if len(features) == 1 else out + jnp.where(
          (lvl == i)[..., None, None, None], part, 0)
    out = out.astype(features[0].dtype)
  else:
    out = _roi_align_levels(features, rois, lvl, scales, output_size,
                            sampling_ratio, aligned, max_grid, roi_grad)
  return out if batched else out[0]


def _roi_align_levels(features, rois, lvl, scales, output_size,
                      sampling_ratio, aligned, max_grid, roi_grad):
  """One gather over every level of every image.

  A vmap of the single-image gather becomes a batched gather, which XLA's
  CPU backend runs an order of magnitude slower; folding the batch into the
  flat offsets keeps it one plain gather (and one scatter-add backward).

  Args:
    features: L arrays [B, H_l, W_l, C].
    rois: [B, K, 4]; lvl: [B, K] int32 level of each RoI.
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
  out = _roi_align_flat(
      flat, flatten(rois), flatten(pick(scales, jnp.float32)),
      flatten(height), flatten(width), flatten(offset), output_size,
      sampling_ratio, aligned, max_grid, roi_grad)
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


def _pick_method(method, sizes, output_size, sampling_ratio, max_grid):
  if method == "auto":
    dense = sum(_dense_cost(h, w, output_size) for h, w in sizes)
    return "dense" if dense < _gather_cost(output_size, sampling_ratio,
                                           max_grid) else "gather"
  if method not in ("gather", "dense"):
    raise ValueError(f"roi_align method must be auto, gather or dense, got "
                     f"{method!r}")
  return method
