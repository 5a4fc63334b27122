"""The COCO fault catalogue (docs/data.md): what a labelling tool's export
or a hand edit can leave in a dataset, each case refused in one line
naming the file and the entry, or skipped with a counted warning naming
it, or trained on as mmdetection 3.3 trains on it (its own CocoDataset
and LoadAnnotations are the reference)."""
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from scnet_jax.data import loader
from scnet_jax.data.coco import CocoSource, read_rgb
from scnet_jax.errors import DataError
from tests.mmdet_reference import mmdet_import

H, W = 64, 80
SQUARE = [10, 10, 40, 10, 40, 40, 10, 40]


def _rle(size, counts_as_list):
  m = np.zeros(size, np.uint8)
  m[5:20, 5:30] = 1
  rle = mask_utils.encode(np.asfortranarray(m))
  if counts_as_list:  # uncompressed: run lengths, column-major
    flat = m.reshape(-1, order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.r_[0, edges, flat.size])
    return {"size": list(size), "counts": ([0] if flat[0] else []) +
            runs.tolist()}
  rle["counts"] = rle["counts"].decode()
  return rle


def _ann(ann_id, image_id=1, category_id=0, bbox=(10, 10, 30, 30),
         **extra):
  return dict(dict(id=ann_id, image_id=image_id, category_id=category_id,
                   iscrowd=0, bbox=list(bbox), area=900,
                   segmentation=[SQUARE]), **extra)


def _catalogue():
  """Annotations that train as mmdetection trains them (ids 1-7) or that
  it cannot train on (ids 20-26)."""
  return {
      "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                 {"id": 2, "file_name": "b.png", "height": H, "width": W}],
      # Category id 0 and a gap: labels 0 and 1.
      "categories": [{"id": 0, "name": "zero"}, {"id": 5, "name": "five"}],
      "annotations": [
          _ann(1, category_id=0),
          _ann(2, category_id=5, segmentation=_rle((H, W), False)),
          _ann(3, segmentation=_rle((H, W), True)),
          # Crowd regions in both RLE forms: ignored by training.
          _ann(4, iscrowd=1, segmentation=_rle((H, W), True)),
          _ann(5, iscrowd=1, segmentation=_rle((H, W), False)),
          # One valid polygon beside invalid ones: only it is decoded.
          _ann(6, image_id=2, segmentation=[SQUARE, [1, 1, 5, 5],
                                            [1, 2, 3, 4, 5, 6, 7]]),
          _ann(7, image_id=2, category_id=5, bbox=(0.5, 2, 60, 1)),
          # Not trained on (mmdetection: skipped or ignore_flag).
          _ann(20, bbox=(10, 10, 0, 10)),
          _ann(21, bbox=(40, 10, -20, 10)),
          _ann(22, bbox=(100, 10, 10, 10)),      # outside the image
          _ann(23, segmentation=[[1, 1, 9, 9]]),  # 2 points
          _ann(24, segmentation=[[1, 1, 9, 9, 9, 1, 5]]),  # odd count
          _ann(25, image_id=2, segmentation=[[]]),
      ]}


def _write(tmp_path, data, sizes=None):
  d = tmp_path / "img"
  d.mkdir(exist_ok=True)
  for im in data["images"]:
    name = im.get("file_name", "unnamed.png")
    h, w = (sizes or {}).get(name, (H, W))
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(d / name)
  ann = tmp_path / "ann.json"
  ann.write_text(json.dumps(data))
  return str(ann), str(d)


def _mmdet_instances(ann, image_dir, classes):
  """(boxes, labels, masks) of every instance mmdetection 3.3 trains on
  (not ignored), per image: CocoDataset + LoadAnnotations(poly2mask)."""
  coco_dataset = mmdet_import("mmdet.datasets").CocoDataset
  load = mmdet_import("mmdet.datasets.transforms").LoadAnnotations(
      with_bbox=True, with_mask=True, poly2mask=True, box_type=None)
  ref = coco_dataset(ann_file=ann, data_prefix=dict(img=image_dir),
                     pipeline=[], metainfo=dict(classes=classes),
                     filter_cfg=dict(filter_empty_gt=True, min_size=32))
  out = {}
  for i in range(len(ref)):
    info = ref.get_data_info(i)
    r = load(dict(info, ori_shape=(info["height"], info["width"])))
    keep = ~r["gt_ignore_flags"]
    out[info["img_id"]] = (r["gt_bboxes"][keep], r["gt_bboxes_labels"][keep],
                           r["gt_masks"].masks[keep])
  return out


