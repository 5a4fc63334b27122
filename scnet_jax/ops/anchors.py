"""Anchor generation as mmdetection's AnchorGenerator does it.

Anchors depend only on static feature-map sizes, so they are built with
NumPy at trace time and enter the program as constants.
"""

import jax.numpy as jnp
import numpy as np


def base_anchors(stride, scales=(8,), ratios=(0.5, 1.0, 2.0),
                 round_to_int=False):
  """Anchors centred on (0, 0) for one level.

  mmdet: base size = stride, ratio r = h / w, h = base * scale * sqrt(r),
  w = base * scale / sqrt(r), ratio-major order, no rounding.
  torchvision rounds the corners (`round_to_int=True`).

  Returns:
    [len(ratios) * len(scales), 4] float32 (x1, y1, x2, y2).
  """
  h_ratios = np.sqrt(np.asarray(ratios, np.float64))
  w_ratios = 1.0 / h_ratios
  scales = np.asarray(scales, np.float64)
  ws = (stride * w_ratios[:, None] * scales[None, :]).reshape(-1)
  hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
  anchors = np.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], axis=-1)
  if round_to_int:
    anchors = np.round(anchors)
  return anchors.astype(np.float32)


def grid_anchors(feature_hw, stride, scales=(8,), ratios=(0.5, 1.0, 2.0),
                 round_to_int=False):
  """All anchors of one level, centres at the top-left of each cell.

  Args:
    feature_hw: (H, W) of the feature map (static ints).
    stride: the level's stride in pixels.
  Returns:
    [H * W * A, 4] float32 NumPy array; flat index (y * W + x) * A + a.
  """
  h, w = feature_hw
  base = base_anchors(stride, scales, ratios, round_to_int)
  xs = np.arange(w, dtype=np.float32) * stride
  ys = np.arange(h, dtype=np.float32) * stride
  yy, xx = np.meshgrid(ys, xs, indexing="ij")
  shifts = np.stack([xx, yy, xx, yy], axis=-1).reshape(-1, 1, 4)
  return (shifts + base[None]).reshape(-1, 4)


def valid_flags(feature_hw, stride, num_anchors, image_hw):
  """Anchors whose cell lies inside each image's own padded extent.

  An image smaller than the batch's padded canvas only owns the cells
  within ceil(pad_shape / stride), pad_shape being its size rounded up
  to 32 (mmdet's `valid_flags`).

  Args:
    feature_hw: (H, W) static feature size.
    stride: level stride.
    num_anchors: anchors per cell (A).
    image_hw: [B, 2] resized (unpadded) image sizes.
  Returns:
    [B, H * W * A] bool.
  """
  h, w = feature_hw
  pad_hw = jnp.ceil(jnp.asarray(image_hw, jnp.float32) / 32.0) * 32.0
  valid_hw = jnp.minimum(jnp.ceil(pad_hw / stride), jnp.asarray([h, w],
                                                                jnp.float32))
  ys = jnp.arange(h, dtype=jnp.float32)
  xs = jnp.arange(w, dtype=jnp.float32)
  vy = ys[None, :] < valid_hw[:, 0:1]
  vx = xs[None, :] < valid_hw[:, 1:2]
  cell = vy[:, :, None] & vx[:, None, :]
  return jnp.repeat(cell.reshape(cell.shape[0], -1), num_anchors, axis=1)


def inside_flags(anchors, valid, image_hw, allowed_border=0):
  """mmdet's `anchor_inside_flags`: anchors fully inside the image.

  Args:
    anchors: [N, 4].
    valid: [B, N] bool from `valid_flags`.
    image_hw: [B, 2] unpadded image sizes.
    allowed_border: pixels an anchor may stick out; < 0 disables the check.
  Returns:
    [B, N] bool.
  """
  if allowed_border < 0:
    return valid
  hw = jnp.asarray(image_hw, jnp.float32)
  a = jnp.asarray(anchors, jnp.float32)[None]
  b = float(allowed_border)
  return (valid & (a[..., 0] >= -b) & (a[..., 1] >= -b)
          & (a[..., 2] < hw[:, 1:2] + b) & (a[..., 3] < hw[:, 0:1] + b))

