"""Per-example transforms, equal to the train/test pipelines of
mmdetection's SCNet and cascade configs, ending in fixed shapes.

Resize keeping the ratio into image_scale (mmcv rescale rule, bilinear for
the image, nearest for stuff maps, by data.resize's rule: data/resize.py),
optional horizontal flip, padding with
0 (image) or 255 (semantic map) to the chosen bucket canvas, semantic map
taken at stride 8. Ground truth is padded to `max_instances`; masks become
fixed-size crops of their boxes (ops.mask_targets).
"""
import numpy as np

from scnet_jax.data.resize import resize_image, resize_labels
from scnet_jax.errors import DataError
from scnet_jax.ops.mask_targets import crop_instance_mask

IGNORE = 255


def rescale_size(h, w, image_scale):
  """mmcv keep-ratio rescale: returns ((new_h, new_w), scale)."""
  long_edge, short_edge = max(image_scale), min(image_scale)
  scale = min(long_edge / max(h, w), short_edge / min(h, w))
  return (int(h * scale + 0.5), int(w * scale + 0.5)), scale


def choose_bucket(hw, buckets):
  """Index of the smallest bucket canvas (h, w) that holds an image."""
  fits = [i for i, (bh, bw) in enumerate(buckets)
          if bh >= hw[0] and bw >= hw[1]]
  if not fits:
    raise DataError(f"resized image {hw} fits no bucket of data.buckets "
                    f"{list(buckets)}")
  return min(fits, key=lambda i: buckets[i][0] * buckets[i][1])


def resize_boxes(boxes, scale, hw):
  """[n, 4] (x1, y1, x2, y2) boxes of the original image -> the image
  resized by scale (sx, sy) to hw (h, w), clipped to it, as mmdetection's
  Resize (clip_object_border) does."""
  sx, sy = scale
  h, w = hw
  boxes = np.asarray(boxes, np.float32) * np.array([sx, sy, sx, sy],
                                                   np.float32)
  return np.clip(boxes, 0, np.array([w, h, w, h], np.float32))


def resize_and_pad(image, image_scale, buckets, rule, flip=False):
  """An image at inference: resized keeping its ratio into image_scale
  (rescale_size, by data.resize's `rule`), flipped horizontally if `flip`,
  and padded with 0 to the smallest of `buckets` that holds it.

  Returns (bucket index, canvas [bh, bw, 3] uint8, (nh, nw) its resized
  size)."""
  h, w = image.shape[:2]
  (nh, nw), _ = rescale_size(h, w, image_scale)
  bucket = choose_bucket((nh, nw), buckets)
  bh, bw = buckets[bucket]
  resized = resize_image(image, (nh, nw), rule)
  if flip:
    resized = resized[:, ::-1]
  return bucket, np.pad(resized, ((0, bh - nh), (0, bw - nw), (0, 0))), \
      (nh, nw)


def thing_semantic_map(masks, labels, background):
  """Thing-only labels from instance masks: label of the topmost instance,
  `background` elsewhere. masks [n, H, W] -> [H, W] uint8."""
  out = np.full(masks.shape[1:], background, np.uint8)
  for m, lab in zip(masks, labels):
    out[m.astype(bool)] = lab
  return out


def load_checked_image(source, rec):
  """The record's uint8 RGB image; DataError names the file and why it
  cannot be used: unreadable, or another size than the annotation file
  gives (after the EXIF orientation), which its boxes and masks are in."""
  image = source.load_image(rec)
  h, w = image.shape[:2]
  if (h, w) != (rec["height"], rec["width"]):
    raise DataError(f"{rec['path']}: image is {w}x{h} (width x height, "
                    f"EXIF orientation applied) but the annotation file "
                    f"says {rec['width']}x{rec['height']}")
  return image


def check_train_scales(data_cfg):
  """data.train_scales (one drawn per training image; empty: image_scale
  alone), each refused unless it fits within image_scale, which chose
  the image's bucket."""
  scales = [tuple(s) for s in data_cfg.get("train_scales", ())]
  long_edge, short_edge = max(data_cfg.image_scale), min(data_cfg.image_scale)
  for s in scales:
    if max(s) > long_edge or min(s) > short_edge:
      raise DataError(f"data.train_scales: {s} is larger than "
                      f"data.image_scale {tuple(data_cfg.image_scale)}, "
                      f"which picks the buckets")
  return scales or [tuple(data_cfg.image_scale)]


