"""SOLO's targets and losses against mmdetection 3.3 and torchvision:
`SOLOHead._get_targets_single` on the same ground truth (full-resolution
masks for mmdet, their box crops for us), mmdet's FocalLoss and DiceLoss,
torchvision's sigmoid_focal_loss."""
import jax.numpy as jnp
import numpy as np
import torch

from scnet_jax.models import losses
from scnet_jax.ops.mask_targets import crop_instance_mask
from scnet_jax.ops.solo_targets import (center_of_mass, level_targets,
                                        rescaled_masks)

CANVAS = (128, 160)
GRIDS = (12, 10, 8, 6, 4)
STRIDES = (8, 8, 16, 32, 32)
RANGES = ((1, 24), (12, 48), (24, 96), (48, 192), (96, 512))


def _ground_truth(seed=0, n=7):
  """Ellipses of many sizes on the canvas: masks [n, H, W], boxes, labels."""
  rng = np.random.default_rng(seed)
  h, w = CANVAS
  yy, xx = np.mgrid[:h, :w]
  masks, boxes = [], []
  for _ in range(n):
    ry, rx = rng.uniform(3, 45, 2)
    cy, cx = rng.uniform(10, h - 10), rng.uniform(10, w - 10)
    m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    ys, xs = np.nonzero(m)
    masks.append(m.astype(np.uint8))
    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
  return (np.stack(masks), np.array(boxes, np.float32),
          rng.integers(0, 4, n).astype(np.int64))


def _mmdet_targets(masks, boxes, labels):
  from tests.mmdet_reference import install
  install()
  from mmdet.models.dense_heads.solo_head import SOLOHead
  from mmdet.structures.mask import BitmapMasks
  from mmengine.structures import InstanceData
  head = SOLOHead(num_classes=4, in_channels=8, feat_channels=8,
                  stacked_convs=1, strides=STRIDES, scale_ranges=RANGES,
                  num_grids=GRIDS, norm_cfg=dict(type="GN", num_groups=4))
  gt = InstanceData(bboxes=torch.from_numpy(boxes),
                    labels=torch.from_numpy(labels),
                    masks=BitmapMasks(masks, *CANVAS))
  sizes = [(CANVAS[0] * 2 // s, CANVAS[1] * 2 // s) for s in STRIDES]
  return head._get_targets_single(gt, featmap_sizes=sizes), sizes


def test_targets_equal_mmdet():
  masks, boxes, labels = _ground_truth()
  (want_masks, want_labels, want_pos), sizes = _mmdet_targets(
      masks, boxes, labels)
  crops, windows = zip(*[crop_instance_mask(m, b, 128)
                         for m, b in zip(masks, boxes)])
  crops, windows = jnp.asarray(np.stack(crops)), jnp.asarray(
      np.stack(windows))
  import jax
  ch, cw, area = jax.vmap(center_of_mass)(crops, windows)
  total = 0
  for level, s in enumerate(GRIDS):
    got_labels, got_pos, owner = level_targets(
        jnp.asarray(boxes), jnp.asarray(labels, jnp.int32),
        jnp.ones(len(boxes), bool), (ch, cw), area > 0,
        jnp.asarray(CANVAS), num_grid=s, scale_range=RANGES[level],
        pos_scale=0.2, num_classes=4)
    np.testing.assert_array_equal(np.asarray(got_labels),
                                  want_labels[level].numpy())
    np.testing.assert_array_equal(np.asarray(got_pos),
                                  want_pos[level].numpy())
    level_masks = rescaled_masks(crops, windows, sizes[level],
                                 STRIDES[level] // 2)
    got = np.asarray(level_masks)[np.asarray(owner)[np.asarray(got_pos)]]
    np.testing.assert_array_equal(got, want_masks[level].numpy() > 0)
    total += int(got_pos.sum())
  assert total > 20


def test_focal_equals_mmdet_and_torchvision():
  from tests.mmdet_reference import install
  install()
  from mmdet.models.losses import FocalLoss
  from torchvision.ops import sigmoid_focal_loss
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (50, 4)).astype(np.float32)
  labels = rng.integers(0, 5, 50)  # 4 = background
  onehot = np.eye(5, dtype=np.float32)[labels][:, :4]
  ours = np.asarray(losses.sigmoid_focal(logits, onehot, 2.0, 0.25))
  tv = sigmoid_focal_loss(torch.from_numpy(logits), torch.from_numpy(onehot),
                          0.25, 2.0, reduction="none").numpy()
  np.testing.assert_allclose(ours, tv, rtol=1e-5, atol=1e-7)
  mm = FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25)(
      torch.from_numpy(logits), torch.from_numpy(labels), avg_factor=7.0)
  np.testing.assert_allclose(ours.sum() / 7.0, float(mm), rtol=1e-5)


def test_dice_equals_mmdet():
  from tests.mmdet_reference import install
  install()
  from mmdet.models.losses import DiceLoss
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 2, (6, 20, 24)).astype(np.float32)
  targets = (rng.random((6, 20, 24)) > 0.6).astype(np.float32)
  ours = np.asarray(losses.dice(logits, targets))
  mm = DiceLoss(use_sigmoid=True, loss_weight=1.0)(
      torch.from_numpy(logits), torch.from_numpy(targets),
      reduction_override="none").numpy()
  np.testing.assert_allclose(ours, mm, rtol=1e-5)