def test_trains_what_mmdetection_trains_and_counts_the_rest(tmp_path):
  ann, d = _write(tmp_path, _catalogue())
  ours = CocoSource(ann, d, train=True)
  ref = _mmdet_instances(ann, d, ("zero", "five"))
  assert [r["image_id"] for r in ours.records] == sorted(ref) == [1, 2]
  for rec in ours.records:
    boxes, labels, masks = ref[rec["image_id"]]
    np.testing.assert_allclose(rec["boxes"], boxes)
    np.testing.assert_array_equal(rec["labels"], labels)
    np.testing.assert_array_equal(ours.load_masks(rec), masks)
  assert [r["ann_ids"] for r in ours.records] == [[1, 2, 3], [6, 7]]
  assert {what: ids for (_, what), ids in ours.skipped.items()} == {
      "boxes under one pixel skipped": [20, 21],
      "boxes outside the image skipped": [22],
      "annotations without a polygon of at least 3 points (an odd number "
      "of coordinates counts as none) skipped": [23, 24, 25]}
  lines = list(ours.warning_lines())
  assert f"warning: {ann}: 2 boxes under one pixel skipped (annotation ids " \
      "20, 21)" in lines


@pytest.mark.parametrize("segmentation", ["missing", [], {"size": [H, W]}])
def test_instance_without_a_mask_is_skipped_and_counted(tmp_path,
                                                        segmentation):
  # mmdetection 3.3 stops with a KeyError on the first two.
  data = _catalogue()
  bad = _ann(30)
  if segmentation == "missing":
    del bad["segmentation"]
  else:
    bad["segmentation"] = segmentation
  data["annotations"].append(bad)
  ann, d = _write(tmp_path, data)
  src = CocoSource(ann, d, train=True)
  assert 30 not in src.records[0]["ann_ids"]
  assert src.skipped["annotation", "annotations without a usable "
                     "segmentation skipped"] == [30]


def _dup(key):
  def mutate(data):
    data[key].append(dict(data[key][0]))
  return mutate


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(images=[]), r"'images' is empty"),
    (lambda d: d.pop("categories"), r"missing top-level field 'categories'"),
    (lambda d: d.update(categories=[]), r"'categories' is empty"),
    (lambda d: d.pop("annotations"),
     r"missing top-level field 'annotations'"),
    (_dup("images"), r"image id 1 appears twice in 'images'"),
    (_dup("annotations"), r"annotation id 1 appears twice in 'annotations'"),
    (_dup("categories"), r"category id 0 appears twice in 'categories'"),
    (lambda d: d["annotations"][0].update(image_id=9),
     r"annotation id 1: image_id 9 is not in 'images'"),
    (lambda d: d["annotations"][0].update(category_id=3),
     r"annotation id 1: category_id 3 is not in 'categories'"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
     r"annotation id 1: 'bbox' must be 4 numbers"),
    (lambda d: d["annotations"][0].pop("bbox"),
     r"annotation id 1: 'bbox' must be 4 numbers"),
    (lambda d: d["annotations"][2].update(segmentation=_rle((H, W - 1),
                                                             True)),
     r"annotation id 3: RLE size \[64, 79\] differs from image id 1's"),
    (lambda d: d["annotations"][4].update(segmentation=_rle((H - 1, W),
                                                             False)),
     r"annotation id 5: RLE size \[63, 80\] differs"),
    (lambda d: d["images"][0].pop("height"),
     r"image id 1: 'height' must be a positive integer, got None"),
    (lambda d: d["images"][0].update(width=0),
     r"image id 1: 'width' must be a positive integer, got 0"),
    (lambda d: d["images"][0].pop("file_name"), r"image id 1: no 'file_name'"),
    (lambda d: d["annotations"][0].pop("id"), r"annotation entry 0 has no"),
])
def test_faults_are_refused_in_one_line(tmp_path, mutate, message):
  data = _catalogue()
  mutate(data)
  ann, d = _write(tmp_path, data)
  with pytest.raises(DataError, match=message) as e:
    CocoSource(ann, d, train=False)
  assert str(e.value).startswith(ann) and "\n" not in str(e.value)


