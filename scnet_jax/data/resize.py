"""Resizing an image or a label map to a given size, by the rule the
config names (`data.resize`):

  "cv2"  OpenCV's INTER_LINEAR for images and INTER_NEAREST for label maps,
         called as mmcv.imresize calls them: mmdetection's pipelines. The
         pixels equal those of mmdetection's test pipeline
         (tests/data/test_resize.py).
  "pil"  Pillow's BILINEAR (which averages over the source pixels when it
         shrinks) and NEAREST (the source pixel under each target pixel's
         centre).

OpenCV's bilinear works in fixed point and differs from Pillow's by a
grey level on many pixels (docs/parity.md), enough to move the detections
of a model: evaluate a model with the rule it was trained with.
"""
import cv2
import numpy as np
from PIL import Image

from scnet_jax.errors import ConfigError

RULES = ("cv2", "pil")


def check_rule(rule):
  """Refuses an unknown data.resize (ConfigError)."""
  if rule not in RULES:
    raise ConfigError(f"data.resize: one of {RULES}, got {rule!r}")


def resize_image(image, hw, rule):
  """[H, W, C] (or [H, W]) uint8 -> [hw[0], hw[1], ...] uint8, bilinear;
  the same array when it already has that size."""
  return _resize(image, hw, rule, cv2.INTER_LINEAR, Image.BILINEAR)


def resize_labels(labels, hw, rule):
  """[H, W] uint8 label map -> [hw[0], hw[1]], nearest."""
  return _resize(labels, hw, rule, cv2.INTER_NEAREST, Image.NEAREST)


def _resize(arr, hw, rule, cv2_flag, pil_flag):
  check_rule(rule)
  h, w = int(hw[0]), int(hw[1])
  if arr.shape[:2] == (h, w):
    return arr
  if rule == "cv2":
    return cv2.resize(np.ascontiguousarray(arr), (w, h),
                      interpolation=cv2_flag)
  return np.asarray(Image.fromarray(arr).resize((w, h), pil_flag))
