"""COCO-format source: annotation JSON + image folder (+ optional
COCO-Stuff `stuffthingmaps` PNGs).

Follows mmdetection's CocoDataset: crowd instances ignored, category ids
mapped to contiguous labels (and back for results), training filters images
without any annotation or with a side under 32 px (an image with only crowd
or too small boxes stays, as background). Boxes under one pixel wide or
high, or with no part inside the image, are skipped with a counted
warning. Masks
are decoded exactly as `pycocotools.COCO.annToMask` does.
"""
import collections
import json
import os

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from scnet_jax.errors import DataError


def _load_json(path):
  if not os.path.exists(path):
    raise DataError(f"{path}: annotation file not found")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: malformed JSON ({e.msg} at line {e.lineno}, "
                    f"column {e.colno})") from None


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
  converted, alpha dropped) as uint8 RGB [H, W, 3]; DataError names the
  file if it is missing or cannot be decoded."""
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
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
    data = _load_json(ann_file)
    for key in ("images", "annotations", "categories"):
      if key not in data:
        raise DataError(f"{ann_file}: missing top-level field '{key}'")
    self.ann_file = ann_file
    self.image_dir = image_dir
    self.seg_dir = seg_dir
    cats = sorted(data["categories"], key=lambda c: c["id"])
    self.cat_ids = [c["id"] for c in cats]
    self.class_names = [c["name"] for c in cats]
    self.cat_to_label = {cid: i for i, cid in enumerate(self.cat_ids)}
    self.warnings = collections.Counter()
    images = {im["id"]: im for im in data["images"]}
    per_image = collections.defaultdict(list)
    for ann in data["annotations"]:
      where = f"{ann_file}: annotation id {ann.get('id')}"
      if ann.get("image_id") not in images:
        raise DataError(f"{where}: image_id {ann.get('image_id')} is not "
                        f"in 'images'")
      if ann.get("category_id") not in self.cat_to_label:
        raise DataError(f"{where}: category_id {ann.get('category_id')} is "
                        f"not in 'categories'")
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
        self.warnings["filtered images"] += 1
        continue
      if check_files and not os.path.exists(rec["path"]):
        raise DataError(f"{rec['path']}: image file not found (image id "
                        f"{image_id} of {ann_file})")
      self.records.append(rec)

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
        self.warnings["skipped boxes under one pixel"] += 1
        continue
      if inter_w <= 0 or inter_h <= 0:
        self.warnings["skipped boxes outside the image"] += 1
        continue
      if "segmentation" not in ann:
        raise DataError(f"{self.ann_file}: annotation id {ann['id']}: no "
                        f"'segmentation'")
      boxes.append([x, y, x + w, y + h])
      labels.append(self.cat_to_label[ann["category_id"]])
      segms.append(ann["segmentation"])
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