def prepare_example(source, rec, data_cfg, num_classes, bucket, flip,
                    with_semantic, image_scale=None, with_masks=False):
  """Loads and transforms one record into fixed-shape numpy arrays,
  resized into image_scale (default data.image_scale).

  Returns dict:
    image [bh, bw, 3] uint8; image_hw [2] int32 (resized, unpadded);
    gt_boxes [G, 4] float32; gt_labels [G] int32; gt_valid [G] bool;
    gt_mask_crops [G, R, R] uint8; gt_mask_windows [G, 4] float32;
    gt_semantic [bh / 8, bw / 8] uint8 (if with_semantic);
    gt_masks [G, bh, bw] uint8 (if with_masks): each mask resized as
      mmdetection resizes it (nearest), zero beyond the image;
    scale [2] float32 (w, h resize factors); orig_hw [2] int32;
    image_id int64; dropped int32 (instances beyond G).
  """
  bh, bw = bucket
  g, r = data_cfg.max_instances, data_cfg.mask_crop_size
  image = load_checked_image(source, rec)
  h, w = image.shape[:2]
  (nh, nw), _ = rescale_size(h, w, image_scale or data_cfg.image_scale)
  if nh > bh or nw > bw:
    raise DataError(f"{rec['path']}: resized size {nh}x{nw} exceeds the "
                    f"bucket {bh}x{bw}")
  sx, sy = nw / w, nh / h
  image = resize_image(image, (nh, nw), data_cfg.resize)

  boxes = resize_boxes(rec["boxes"], (sx, sy), (nh, nw))
  labels = rec["labels"]
  n = min(len(labels), g)
  masks = source.load_masks(rec) if len(labels) else None
  crops = np.zeros((g, r, r), np.uint8)
  windows = np.zeros((g, 4), np.float32)
  for i in range(n):
    crops[i], win = crop_instance_mask(masks[i], rec["boxes"][i], r)
    windows[i] = win * np.array([sx, sy, sx, sy], np.float32)

  semantic = None
  if with_semantic:
    stuff = source.load_semantic(rec)
    if stuff is None:
      stuff = thing_semantic_map(masks if masks is not None else
                                 np.zeros((0, h, w), np.uint8), labels,
                                 num_classes)
    semantic = resize_labels(stuff, (nh, nw), data_cfg.resize)

  full = None
  if with_masks:
    full = np.zeros((g, bh, bw), np.uint8)
    for i in range(n):
      full[i, :nh, :nw] = resize_labels(np.asarray(masks[i], np.uint8),
                                        (nh, nw), data_cfg.resize)

  if flip:
    image = image[:, ::-1]
    boxes = np.stack([nw - boxes[:, 2], boxes[:, 1], nw - boxes[:, 0],
                      boxes[:, 3]], axis=1)
    crops = crops[:, :, ::-1]
    windows = np.stack([nw - windows[:, 2], windows[:, 1],
                        nw - windows[:, 0], windows[:, 3]], axis=1)
    if semantic is not None:
      semantic = semantic[:, ::-1]
    if full is not None:
      full[:, :nh, :nw] = full[:, :nh, nw - 1::-1]

  out = dict(
      image=np.pad(image, ((0, bh - nh), (0, bw - nw), (0, 0))),
      image_hw=np.array([nh, nw], np.int32),
      gt_boxes=np.zeros((g, 4), np.float32),
      gt_labels=np.zeros((g,), np.int32),
      gt_valid=np.arange(g) < n,
      gt_mask_crops=np.ascontiguousarray(crops), gt_mask_windows=windows,
      scale=np.array([sx, sy], np.float32),
      orig_hw=np.array([h, w], np.int32),
      image_id=np.int64(rec["image_id"]),
      dropped=np.int32(len(labels) - n))
  out["gt_boxes"][:n] = boxes[:n]
  out["gt_labels"][:n] = labels[:n]
  if full is not None:
    out["gt_masks"] = full
  if semantic is not None:
    padded = np.pad(semantic, ((0, bh - nh), (0, bw - nw)),
                    constant_values=IGNORE)
    out["gt_semantic"] = np.ascontiguousarray(padded[::8, ::8])
  return out


def empty_example(data_cfg, bucket, with_semantic, image_id):
  """A placeholder with prepare_example's shapes, for an image that could
  not be read during evaluation (it is skipped and counted)."""
  bh, bw = bucket
  g, r = data_cfg.max_instances, data_cfg.mask_crop_size
  out = dict(
      image=np.zeros((bh, bw, 3), np.uint8),
      image_hw=np.array([bh, bw], np.int32),
      gt_boxes=np.zeros((g, 4), np.float32),
      gt_labels=np.zeros((g,), np.int32), gt_valid=np.zeros((g,), bool),
      gt_mask_crops=np.zeros((g, r, r), np.uint8),
      gt_mask_windows=np.zeros((g, 4), np.float32),
      scale=np.ones(2, np.float32), orig_hw=np.array([bh, bw], np.int32),
      image_id=np.int64(image_id), dropped=np.int32(0))
  if with_semantic:
    out["gt_semantic"] = np.full((bh // 8, bw // 8), IGNORE, np.uint8)
  return out


def check_buckets(buckets):
  for bh, bw in buckets:
    if bh % 32 or bw % 32:
      raise DataError(f"data.buckets: {bh}x{bw} is not a multiple of 32")
  return [tuple(b) for b in buckets]

