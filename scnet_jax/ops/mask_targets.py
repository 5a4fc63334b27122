"""Mask targets of positive RoIs, by two rules.

mmdetection computes a positive RoI's 28x28 target as RoIAlign (aligned,
adaptive sampling) of the full-resolution binary mask of its ground truth,
thresholded at 0.5, on the image's padded canvas: `full_mask_targets`
computes exactly that from [G, H, W] masks at the bucket's size.

Those masks cost G x H x W bytes per image on the host and the device
(100 instances in an 800 x 1344 bucket: 108 MB), so by default the host
stores each instance as a `crop_size` x `crop_size` bitmap of its box
(`crop_instance_mask`), and the device runs the same RoIAlign on that
crop, with a one-cell zero border standing in for the empty mask outside
the box (`mask_targets`). The agreement with the full-resolution rule is
measured in tests/ops/test_masks_resize.py and reported in
docs/parity.md.
"""
import jax.numpy as jnp
import numpy as np

from scnet_jax.ops.roi_align import _roi_align_flat


def crop_box(mask_box):
  """Pixel-aligned crop window [x0, y0, x1, y1) (ints) around a box."""
  x0 = int(np.floor(mask_box[0]))
  y0 = int(np.floor(mask_box[1]))
  x1 = max(int(np.ceil(mask_box[2])), x0 + 1)
  y1 = max(int(np.ceil(mask_box[3])), y0 + 1)
  return x0, y0, x1, y1


def crop_instance_mask(mask, box, crop_size):
  """Host side: crops a full-resolution binary mask to its box.

  Args:
    mask: [H, W] uint8/bool full-resolution mask.
    box: (x1, y1, x2, y2) in the mask's pixels.
    crop_size: static R.
  Returns:
    crop: [R, R] uint8 (nearest resampling of the window).
    window: [4] float32 (x0, y0, x1, y1), the pixel window it covers.
  """
  h, w = mask.shape
  x0, y0, x1, y1 = crop_box(box)
  x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
  x1, y1 = min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
  ys = y0 + ((np.arange(crop_size) + 0.5) * (y1 - y0) / crop_size).astype(
      np.int64)
  xs = x0 + ((np.arange(crop_size) + 0.5) * (x1 - x0) / crop_size).astype(
      np.int64)
  crop = np.asarray(mask)[ys[:, None], xs[None, :]].astype(np.uint8)
  return crop, np.array([x0, y0, x1, y1], np.float32)


def mask_targets(crops, windows, rois, gt_index, output_size=28,
                 sampling_ratio=2):
  """Device side: binary targets of positive RoIs from their gt crops.

  Args:
    crops: [G, R, R] uint8/float crops of one image's ground truth.
    windows: [G, 4] float32 pixel windows of the crops (image pixels).
    rois: [K, 4] RoIs in image pixels (clipped to the image by the caller).
    gt_index: [K] int32 ground truth of each RoI.
    output_size: target resolution (28).
    sampling_ratio: RoIAlign sampling (0 = adaptive).
  Returns:
    [K, output_size, output_size] float32 in {0, 1}.
  """
  g, r, _ = crops.shape
  bordered = jnp.pad(crops.astype(jnp.float32), ((0, 0), (1, 1), (1, 1)))
  flat = bordered.reshape(-1, 1)
  win = windows[gt_index]
  cell_w = (win[:, 2] - win[:, 0]) / r
  cell_h = (win[:, 3] - win[:, 1]) / r
  # RoI in the crop's continuous coordinates, +1 for the zero border.
  crop_rois = jnp.stack([
      (rois[:, 0] - win[:, 0]) / cell_w + 1.0,
      (rois[:, 1] - win[:, 1]) / cell_h + 1.0,
      (rois[:, 2] - win[:, 0]) / cell_w + 1.0,
      (rois[:, 3] - win[:, 1]) / cell_h + 1.0], axis=-1)
  k = rois.shape[0]
  side = jnp.full((k,), r + 2, jnp.int32)
  out = _roi_align_flat(flat, crop_rois, jnp.ones((k,), jnp.float32), side,
                        side, gt_index * (r + 2) * (r + 2),
                        (output_size, output_size), sampling_ratio, True)
  return (out[..., 0] >= 0.5).astype(jnp.float32)


def full_mask_targets(masks, canvas_hw, rois, gt_index, output_size=28):
  """Device side: mmdetection's mask targets, exactly.

  Args:
    masks: [G, H, W] uint8 full-resolution masks of one image's ground
      truth, zero beyond the image.
    canvas_hw: [2] int32 the image's canvas (its size padded to 32, the
      mask tensor mmdetection pads its masks into): samples past its last
      row or column read that row or column, as mmcv's RoIAlign clamps.
    rois: [K, 4] RoIs in image pixels (clipped to the image by the caller).
    gt_index: [K] int32 ground truth of each RoI.
    output_size: target resolution (28).
  Returns:
    [K, output_size, output_size] float32 in {0, 1}: RoIAlign (aligned,
    adaptive sampling) of each RoI's mask, >= 0.5.
  """
  g, h, w = masks.shape
  k = rois.shape[0]
  full = lambda v: jnp.full((k,), v, jnp.int32)
  canvas = jnp.asarray(canvas_hw, jnp.int32)
  # The uint8 masks are gathered as they are (a float copy of 100
  # full-resolution masks would be 4x their size) and averaged in float32.
  out = _roi_align_flat(masks.reshape(-1, 1), rois, jnp.ones((k,), jnp.float32),
                        full(h), full(w), gt_index * (h * w),
                        (output_size, output_size), 0, True,
                        extent=(full(canvas[0]), full(canvas[1])))
  return (out[..., 0] >= 0.5).astype(jnp.float32)
