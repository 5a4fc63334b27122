"""COCO-format source: annotation JSON + image folder (+ optional
COCO-Stuff `stuffthingmaps` PNGs).

Follows mmdetection's CocoDataset: crowd instances ignored, category ids
mapped to contiguous labels (and back for results), training filters images
without any annotation or with a side under 32 px (an image with only crowd
or too small boxes stays, as background). Boxes under one pixel wide or
high, or with no part inside the image, and instances without a mask
mmdetection can train on (coco_json.instance_segmentation) are skipped
with a counted warning that names their ids. Masks are decoded exactly as
`pycocotools.COCO.annToMask` does; images are turned upright by their
EXIF orientation.
"""
import collections
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools import mask as mask_utils

from scnet_jax.data.coco_json import instance_segmentation, load_coco_json
from scnet_jax.errors import DataError


def ann_to_rle(segm, height, width, where):
  """A COCO segmentation (polygons, uncompressed or compressed RLE) as
  compressed RLE; `where` names the annotation in errors."""
  if isinstance(segm, list):
    for poly in segm:
      if len(poly) < 6:
        raise DataError(f"{where}: polygon with fewer than 3 points "
                        f"({len(poly) // 2})")
    return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
  if isinstance(segm, dict) and "counts" in segm:
    if isinstance(segm["counts"], list):
      return mask_utils.frPyObjects(segm, height, width)
    return segm
  raise DataError(f"{where}: segmentation is neither polygons nor RLE")


def decode_mask(segm, height, width, where="annotation"):
  """[height, width] uint8 mask, equal to COCO.annToMask."""
  return mask_utils.decode(ann_to_rle(segm, height, width, where))



def read_rgb(path):
  """An image file (any mode PIL reads: grayscale, palette and RGBA are
  converted, alpha dropped) as uint8 RGB [H, W, 3], turned upright by its
  EXIF orientation as mmdetection's and detectron2's loaders do;
  DataError names the file if it is missing or cannot be decoded."""
  try:
    with Image.open(path) as im:
      return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
  except FileNotFoundError:
    raise DataError(f"{path}: image file not found") from None
  except (UnidentifiedImageError, OSError) as e:
    raise DataError(f"{path}: cannot decode image ({e})") from None

class CocoSource:
  """Random-access list of image records.

  Args:
    ann_file: COCO instances JSON.
    image_dir: folder of the images named by `file_name`.
    seg_dir: optional folder of stuff maps (`name.png` per image); '' for
      none.
    train: filter images as mmdet does for training.
    check_files: fail early on a missing image folder or file.
  Record (dict): image_id, path, height, width, boxes [n, 4] float32 xyxy,
  labels [n] int32, segmentations (list), ann_ids (list), seg_path or None.
  """

  def __init__(self, ann_file, image_dir, seg_dir="", train=True,
               check_files=True):
    images, annotations, cats = load_coco_json(ann_file)
    self.ann_file = ann_file
    self.image_dir = image_dir
    self.seg_dir = seg_dir
    self.cat_ids = [c["id"] for c in cats]
    self.class_names = [c.get("name", str(c["id"])) for c in cats]
    self.cat_to_label = {cid: i for i, cid in enumerate(self.cat_ids)}
    # (kind of entry, what was wrong) -> the ids of the entries left out.
    self.skipped = collections.defaultdict(list)
    per_image = collections.defaultdict(list)
    for ann in annotations:
      per_image[ann["image_id"]].append(ann)
    if check_files and not os.path.isdir(image_dir):
      raise DataError(f"{image_dir}: image folder not found (for "
                      f"{ann_file})")
    self.records = []
    for image_id in sorted(images):
      im = images[image_id]
      rec = self._record(im, per_image[image_id])
      # mmdet's filter_empty_gt keeps an image with any annotation, crowd
      # or too small ones included (it then trains as all background).
      if train and (not per_image[image_id] or min(im["height"],
                                                   im["width"]) < 32):
        self.skipped["image", "images without annotations or under 32 px "
                     "left out of training"].append(image_id)
        continue
      if check_files and not os.path.exists(rec["path"]):
        raise DataError(f"{rec['path']}: image file not found (image id "
                        f"{image_id} of {ann_file})")
      self.records.append(rec)

  @property
  def warnings(self):
    """{what was wrong: how many entries were left out for it}."""
    return collections.Counter({what: len(ids) for (_, what), ids in
                                self.skipped.items()})

  def warning_lines(self):
    """One line per kind of skipped entry, with its count and first ids."""
    for (kind, what), ids in self.skipped.items():
      shown = ", ".join(str(i) for i in ids[:5]) + (
          ", ..." if len(ids) > 5 else "")
      yield (f"warning: {self.ann_file}: {len(ids)} {what} ({kind} ids "
             f"{shown})")

  def _record(self, im, anns):
    boxes, labels, segms, ids = [], [], [], []
    for ann in anns:
      if ann.get("iscrowd", 0):
        continue
      x, y, w, h = ann["bbox"]
      # mmdet: boxes under one pixel, or with no part in the image, go.
      inter_w = min(x + w, im["width"]) - max(x, 0)
      inter_h = min(y + h, im["height"]) - max(y, 0)
      if w < 1 or h < 1 or ann.get("area", 1) <= 0:
        self.skipped["annotation", "boxes under one pixel skipped"].append(
            ann["id"])
        continue
      if inter_w <= 0 or inter_h <= 0:
        self.skipped["annotation", "boxes outside the image skipped"].append(
            ann["id"])
        continue
      segm, why_not = instance_segmentation(ann)
      if segm is None:
        self.skipped["annotation", why_not + " skipped"].append(ann["id"])
        continue
      boxes.append([x, y, x + w, y + h])
      labels.append(self.cat_to_label[ann["category_id"]])
      segms.append(segm)
      ids.append(ann["id"])
    stem = os.path.splitext(im["file_name"])[0]
    return dict(
        image_id=im["id"], path=os.path.join(self.image_dir, im["file_name"]),
        height=im["height"], width=im["width"],
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int32), segmentations=segms,
        ann_ids=ids,
        seg_path=os.path.join(self.seg_dir, stem + ".png") if self.seg_dir
        else None)

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]

  def load_image(self, rec):
    """uint8 RGB [H, W, 3]; DataError names the file if unreadable."""
    return read_rgb(rec["path"])

  def load_masks(self, rec):
    """[n, H, W] uint8 instance masks at original resolution."""
    h, w = rec["height"], rec["width"]
    masks = [decode_mask(s, h, w, f"{self.ann_file}: annotation id {a}")
             for s, a in zip(rec["segmentations"], rec["ann_ids"])]
    return np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)

  def load_semantic(self, rec):
    """[H, W] uint8 stuff map, or None when no seg_dir is configured."""
    if rec["seg_path"] is None:
      return None
    try:
      with Image.open(rec["seg_path"]) as im:
        return np.asarray(im)
    except FileNotFoundError:
      raise DataError(f"{rec['seg_path']}: stuff map not found (set "
                      f"data.*.seg_dir='' to derive thing-only labels from "
                      f"the instance masks)") from None

  def label_to_cat_id(self, labels):
    return np.asarray(self.cat_ids)[np.asarray(labels)]
