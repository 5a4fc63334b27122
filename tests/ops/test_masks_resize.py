"""Mask pasting, align-corners resize and crop-based mask targets against
PyTorch (grid_sample, interpolate) and torchvision's roi_align."""
import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from scnet_jax import ops
from scnet_jax.data.shapes import make_image


def _grid_sample_paste(masks, boxes, h, w):
  """mmdet _do_paste_mask written with torch.grid_sample over the image."""
  b = torch.tensor(boxes)
  x0, y0, x1, y1 = [b[:, i:i + 1] for i in range(4)]
  iy = (torch.arange(h, dtype=torch.float32) + 0.5)[None]
  ix = (torch.arange(w, dtype=torch.float32) + 0.5)[None]
  gy = (iy - y0) / (y1 - y0) * 2 - 1
  gx = (ix - x0) / (x1 - x0) * 2 - 1
  n = len(boxes)
  grid = torch.stack([gx[:, None, :].expand(n, h, w),
                      gy[:, :, None].expand(n, h, w)], dim=3)
  return F.grid_sample(torch.tensor(masks)[:, None], grid,
                       align_corners=False)[:, 0].numpy()


def _smooth_masks(n, seed):
  """[n, 28, 28] blob-like probabilities (a real mask head's are smooth)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:28, 0:28] / 27.0
  c = rng.uniform(0.3, 0.7, size=(n, 2, 1, 1))
  r = rng.uniform(0.15, 0.35, size=(n, 1, 1))
  d = np.sqrt((yy - c[:, 0]) ** 2 + (xx - c[:, 1]) ** 2)
  return (1 / (1 + np.exp((d - r) * 25))).astype(np.float32)


def _iou(a, b):
  inter = np.logical_and(a, b).sum(axis=(1, 2))
  union = np.logical_or(a, b).sum(axis=(1, 2))
  return inter / np.maximum(union, 1)


PASTE_BOXES = np.array([[10.3, 5.2, 60.7, 40.1], [0, 0, 100, 80],
                        [-10, -5, 30, 20], [70, 50, 130, 95],
                        [33.6, 12.4, 47.9, 70.2], [5.5, 60.2, 98.1, 79.9]],
                       np.float32)


def test_paste_rules_equal_their_libraries():
  """Each rule against its library's own function on the same boxes and
  28x28 masks: mmdet 3.3's _do_paste_mask and torchvision's
  paste_masks_in_image."""
  from tests.mmdet_reference import mmdet_import
  from torchvision.models.detection.roi_heads import paste_masks_in_image
  fcn = mmdet_import("mmdet.models.roi_heads.mask_heads.fcn_mask_head")
  masks = _smooth_masks(len(PASTE_BOXES), 1)
  h, w = 80, 100
  ref_mm, _ = fcn._do_paste_mask(torch.tensor(masks)[:, None],
                                 torch.tensor(PASTE_BOXES), h, w,
                                 skip_empty=False)
  ref_tv = paste_masks_in_image(torch.tensor(masks)[:, None],
                                torch.tensor(PASTE_BOXES), (h, w))[:, 0]
  for rule, ref, above in (("mmdet", ref_mm.numpy(), np.greater_equal),
                           ("torchvision", ref_tv.numpy(), np.greater)):
    probs = ops.paste_masks(masks, PASTE_BOXES, (h, w), None, rule)
    np.testing.assert_allclose(probs, ref, atol=1e-5, err_msg=rule)
    binary = ops.paste_masks(masks, PASTE_BOXES, (h, w), 0.5, rule)
    assert np.all(_iou(binary, above(ref, 0.5)) > 0.99), rule
  # The two rules are different functions: a test of one cannot pass
  # with the other.
  assert np.min(_iou(ops.paste_masks(masks, PASTE_BOXES, (h, w)),
                     ref_tv.numpy() > 0.5)) < 0.99


def test_paste_matches_grid_sample():
  rng = np.random.default_rng(0)
  masks = rng.uniform(size=(6, 28, 28)).astype(np.float32)
  boxes = np.array([[10.3, 5.2, 60.7, 40.1], [0, 0, 100, 80],
                    [-10, -5, 30, 20], [90, 70, 130, 95], [20, 20, 20.5, 30],
                    [50, 50, 51, 51]], np.float32)
  ref = _grid_sample_paste(masks, boxes, 80, 100)
  probs = ops.paste_masks(masks, boxes, (80, 100), threshold=None)
  np.testing.assert_allclose(probs, ref, atol=1e-5)
  binary = ops.paste_masks(masks, boxes, (80, 100))
  assert binary.dtype == bool
  agree = np.mean(binary == (ref >= 0.5))
  assert agree > 0.9999
  assert ops.paste_masks(np.zeros((0, 28, 28)), np.zeros((0, 4)),
                         (5, 5)).shape == (0, 5, 5)


def test_resize_align_corners_matches_torch():
  rng = np.random.default_rng(1)
  for (h, w), out in [((7, 7), (14, 14)), ((32, 48), (16, 24)),
                      ((4, 6), (16, 24)), ((1, 3), (2, 5))]:
    x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
    ref = F.interpolate(torch.tensor(x).permute(0, 3, 1, 2), size=out,
                        mode="bilinear", align_corners=True)
    ours = jax.jit(lambda a: ops.resize_bilinear_align_corners(a, out))(x)
    np.testing.assert_allclose(np.asarray(ours),
                               ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.mark.parametrize("crop_size", [32, 112])
def test_crop_mask_targets_agree_with_full_resolution_roi_align(crop_size):
  """mmdet's target: RoIAlign(28, aligned, adaptive) of the full mask, >= .5.
  Ours samples a crop; measure the agreement (documented in the README)."""
  rng = np.random.default_rng(2)
  ious, pixel_agree = [], []
  for _ in range(8):
    _, instances = make_image(rng, 256, 6)
    for _, m in instances:
      ys, xs = np.nonzero(m)
      box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                     np.float32)
      # Positive RoIs jitter around the box (IoU >= ~0.5).
      jitter = rng.normal(0, 0.08, size=(16, 4)) * np.r_[box[2:] - box[:2],
                                                         box[2:] - box[:2]]
      rois = np.clip(box[None] + jitter, 0, 256).astype(np.float32)
      ref = torchvision.ops.roi_align(
          torch.tensor(m[None, None].astype(np.float32)),
          [torch.tensor(rois)], 28, 1.0, 0, True)[:, 0].numpy() >= 0.5
      crop, window = ops.crop_instance_mask(m, box, crop_size)
      ours = np.asarray(ops.mask_targets(crop[None], window[None], rois,
                                         np.zeros(16, np.int32))) > 0.5
      inter = np.sum(ours & ref, axis=(1, 2))
      union = np.sum(ours | ref, axis=(1, 2))
      ious.extend(inter[union > 0] / union[union > 0])
      pixel_agree.append(np.mean(ours == ref))
  assert np.mean(ious) > (0.95 if crop_size >= 112 else 0.93)
  assert np.mean(pixel_agree) > 0.98


def test_full_mask_targets_equal_mmdet():
  """mask_targets="full" against mmdetection's `mask_target` (BitmapMasks
  padded to the canvas, as its data preprocessor pads them): equal on
  every pixel, RoIs at the image's borders included. Ours reads the masks
  in a bucket larger than the canvas."""
  from tests.mmdet_reference import mmdet_import
  mask_target = mmdet_import("mmdet.structures.mask").mask_target
  BitmapMasks = mmdet_import("mmdet.structures.mask").BitmapMasks
  ConfigDict = mmdet_import("mmengine.config").ConfigDict
  rng = np.random.default_rng(5)
  h, w = 200, 250                  # the image; canvas 224 x 256
  canvas, bucket = (224, 256), (256, 320)
  _, instances = make_image(rng, 256, 6)
  masks = np.stack([m[:h, :w] for _, m in instances]).astype(np.uint8)
  masks[0, :40, :30] = 1           # one touching the top-left corner
  masks[1, h - 20:, w - 25:] = 1   # one touching the bottom-right corner
  rois, gt_index = [], []
  for g, m in enumerate(masks):
    ys, xs = np.nonzero(m)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    size = np.r_[box[2:] - box[:2], box[2:] - box[:2]]
    jitter = rng.normal(0, 0.1, size=(12, 4)) * size
    rois.append(np.clip(box[None] + jitter, 0, (w, h, w, h)))
    gt_index += [g] * 12
  rois = np.concatenate(rois).astype(np.float32)
  gt_index = np.array(gt_index)
  padded = np.zeros((len(masks), *canvas), np.uint8)
  padded[:, :h, :w] = masks
  ref = mask_target([torch.from_numpy(rois)], [torch.from_numpy(gt_index)],
                    [BitmapMasks(padded, *canvas)],
                    ConfigDict(mask_size=28)).numpy()
  in_bucket = np.zeros((len(masks), *bucket), np.uint8)
  in_bucket[:, :h, :w] = masks
  ours = jax.jit(ops.full_mask_targets, static_argnums=4)(
      in_bucket, np.array(canvas, np.int32), rois,
      gt_index.astype(np.int32), 28)
  assert ref.any() and not ref.all()
  np.testing.assert_array_equal(np.asarray(ours), ref)
