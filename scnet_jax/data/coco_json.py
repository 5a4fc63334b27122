"""Reading and checking a COCO instances JSON before anything is built.

`load_coco_json` refuses, in one `DataError` line naming the file and the
field, what no detector can train or be scored on: a file that is not
JSON, a missing top-level field, no images, an image entry without a
positive `height`/`width` or a `file_name`, an id used twice (images,
annotations, categories), an annotation naming no image or no category,
a `bbox` that is not four numbers, an RLE whose `size` is not its
image's. `instance_segmentation` applies mmdetection 3.3's rule for
masks it cannot train on (LoadAnnotations._process_masks): polygons with
an odd number of coordinates or fewer than 3 points are dropped, and an
instance left with none, with no `segmentation` at all, or with an RLE
dict lacking `counts` or `size`, is not trained on. docs/data.md has the whole
catalogue beside mmdetection's and detectron2's behaviour.
"""
import json
import numbers
import os

from scnet_jax.errors import DataError

TOP_LEVEL = ("images", "annotations", "categories")


def _read(path):
  if not os.path.exists(path):
    raise DataError(f"{path}: annotation file not found")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: malformed JSON ({e.msg} at line {e.lineno}, "
                    f"column {e.colno})") from None
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not a UTF-8 text file ({e.reason})") from None


def _unique(path, entries, field, what):
  """{id: entry}; DataError for an entry without an id or an id twice."""
  by_id = {}
  for i, entry in enumerate(entries):
    if not isinstance(entry, dict) or "id" not in entry:
      raise DataError(f"{path}: {what} entry {i} has no 'id'")
    if entry["id"] in by_id:
      raise DataError(f"{path}: {what} id {entry['id']} appears twice in "
                      f"'{field}'")
    by_id[entry["id"]] = entry
  return by_id


def _check_image(path, im):
  where = f"{path}: image id {im['id']}"
  for key in ("height", "width"):
    v = im.get(key)
    if not isinstance(v, numbers.Integral) or v <= 0:
      raise DataError(f"{where}: '{key}' must be a positive integer, got "
                      f"{v!r}")
  if not isinstance(im.get("file_name"), str) or not im["file_name"]:
    raise DataError(f"{where}: no 'file_name'")


def _check_annotation(path, ann, images, categories):
  where = f"{path}: annotation id {ann['id']}"
  if ann.get("image_id") not in images:
    raise DataError(f"{where}: image_id {ann.get('image_id')} is not in "
                    f"'images'")
  if ann.get("category_id") not in categories:
    raise DataError(f"{where}: category_id {ann.get('category_id')} is not "
                    f"in 'categories'")
  box = ann.get("bbox")
  if (not isinstance(box, (list, tuple)) or len(box) != 4 or not all(
      isinstance(v, numbers.Real) for v in box)):
    raise DataError(f"{where}: 'bbox' must be 4 numbers [x, y, width, "
                    f"height], got {box!r}")
  segm = ann.get("segmentation")
  if isinstance(segm, dict) and "size" in segm:
    im = images[ann["image_id"]]
    if list(segm["size"]) != [im["height"], im["width"]]:
      raise DataError(f"{where}: RLE size {list(segm['size'])} differs from "
                      f"image id {im['id']}'s height and width "
                      f"[{im['height']}, {im['width']}]")


def load_coco_json(path):
  """The checked file: (images {id: entry}, annotations [entries],
  categories sorted by id). DataError on the first fault, naming `path`
  and the entry's id."""
  data = _read(path)
  if not isinstance(data, dict):
    raise DataError(f"{path}: not a COCO annotation file (the top level is "
                    f"a {type(data).__name__}, not an object)")
  for key in TOP_LEVEL:
    if key not in data:
      raise DataError(f"{path}: missing top-level field '{key}'")
    if not isinstance(data[key], list):
      raise DataError(f"{path}: '{key}' must be a list")
  if not data["images"]:
    raise DataError(f"{path}: 'images' is empty: there is nothing to train "
                    f"or evaluate on")
  if not data["categories"]:
    raise DataError(f"{path}: 'categories' is empty")
  images = _unique(path, data["images"], "images", "image")
  categories = _unique(path, data["categories"], "categories", "category")
  _unique(path, data["annotations"], "annotations", "annotation")
  for im in images.values():
    _check_image(path, im)
  for ann in data["annotations"]:
    _check_annotation(path, ann, images, categories)
  return images, data["annotations"], sorted(categories.values(),
                                             key=lambda c: c["id"])


def instance_segmentation(ann):
  """(segmentation to decode, or None, the reason it is not trained on).

  mmdetection 3.3's rule: only polygons of an even number (>= 6) of
  coordinates count; an instance without one, or without a usable RLE,
  is not trained on.
  """
  segm = ann.get("segmentation")
  if isinstance(segm, list) and segm:
    polygons = [p for p in segm if isinstance(p, list) and len(p) >= 6 and
                len(p) % 2 == 0]
    if polygons:
      return polygons, None
    return None, ("annotations without a polygon of at least 3 points (an "
                  "odd number of coordinates counts as none)")
  if (isinstance(segm, dict) and segm.get("size") is not None and
      isinstance(segm.get("counts"), (list, str))):
    return segm, None
  return None, "annotations without a usable segmentation"
