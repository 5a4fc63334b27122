"""The COCO reader against pycocotools.COCO.annToMask, and its errors."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from scnet_jax.data.coco import CocoSource
from scnet_jax.errors import DataError
from tests.helpers import shapes_root


def _write(tmp_path, data, images=(("a.png", 60, 80), ("b.png", 40, 50),
                                   ("c.png", 30, 20))):
  d = tmp_path / "img"
  d.mkdir(exist_ok=True)
  for name, h, w in images:
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(d / name)
  ann = tmp_path / "ann.json"
  ann.write_text(json.dumps(data))
  return str(ann), str(d)


def _handmade():
  m = np.zeros((60, 80), np.uint8)
  m[10:30, 20:50] = 1
  compressed = mask_utils.encode(np.asfortranarray(m))
  compressed["counts"] = compressed["counts"].decode()
  uncompressed = {"size": [60, 80], "counts": [0] + [0] * 0}
  flat = np.asfortranarray(m).reshape(-1, order="F")
  runs, val, count = [], 0, 0
  for px in flat:
    if px == val:
      count += 1
    else:
      runs.append(count)
      val, count = px, 1
  runs.append(count)
  uncompressed["counts"] = runs
  return {
      "images": [{"id": 1, "file_name": "a.png", "height": 60, "width": 80},
                 {"id": 2, "file_name": "b.png", "height": 40, "width": 50},
                 {"id": 3, "file_name": "c.png", "height": 30, "width": 20}],
      "categories": [{"id": 1, "name": "cat"}, {"id": 7, "name": "dog"}],
      "annotations": [
          {"id": 10, "image_id": 1, "category_id": 7, "iscrowd": 0,
           "bbox": [5, 5, 20, 15], "area": 150,
           "segmentation": [[5, 5, 25, 5, 25, 20, 5, 20],
                            [30, 30, 40, 30, 35, 40]]},
          {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0,
           "bbox": [20, 10, 30, 20], "area": 600,
           "segmentation": compressed},
          {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0,
           "bbox": [20, 10, 30, 20], "area": 600,
           "segmentation": uncompressed},
          {"id": 13, "image_id": 1, "category_id": 7, "iscrowd": 1,
           "bbox": [0, 0, 80, 60], "area": 4800,
           "segmentation": uncompressed},
          {"id": 14, "image_id": 3, "category_id": 1, "iscrowd": 0,
           "bbox": [1, 1, 5, 5], "area": 25,
           "segmentation": [[1, 1, 6, 1, 6, 6]]},
      ]}


def _check_masks(src, ann_file):
  coco = COCO(ann_file)
  n = 0
  for rec in src.records:
    masks = src.load_masks(rec)
    for m, ann_id in zip(masks, rec["ann_ids"]):
      np.testing.assert_array_equal(m, coco.annToMask(coco.anns[ann_id]))
      n += 1
  return n


def test_masks_equal_ann_to_mask_on_shapes():
  root = shapes_root()
  ann = f"{root}/annotations/train.json"
  src = CocoSource(ann, f"{root}/train")
  assert _check_masks(src, ann) == len(json.load(open(ann))["annotations"])


def test_handmade_json(tmp_path):
  ann, d = _write(tmp_path, _handmade())
  train = CocoSource(ann, d, train=True)
  # image 2 has no annotations and image 3 is under 32 px: both filtered.
  assert [r["image_id"] for r in train.records] == [1]
  val = CocoSource(ann, d, train=False)
  assert [r["image_id"] for r in val.records] == [1, 2, 3]
  rec = val.records[0]
  assert rec["ann_ids"] == [10, 11, 12]          # crowd ignored
  np.testing.assert_array_equal(rec["labels"], [1, 0, 0])  # id gap 1, 7
  np.testing.assert_allclose(rec["boxes"][0], [5, 5, 25, 20])
  np.testing.assert_array_equal(val.label_to_cat_id([0, 1]), [1, 7])
  assert val.class_names == ["cat", "dog"]
  assert _check_masks(val, ann) == 4


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["annotations"][0].update(category_id=3),
     "annotation id 10: category_id 3 is not in 'categories'"),
    (lambda d: d.pop("categories"), "missing top-level field 'categories'"),
])
def test_bad_annotations_name_file_and_annotation(tmp_path, mutate, message):
  data = _handmade()
  mutate(data)
  ann, d = _write(tmp_path, data)
  with pytest.raises(DataError, match=message) as e:
    src = CocoSource(ann, d, train=False)
    for rec in src.records:
      src.load_masks(rec)
  assert "ann.json" in str(e.value)


def test_training_filters_equal_mmdetection(tmp_path):
  """Which images train, and with which boxes: mmdetection 3.3's own
  CocoDataset (filter_empty_gt, min_size 32) on the same file."""
  from tests.mmdet_reference import mmdet_import
  data = _handmade()
  data["images"].append({"id": 4, "file_name": "d.png", "height": 50,
                         "width": 50})
  poly = [[1, 1, 6, 1, 6, 6]]
  data["annotations"] += [
      # image 2: only a crowd region; image 4: only a sub-pixel box.
      {"id": 20, "image_id": 2, "category_id": 1, "iscrowd": 1,
       "bbox": [0, 0, 30, 30], "area": 900, "segmentation": poly},
      {"id": 21, "image_id": 4, "category_id": 1, "iscrowd": 0,
       "bbox": [3, 3, 0.5, 10], "area": 5, "segmentation": poly},
      # image 1: a box outside the image, one 1 px wide (kept).
      {"id": 22, "image_id": 1, "category_id": 1, "iscrowd": 0,
       "bbox": [90, 5, 10, 10], "area": 100, "segmentation": poly},
      {"id": 23, "image_id": 1, "category_id": 7, "iscrowd": 0,
       "bbox": [40, 40, 1, 8], "area": 8, "segmentation": poly}]
  ann, d = _write(tmp_path, data, images=(
      ("a.png", 60, 80), ("b.png", 40, 50), ("c.png", 30, 20),
      ("d.png", 50, 50)))
  ours = CocoSource(ann, d, train=True)
  coco_dataset = mmdet_import("mmdet.datasets").CocoDataset
  ref = coco_dataset(ann_file=ann, data_prefix=dict(img=d), pipeline=[],
                     metainfo=dict(classes=("cat", "dog")),
                     filter_cfg=dict(filter_empty_gt=True, min_size=32))
  infos = [ref.get_data_info(i) for i in range(len(ref))]
  assert [r["image_id"] for r in ours.records] == [i["img_id"] for i in
                                                   infos] == [1, 2, 4]
  for rec, info in zip(ours.records, infos):
    kept = [x for x in info["instances"] if not x["ignore_flag"]]
    np.testing.assert_allclose(rec["boxes"].reshape(-1, 4), np.reshape(
        [x["bbox"] for x in kept], (-1, 4)))
    np.testing.assert_array_equal(rec["labels"],
                                  [x["bbox_label"] for x in kept])


def test_degenerate_boxes_are_skipped_and_counted(tmp_path):
  data = _handmade()
  data["annotations"][0]["bbox"] = [5, 5, 0, 10]
  ann, d = _write(tmp_path, data)
  src = CocoSource(ann, d, train=False)
  assert 10 not in src.records[0]["ann_ids"]
  assert src.warnings["boxes under one pixel skipped"] == 1


def test_file_errors(tmp_path):
  ann, d = _write(tmp_path, _handmade())
  with pytest.raises(DataError, match="malformed JSON"):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    CocoSource(str(bad), d)
  with pytest.raises(DataError, match="annotation file not found"):
    CocoSource(str(tmp_path / "none.json"), d)
  os.remove(os.path.join(d, "a.png"))
  with pytest.raises(DataError, match="a.png: image file not found"):
    CocoSource(ann, d)
  open(os.path.join(d, "a.png"), "wb").write(b"not a png")
  src = CocoSource(ann, d, train=False)
  with pytest.raises(DataError, match="a.png: cannot decode image"):
    src.load_image(src.records[0])
