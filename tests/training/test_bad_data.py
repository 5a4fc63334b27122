"""Faulty COCO-format data through train.py and eval.py: refused in one
line, exit code 2, before anything compiles; or trained on with every
skipped entry and image named."""
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from scnet_jax.errors import DataError
from scnet_jax.training.loop import train
from tests.helpers import run_command, tiny_config
from tests.training.test_resume import ROOT, _params, _train


def _dataset(tmp_path, num_images, sizes=None, num_categories=1, **fields):
  """A COCO-format dataset of num_images with one box each, image i's of
  category 1 + i % num_categories."""
  d = tmp_path / "images"
  d.mkdir(exist_ok=True)
  images, anns = [], []
  for i in range(num_images):
    name = f"{i}.png"
    h, w = (sizes or {}).get(name, (64, 80))
    arr = np.full((h, w, 3), 60, np.uint8)
    arr[10:40, 10 + i:50 + i] = 200
    Image.fromarray(arr).save(d / name)
    images.append({"id": i + 1, "file_name": name, "height": 64, "width": 80})
    anns.append({"id": i + 1, "image_id": i + 1,
                 "category_id": 1 + i % num_categories,
                 "iscrowd": 0, "bbox": [10 + i, 10, 40, 30], "area": 1200,
                 "segmentation": [[10 + i, 10, 50 + i, 10, 50 + i, 40,
                                   10 + i, 40]]})
  data = dict(images=images, annotations=anns,
              categories=[{"id": k + 1, "name": f"box{k + 1}"}
                          for k in range(num_categories)], **fields)
  ann = tmp_path / "ann.json"
  ann.write_text(json.dumps(data))
  return str(ann), str(d), data


def _coco_config(ann, image_dir, val_ann=None):
  c = tiny_config("mask_rcnn", **{"model.num_classes": 1})
  c.data.source = "coco"
  c.data.train.update(ann_file=ann, image_dir=image_dir)
  c.data.val.update(ann_file=val_ann or ann, image_dir=image_dir)
  return c


@pytest.fixture
def compile_events():
  """The names of JAX's compile-time events recorded during a test."""
  seen = []

  def listener(name, *args, **kwargs):
    if "compile" in name or "trace" in name:
      seen.append(name)
  jax.monitoring.register_event_duration_secs_listener(listener)
  yield seen
  jax.monitoring.unregister_event_duration_listener(listener)


def test_data_faults_stop_train_before_anything_compiles(tmp_path,
                                                         compile_events):
  ann, d, data = _dataset(tmp_path, 8)
  empty = tmp_path / "empty.json"
  empty.write_text(json.dumps(dict(data, images=[])))
  config = _coco_config(str(empty), d)
  config.global_batch = 8
  with pytest.raises(DataError, match=r"empty.json: 'images' is empty"):
    train(config, str(tmp_path / "run"))
  config = _coco_config(ann, d)
  config.global_batch = 16
  with pytest.raises(DataError, match=r"ann.json: 8 training images .* no "
                     r"full global batch of 16"):
    train(config, str(tmp_path / "run"))
  # A fault in the validation file is found as early.
  data["images"].append(dict(data["images"][0]))
  val = tmp_path / "val.json"
  val.write_text(json.dumps(data))
  config = _coco_config(ann, d, str(val))
  config.global_batch = 8
  with pytest.raises(DataError, match=r"val.json: image id 1 appears twice"):
    train(config, str(tmp_path / "run"))
  # A label outside a head's classes: a second category, one class.
  data["images"].pop()
  two = tmp_path / "two.json"
  two.write_text(json.dumps(dict(data, categories=data["categories"] + [
      {"id": 7, "name": "lid"}])))
  config = _coco_config(str(two), d)
  config.global_batch = 8
  with pytest.raises(DataError, match=r"two.json: category id 7 \('lid'\) "
                     r"is label 1, outside model.num_classes=1"):
    train(config, str(tmp_path / "run"))
  # Thing-only semantic labels 0..4 (4 classes and the background).
  config = tiny_config("scnet", global_batch=8, **{
      "model.roi_heads.semantic_head.num_classes": 4})
  with pytest.raises(DataError, match=r"train.json: thing-only semantic "
                     r"labels .* run 0..4 .* outside model.roi_heads."
                     r"semantic_head.num_classes=4"):
    train(config, str(tmp_path / "run2"))
  assert compile_events == []
  # The listener hears compiles: a jitted function proves it.
  jax.jit(lambda x: x + 1)(np.float32(1))
  assert compile_events


def test_empty_dataset_is_one_line_and_exit_2(tmp_path):
  ann, d, data = _dataset(tmp_path, 1)
  data["images"] = []
  (tmp_path / "ann.json").write_text(json.dumps(data))
  paths = [f"--config.data.{s}.{k}={v}" for s in ("train", "val")
           for k, v in (("ann_file", ann), ("image_dir", d))]
  for args in (
      ["train.py", "--workdir", str(tmp_path / "run")],
      ["eval.py", "--checkpoint", str(tmp_path / "none")]):
    p = run_command(*args, "--config", "configs/mask_rcnn_tiny_shapes.py",
                    "--config.data.source=coco", *paths)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip().splitlines() == [
        f"error: {ann}: 'images' is empty: there is nothing to train or "
        f"evaluate on"], p.stderr


def test_faulty_dataset_trains_and_names_what_it_skipped(tmp_path):
  """The tiny SCNet on a user's five-class dataset without stuff maps:
  model.num_classes=5 sets every head's class count (the thing-only
  semantic head's too)."""
  # 4 images of one bucket, 2 steps of 2: each is drawn once.
  ann, d, data = _dataset(tmp_path, 4, sizes={"2.png": (40, 40)},
                          num_categories=5)
  data["annotations"] += [
      {"id": 9, "image_id": 1, "category_id": 5, "iscrowd": 0,
       "bbox": [50, 40, 20, 20], "area": 400,
       "segmentation": [[50, 40, 70, 40, 70, 60, 50, 60]]},
      {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0,
       "bbox": [5, 5, -3, 10], "area": 30, "segmentation": [[1, 1, 5, 5]]},
      {"id": 11, "image_id": 2, "category_id": 1, "iscrowd": 0,
       "bbox": [5, 5, 20, 10], "area": 200, "segmentation": []}]
  (tmp_path / "ann.json").write_text(json.dumps(data))
  p = _train(tmp_path / "run", 2, "--config.data.source=coco",
             "--config.model.num_classes=5",
             f"--config.data.train.ann_file={ann}",
             f"--config.data.train.image_dir={d}",
             config=os.path.join(ROOT, "configs", "scnet_tiny_shapes.py"))
  assert "Traceback" not in p.stderr
  out = p.stdout
  assert (f"warning: {ann}: 1 boxes under one pixel skipped (annotation ids "
          f"10)") in out
  assert (f"warning: {ann}: 1 annotations without a usable segmentation "
          f"skipped (annotation ids 11)") in out
  assert (f"training image skipped: {d}/2.png: image is 40x40 (width x "
          f"height, EXIF orientation applied) but the annotation file says "
          f"80x64") in out
  assert "1 unreadable training images were skipped" in out
  assert _params(tmp_path / "run")[0] == 2
