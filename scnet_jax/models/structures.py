"""What flows between the parts of a detector, and the batch keys the parts
read. All boxes are (x1, y1, x2, y2) float32 in pixels of the resized image
(no "+1"); padding rows carry valid=False and hold zeros unless stated.

Shapes: B images, G = data.max_instances padded ground truths, R =
data.mask_crop_size, P proposals, S sampled RoIs per image, D =
test.max_per_img detections, H x W the padded canvas (a bucket).
"""
import zlib
from typing import Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

# Every key a model can read from a batch, with its shape and dtype;
# `batch_spec` turns a model's `batch_keys` into arrays of these shapes.
IMAGE_KEYS = ("image", "image_hw")
INSTANCE_KEYS = ("gt_boxes", "gt_labels", "gt_valid", "gt_mask_crops",
                 "gt_mask_windows")
SEMANTIC_KEY = "gt_semantic"
MASKS_KEY = "gt_masks"


def batch_spec(keys, batch_size, bucket, max_instances, mask_crop_size):
  """{key: (shape, numpy dtype)} of the batch keys `keys`.

  image [B, H, W, 3] uint8 RGB; image_hw [B, 2] int32 resized, unpadded
  size; gt_boxes [B, G, 4] float32; gt_labels [B, G] int32 in
  [0, num_classes); gt_valid [B, G] bool; gt_mask_crops [B, G, R, R] uint8
  (ops.mask_targets); gt_mask_windows [B, G, 4] float32; gt_semantic
  [B, H / 8, W / 8] uint8, 255 = ignore; gt_masks [B, G, H, W] uint8
  full-resolution masks (ops.full_mask_targets).
  """
  b, (h, w), g, r = batch_size, bucket, max_instances, mask_crop_size
  spec = {"image": ((b, h, w, 3), np.uint8), "image_hw": ((b, 2), np.int32),
          "gt_boxes": ((b, g, 4), np.float32),
          "gt_labels": ((b, g), np.int32), "gt_valid": ((b, g), np.bool_),
          "gt_mask_crops": ((b, g, r, r), np.uint8),
          "gt_mask_windows": ((b, g, 4), np.float32),
          SEMANTIC_KEY: ((b, h // 8, w // 8), np.uint8),
          MASKS_KEY: ((b, g, h, w), np.uint8)}
  unknown = set(keys) - set(spec)
  if unknown:
    raise KeyError(f"no batch spec for {sorted(unknown)}")
  return {k: spec[k] for k in keys}


def image_keys(key, index):
  """[B] per-image PRNG keys from one key and each image's position in the
  global batch, so a global batch samples the same RoIs however it is
  split over devices."""
  return jax.vmap(jax.random.fold_in, (None, 0))(key, index)


def stream(key, name):
  """The key of the PRNG stream `name`: `key` folded with a stable hash
  of the name (CRC-32), so streams are named, not numbered by hand, and
  two names never share a key by an arithmetic coincidence."""
  return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def keys_for(per_image_keys, name):
  """[B] keys of one sampling site's stream `name` (e.g. "rpn",
  "box_stage_1"), one per image."""
  return jax.vmap(stream, (0, None))(per_image_keys, name)


@flax.struct.dataclass
class GroundTruth:
  """Padded ground truth of a batch.

  boxes [B, G, 4] float32; labels [B, G] int32; valid [B, G] bool;
  mask_crops [B, G, R, R] uint8 and mask_windows [B, G, 4] float32 (each
  instance's mask cropped to its box and resampled, see ops.mask_targets);
  semantic [B, H / 8, W / 8] uint8 (255 = ignore) or None when the model
  does not read it; masks [B, G, H, W] uint8 full-resolution masks, or
  None when the model does not read them.
  """
  boxes: jnp.ndarray
  labels: jnp.ndarray
  valid: jnp.ndarray
  mask_crops: jnp.ndarray
  mask_windows: jnp.ndarray
  semantic: Optional[jnp.ndarray] = None
  masks: Optional[jnp.ndarray] = None

  @classmethod
  def from_batch(cls, batch):
    return cls(boxes=batch["gt_boxes"].astype(jnp.float32),
               labels=batch["gt_labels"], valid=batch["gt_valid"],
               mask_crops=batch["gt_mask_crops"],
               mask_windows=batch["gt_mask_windows"],
               semantic=batch.get(SEMANTIC_KEY), masks=batch.get(MASKS_KEY))


@flax.struct.dataclass
class Proposals:
  """RPN output: boxes [B, P, 4] float32 (no gradient unless the RPN's
  box_grad; MNC back-propagates through them), valid [B, P] bool,
  scores [B, P] float32 objectness probabilities; valid rows first, in
  decreasing score order."""
  boxes: jnp.ndarray
  valid: jnp.ndarray
  scores: jnp.ndarray


@flax.struct.dataclass
class Samples:
  """RoIs sampled for one box stage (roi_heads.sampling).

  rois [B, S, 4]; valid [B, S] bool; is_pos [B, S] bool (positives occupy
  the first num_samples * pos_fraction slots); is_gt [B, S] bool (the RoI
  is a ground-truth box added as a proposal); labels [B, S] int32
  (num_classes = background); gt_index [B, S] int32 into the ground truth;
  target_boxes [B, S, 4] the matched ground-truth boxes.
  """
  rois: jnp.ndarray
  valid: jnp.ndarray
  is_pos: jnp.ndarray
  is_gt: jnp.ndarray
  labels: jnp.ndarray
  gt_index: jnp.ndarray
  target_boxes: jnp.ndarray

  def first(self, n):
    """The first n slots of every image (the positive slots)."""
    return jax.tree.map(lambda x: x[:, :n], self)


# Detections.mask_kind values.
BOX_MASKS = "box"       # masks [B, D, M, M] over each detection's box
IMAGE_MASKS = "image"   # masks [B, D, H / s, W / s] over the whole canvas


@flax.struct.dataclass
class Detections:
  """Padded detections of a batch, in resized-image pixels.

  boxes [B, D, 4] float32; scores [B, D] float32; labels [B, D] int32
  (contiguous); num_detections [B] int32 (rows past it are padding, zero);
  masks: float32 probabilities of the detected class, laid out as
  `mask_kind` says: BOX_MASKS, [B, D, M, M] over the box (pasted into the
  image by ops.paste_masks), or IMAGE_MASKS, [B, D, H / mask_stride,
  W / mask_stride] over the padded canvas (cropped to the image and
  resized by evaluation.postprocess); mask_scores: [B, D] float32 scores
  of the masks when they differ from the boxes' (CoMask: box score + 0.3
  x predicted mask IoU) or None; the segm evaluation ranks by them.
  mask_paste: the rule that brings box-relative masks into the image
  (ops.paste.PASTE_RULES; the model's test.mask_paste).
  """
  boxes: jnp.ndarray
  scores: jnp.ndarray
  labels: jnp.ndarray
  num_detections: jnp.ndarray
  masks: Optional[jnp.ndarray] = None
  mask_scores: Optional[jnp.ndarray] = None
  mask_kind: str = flax.struct.field(pytree_node=False, default=BOX_MASKS)
  mask_stride: int = flax.struct.field(pytree_node=False, default=1)
  mask_paste: str = flax.struct.field(pytree_node=False, default="mmdet")


# mmdet pads every image to a multiple of this (pad_size_divisor).
CANVAS_DIVISOR = 32


@flax.struct.dataclass
class Canvas:
  """Where each image of a batch lives in its padded bucket.

  A batch holds images of different sizes top-left in one bucket
  [H, W]. mmdetection computes an image at batch 1 on its own canvas:
  the resized image padded to a multiple of 32 with zeros after
  normalisation. Every part zeroes its maps outside that canvas
  (`mask`) before a spatial op reads them, so the bucket is invisible:
  inside the canvas each map equals mmdetection's at batch 1.

  The detector builds it once from the batch and passes it, with the
  levels, to every part after the backbone (detectron2's ImageList
  sizes travelling with the images).

  image_hw [B, 2] int32, each resized image's size, unpadded (boxes are
  clipped to it); hw [B, 2] int32, its canvas (multiple of 32, <=
  bucket); bucket (H, W) static.
  """
  image_hw: jnp.ndarray
  hw: jnp.ndarray
  bucket: tuple = flax.struct.field(pytree_node=False)

  @classmethod
  def of(cls, image_hw, bucket):
    """image_hw [B, 2] resized, unpadded sizes; bucket static (H, W)."""
    image_hw = jnp.asarray(image_hw, jnp.int32)
    hw = -(-image_hw // CANVAS_DIVISOR) * CANVAS_DIVISOR
    return cls(image_hw=image_hw,
               hw=jnp.minimum(hw, jnp.asarray(bucket, jnp.int32)),
               bucket=tuple(int(b) for b in bucket))

  def extent(self, map_hw):
    """[B, 2] int32 rows and columns of a map of static size map_hw (the
    bucket at stride bucket / map_hw) that lie on the canvas:
    ceil(canvas / stride), mmdet's map size at batch 1."""
    n = jnp.asarray(map_hw, jnp.int32)
    b = jnp.asarray(self.bucket, jnp.int32)
    return (self.hw * n + b - 1) // b

  def inside(self, map_hw):
    """[B, h, w, 1] bool: the cells of a map of size map_hw on the
    canvas."""
    ext = self.extent(map_hw)
    ys = jnp.arange(map_hw[0])[None, :] < ext[:, 0:1]
    xs = jnp.arange(map_hw[1])[None, :] < ext[:, 1:2]
    return (ys[:, :, None] & xs[:, None, :])[..., None]

  def mask(self, x):
    """x [B, h, w, C] with zeros outside the canvas."""
    return jnp.where(self.inside(x.shape[1:3]), x, jnp.zeros((), x.dtype))


def mask_canvas(x, canvas):
  """`canvas.mask(x)`, or x itself when canvas is None (a part used on a
  bare array, e.g. in a layer test)."""
  return x if canvas is None else canvas.mask(x)


@flax.struct.dataclass
class FeatureContext:
  """What the RoI heads share between their stages: the batch's Canvas,
  and image-level features fused into every RoI feature (HTC, SCNet):
  semantic [B, H / semantic_stride, W / semantic_stride, C] or None;
  global_context [B, C] or None."""
  canvas: Optional[Canvas] = None
  semantic: Optional[jnp.ndarray] = None
  global_context: Optional[jnp.ndarray] = None
  semantic_stride: int = flax.struct.field(pytree_node=False, default=8)

