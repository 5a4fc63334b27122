"""SOLO's training targets (mmdet `SOLOHead._get_targets_single`) with
static shapes, from the ground truth's box crops (ops/mask_targets.py).

Per level l (grid S, stride s, scale range [lo, hi]) a ground truth g is
assigned when lo <= sqrt(box area) <= hi and its mask is not empty. Its
centre of mass (on the full-resolution mask) falls in cell (ci, cj) of
the S x S grid laid over the padded canvas; the positive cells are those
within +-1 of it that also lie in its centre region (centre of mass +-
pos_scale x half the box). Cells are written in ground-truth order, so a
cell claimed twice belongs to the later ground truth. A positive cell
(i, j) predicts that ground truth's mask in mask channel i * S + j, at the
level's mask resolution: the full mask rescaled by 1 / (s / 2) with
OpenCV's bilinear rule (mmcv.imrescale), rounded.

The full-resolution mask is the crop read back by nearest neighbour:
pixel x of window [x0, x1) is crop column floor((x - x0 + 0.5) R /
(x1 - x0)); exact where the crop is at least as large as the box.
"""
import jax
import jax.numpy as jnp


def _crop_index(pixels, lo, hi, r):
  """Crop cells ([N] int32) of pixel indices `pixels` [N] in window
  [lo, hi) of a crop of r cells, and whether each lies in the window."""
  size = jnp.maximum(hi - lo, 1.0)
  k = jnp.floor((pixels - lo + 0.5) * r / size).astype(jnp.int32)
  inside = (pixels >= lo) & (pixels < hi)
  return jnp.clip(k, 0, r - 1), inside


def _cell_pixel_counts(lo, hi, r):
  """Per crop cell b ([r]): how many pixels of window [lo, hi) read it,
  and the sum of their indices (the nearest read-back above)."""
  size = hi - lo
  b = jnp.arange(r + 1, dtype=jnp.float32)
  edge = jnp.clip(jnp.ceil(b * size / r - 0.5), 0.0, size)
  first, last = edge[:-1], edge[1:]
  count = last - first
  total = count * lo + (first + last - 1.0) * count / 2.0
  return count, total


def center_of_mass(crop, window):
  """(row, column) float32 centre of mass of the full-resolution mask, in
  pixel indices (mmdet's `center_of_mass`), and its pixel count.

  crop: [R, R] {0, 1}; window: [4] (x0, y0, x1, y1) its pixel window.
  """
  r = crop.shape[0]
  m = crop.astype(jnp.float32)
  cnt_x, sum_x = _cell_pixel_counts(window[0], window[2], r)
  cnt_y, sum_y = _cell_pixel_counts(window[1], window[3], r)
  area = cnt_y @ m @ cnt_x
  norm = jnp.maximum(area, 1e-6)
  return (sum_y @ m @ cnt_x) / norm, (cnt_y @ m @ sum_x) / norm, area


def rescaled_masks(crops, windows, map_hw, out_stride):
  """The ground truth's full-resolution masks rescaled by 1 / out_stride
  as mmcv.imrescale does (cv2 bilinear, half-pixel centres, uint8
  rounding): each cell the mean of its 2 x 2 taps, >= 0.5.

  crops: [G, R, R]; windows: [G, 4]; map_hw: static (h, w); out_stride:
  an even integer >= 2 -> [G, h, w] bool.
  """
  r = crops.shape[-1]
  # cv2: src = (dst + 0.5) * stride - 0.5, between pixels floor(src) and
  # floor(src) + 1, each weighted 1/2 for an even stride.
  def taps(n):
    lo = jnp.floor((jnp.arange(n) + 0.5) * out_stride - 0.5)
    return jnp.stack([lo, lo + 1.0], -1).reshape(-1)

  def one(crop, window):
    ky, iy = _crop_index(taps(map_hw[0]), window[1], window[3], r)
    kx, ix = _crop_index(taps(map_hw[1]), window[0], window[2], r)
    v = crop.astype(jnp.float32)[ky][:, kx] * (iy[:, None] & ix[None, :])
    v = v.reshape(map_hw[0], 2, map_hw[1], 2).mean(axis=(1, 3))
    return v >= 0.5

  return jax.vmap(one)(crops, windows)


def _grid_index(v, extent, num_grid):
  """int(floordiv(v / extent, 1 / S, 'trunc')) in float32, as mmdet."""
  q = (v / extent) / jnp.float32(1.0 / num_grid)
  return jnp.trunc(q).astype(jnp.int32)


def level_targets(boxes, labels, valid, com, nonempty, canvas_hw, *,
                  num_grid, scale_range, pos_scale, num_classes):
  """One image's targets at one level.

  Args:
    boxes: [G, 4] (x1, y1, x2, y2); labels [G] int32; valid [G] bool.
    com: ([G], [G]) centre-of-mass rows and columns; nonempty: [G] bool.
    canvas_hw: [2] the padded canvas (mmdet's upsampled_size).
  Returns:
    labels [S, S] int32 (num_classes = background); positive [S * S]
    bool; owner [S * S] int32, the ground truth of each cell (0 where
    not positive).
  """
  s = num_grid
  w = boxes[:, 2] - boxes[:, 0]
  h = boxes[:, 3] - boxes[:, 1]
  scale = jnp.sqrt(w * h)
  hit = (valid & nonempty & (scale >= scale_range[0]) &
         (scale <= scale_range[1]))
  ch, cw = com
  ph, pw = 0.5 * h * pos_scale, 0.5 * w * pos_scale
  hh = canvas_hw[0].astype(jnp.float32)
  ww = canvas_hw[1].astype(jnp.float32)
  ci, cj = _grid_index(ch, hh, s), _grid_index(cw, ww, s)
  top = jnp.maximum(jnp.maximum(0, _grid_index(ch - ph, hh, s)), ci - 1)
  down = jnp.minimum(jnp.minimum(s - 1, _grid_index(ch + ph, hh, s)), ci + 1)
  left = jnp.maximum(jnp.maximum(0, _grid_index(cw - pw, ww, s)), cj - 1)
  right = jnp.minimum(jnp.minimum(s - 1, _grid_index(cw + pw, ww, s)),
                      cj + 1)
  rows = jnp.arange(s)
  cover = (hit[:, None, None] &
           ((rows >= top[:, None]) & (rows <= down[:, None]))[:, :, None] &
           ((rows >= left[:, None]) & (rows <= right[:, None]))[:, None, :])
  g = boxes.shape[0]
  # The last ground truth covering a cell owns it (mmdet writes in order).
  rank = jnp.where(cover, jnp.arange(g)[:, None, None], -1)
  owner = jnp.max(rank, axis=0).reshape(-1)
  positive = owner >= 0
  owner = jnp.maximum(owner, 0)
  cell_labels = jnp.where(positive, labels[owner], num_classes)
  return cell_labels.reshape(s, s).astype(jnp.int32), positive, owner