def test_files_that_are_not_annotation_files(tmp_path):
  p = tmp_path / "list.json"
  p.write_text("[]")
  with pytest.raises(DataError, match="list.json: not a COCO annotation "
                     "file"):
    CocoSource(str(p), str(tmp_path))
  p.write_bytes(b"\xff\xfe{")
  with pytest.raises(DataError, match="list.json: not a UTF-8 text file"):
    CocoSource(str(p), str(tmp_path))


def _mmdet_read(path):
  """mmdetection's LoadImageFromFile decode (cv2, 'color'), as RGB."""
  import mmcv
  with open(path, "rb") as f:
    return mmcv.imfrombytes(f.read(), flag="color", channel_order="rgb")


def _exif_rotated_jpeg(path):
  """A 40 x 24 (w x h) JPEG whose EXIF orientation 6 shows it 24 x 40."""
  arr = np.zeros((24, 40, 3), np.uint8)
  arr[:, :10] = (250, 20, 20)   # a red band at the stored left
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(arr).save(path, quality=95, exif=exif.tobytes())


def test_image_modes_and_orientation_read_as_mmdetection(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 255, (20, 30, 3), np.uint8)
  Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
  Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(
      tmp_path / "palette.png")
  Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
  for name in ("gray.png", "palette.png", "rgba.png"):
    ours = read_rgb(str(tmp_path / name))
    assert ours.shape == (20, 30, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, _mmdet_read(tmp_path / name))
  _exif_rotated_jpeg(tmp_path / "rotated.jpg")
  ours, theirs = read_rgb(str(tmp_path / "rotated.jpg")), _mmdet_read(
      tmp_path / "rotated.jpg")
  assert ours.shape == theirs.shape == (40, 24, 3)  # upright
  assert ours[:10, :, 0].mean() > 200  # the band is now at the top
  assert np.abs(ours.astype(int) - theirs).max() <= 8  # two JPEG decoders


def test_unusable_training_images_are_replaced_and_named(tmp_path):
  """A truncated JPEG, a zero-byte file and an image of another size than
  its entry are replaced by the next readable image of the bucket, and
  read_error gives the reason the run's warning prints."""
  names = ["ok0.png", "trunc.jpg", "empty.png", "small.png", "ok1.png"]
  data = {"images": [{"id": i + 1, "file_name": n, "height": H, "width": W}
                     for i, n in enumerate(names)],
          "categories": [{"id": 0, "name": "thing"}],
          "annotations": [_ann(i + 1, image_id=i + 1) for i in range(5)]}
  ann, d = _write(tmp_path, data, sizes={"small.png": (40, 40)})
  buf = io.BytesIO()
  Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(buf, "JPEG")
  (tmp_path / "img" / "trunc.jpg").write_bytes(buf.getvalue()[:300])
  (tmp_path / "img" / "empty.png").write_bytes(b"")
  src = CocoSource(ann, d, train=True)
  reasons = [loader.read_error(src, i) for i in range(len(src))]
  assert reasons[0] is None and reasons[4] is None
  assert "trunc.jpg: cannot decode image" in reasons[1]
  assert "empty.png: cannot decode image" in reasons[2]
  assert "small.png: image is 40x40 (width x height, EXIF orientation " \
      "applied) but the annotation file says 80x64" in reasons[3]
  from tests.helpers import tiny_config
  config = tiny_config("mask_rcnn")
  bucket_of, buckets = loader.record_buckets(src, config.data)
  load = loader.LoadExample(src, config.data, buckets, 1, False, True,
                            bucket_of)
  for rec in (1, 2, 3):
    ex = load((rec, int(bucket_of[rec]), False, 0))
    assert int(ex["skipped"]) == rec and int(ex["image_id"]) == 5


def test_missing_image_file_is_refused_before_training(tmp_path):
  ann, d = _write(tmp_path, _catalogue())
  (tmp_path / "img" / "b.png").unlink()
  with pytest.raises(DataError, match=r"b.png: image file not found \(image "
                     r"id 2 of .*ann.json\)"):
    CocoSource(ann, d, train=True)


def test_too_few_images_for_a_global_batch_name_the_file(tmp_path):
  ann, d = _write(tmp_path, _catalogue())
  src = CocoSource(ann, d, train=True)
  bucket_of = np.zeros(len(src), np.int64)
  with pytest.raises(DataError, match=r"ann.json: 2 training images \(after "
                     r"mmdetection's filters\) give no full global batch of "
                     r"8 images"):
    loader.check_steps_per_epoch(src, bucket_of, 8)
  assert loader.check_steps_per_epoch(src, bucket_of, 2) == 1
