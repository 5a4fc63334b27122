"""Resizing against mmdetection 3.3's own `Resize` (keep_ratio, mmcv's cv2
backend): with data.resize="cv2" the resized pixels, the resized size,
the label map and the instance masks equal mmdetection's exactly,
upscaled to COCO's scale and shrunk, and the boxes are scaled and
clipped to the image as its are; Pillow's rule ("pil") gives other
pixels."""
import numpy as np
import pytest

from scnet_jax.data import transforms
from scnet_jax.data.resize import resize_labels
from scnet_jax.errors import ConfigError
from tests.mmdet_reference import mmdet_import

BUCKETS = [(800, 1216), (1344, 800), (512, 512)]


def _photograph(name):
  from skimage import data
  return getattr(data, name)()


def _mmdet_resize(image, labels, boxes, masks, scale):
  """mmdetection's Resize on an RGB image (it works in BGR), a label map,
  boxes and instance masks: (resized RGB image, labels, boxes, masks, its
  (h, w))."""
  import torch
  Resize = mmdet_import("mmdet.datasets.transforms").Resize
  HorizontalBoxes = mmdet_import("mmdet.structures.bbox").HorizontalBoxes
  BitmapMasks = mmdet_import("mmdet.structures.mask").BitmapMasks
  out = Resize(scale=scale, keep_ratio=True)(dict(
      img=np.ascontiguousarray(image[:, :, ::-1]), gt_seg_map=labels,
      gt_bboxes=HorizontalBoxes(torch.from_numpy(boxes)),
      gt_masks=BitmapMasks(masks, *image.shape[:2]),
      img_shape=image.shape[:2], ori_shape=image.shape[:2]))
  return (out["img"][:, :, ::-1], out["gt_seg_map"],
          out["gt_bboxes"].tensor.numpy(), out["gt_masks"].masks,
          out["img_shape"])


@pytest.mark.parametrize("photo, scale", [("chelsea", (1333, 800)),
                                          ("astronaut", (448, 448))])
def test_cv2_rule_equals_mmdetection(photo, scale):
  image = _photograph(photo)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 183, image.shape[:2], dtype=np.uint8)
  h, w = image.shape[:2]
  # Boxes inside the image, reaching its far border, and beyond it.
  boxes = np.array([[10.5, 20.25, 100.0, 120.75], [0, 0, w, h],
                    [w / 2, h / 2, w + 7.5, h + 3.0]], np.float32)
  masks = (rng.random((2, h, w)) < 0.3).astype(np.uint8)
  want, want_labels, want_boxes, want_masks, want_hw = _mmdet_resize(
      image, labels, boxes, masks, scale)
  assert want.shape[:2] != image.shape[:2]
  _, canvas, hw = transforms.resize_and_pad(image, scale, BUCKETS, "cv2")
  assert hw == tuple(want_hw)
  np.testing.assert_array_equal(canvas[:hw[0], :hw[1]], want)
  assert not canvas[hw[0]:].any() and not canvas[:, hw[1]:].any()
  np.testing.assert_array_equal(resize_labels(labels, hw, "cv2"),
                                want_labels)
  # Full-resolution masks (model.roi_heads.mask_targets="full") by the
  # label maps' rule, as mmdetection's BitmapMasks.rescale resizes them.
  np.testing.assert_array_equal(
      np.stack([resize_labels(m, hw, "cv2") for m in masks]), want_masks)
  ours = transforms.resize_boxes(boxes, (hw[1] / w, hw[0] / h), hw)
  np.testing.assert_allclose(ours, want_boxes, rtol=1e-6, atol=1e-4)
  assert ours[2, 2] == hw[1] and ours[2, 3] == hw[0]
  # Pillow's filters give other pixels and labels.
  _, pil, _ = transforms.resize_and_pad(image, scale, BUCKETS, "pil")
  assert np.mean(pil[:hw[0], :hw[1]] != want) > 0.01
  assert np.mean(resize_labels(labels, hw, "pil") != want_labels) > 0.01


def test_unknown_rule_is_refused():
  with pytest.raises(ConfigError, match="data.resize"):
    transforms.resize_and_pad(np.zeros((8, 8, 3), np.uint8), (16, 16),
                              [(32, 32)], "bicubic")
