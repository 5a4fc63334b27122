"""eval.py and Predictor on a checkpoint written by train.py."""
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from scnet_jax import Predictor
from tests.helpers import (ROOT, compiles, run_command, shapes_flags,
                           shapes_root)

CONFIG = os.path.join(ROOT, "configs", "mask_rcnn_tiny_shapes.py")


def _run(script, *args):
  return run_command(os.path.join(ROOT, script), "--config", CONFIG, *args,
                     *shapes_flags())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  work = tmp_path_factory.mktemp("run")
  p = _run("train.py", "--workdir", str(work), "--config.total_steps=4",
           "--config.global_batch=2", "--config.visualize_at_end=2")
  assert p.returncode == 0, p.stderr
  assert "final: bbox AP" in p.stdout
  return work


def test_eval_twice_identical_and_results_load(trained, tmp_path):
  outs = []
  for name in ("a", "b"):
    p = _run("eval.py", "--checkpoint", str(trained), "--output",
             str(tmp_path / name), "--visualize", "2", "--compare_gt")
    assert p.returncode == 0, p.stderr
    assert "Average Precision" in p.stdout and "segm" in p.stdout
    with open(tmp_path / name / "metrics.json") as f:
      outs.append(json.load(f))
  keys = [k for k in outs[0] if k.startswith(("bbox_", "segm_"))]
  assert len(keys) == 24
  assert all(outs[0][k] == outs[1][k] for k in keys)
  with open(os.path.join(trained, "eval", "metrics.json")) as f:
    from_training = json.load(f)
  assert all(from_training[k] == outs[0][k] for k in keys)
  results = tmp_path / "a" / "results.json"
  if json.loads(results.read_text()):
    COCO(f"{shapes_root()}/annotations/val.json").loadRes(str(results))
  assert len(os.listdir(tmp_path / "a" / "vis")) == 2
  from PIL import Image
  with Image.open(next((tmp_path / "a" / "vis").iterdir())) as pic:
    assert pic.width >= 2 * 512  # ground truth beside the predictions
  assert len(os.listdir(trained / "eval" / "vis")) == 2


def test_eval_errors_are_one_line(trained, tmp_path):
  p = _run("eval.py", "--checkpoint", str(tmp_path / "nope"))
  assert p.returncode == 2 and "checkpoint directory not found" in p.stderr
  p = run_command(os.path.join(ROOT, "eval.py"), "--config",
                  os.path.join(ROOT, "configs", "scnet_tiny_shapes.py"),
                  "--checkpoint", str(trained), *shapes_flags())
  assert p.returncode == 2 and "does not fit the configured model" in p.stderr
  p = _run("eval.py", "--checkpoint", str(trained),
           f"--config.data.val.image_dir={tmp_path}")
  assert p.returncode == 2 and "image file not found" in p.stderr
  for proc in (p,):
    assert "Traceback" not in proc.stderr


def test_undecodable_image_is_reported_skipped_counted(trained, tmp_path):
  import shutil
  images = tmp_path / "val"
  shutil.copytree(f"{shapes_root()}/val", images)
  (images / "000003.png").write_bytes(b"not an image")
  p = _run("eval.py", "--checkpoint", str(trained), "--output",
           str(tmp_path / "out"), f"--config.data.val.image_dir={images}")
  assert p.returncode == 0, p.stderr
  assert "image id 4 of" in p.stdout and "1 unreadable images" in p.stdout
  assert "000003.png: cannot decode image" in p.stdout
  with open(tmp_path / "out" / "metrics.json") as f:
    m = json.load(f)
  assert m["skipped_images"] == 1 and m["num_images"] == 15


def test_predictor_any_size_without_recompiling(trained):
  p = Predictor.from_checkpoint(CONFIG, str(trained))
  assert p.class_names == ["circle", "square", "triangle", "star"]
  rng = np.random.default_rng(0)
  with compiles() as seen:
    for i, (h, w) in enumerate([(128, 128), (100, 90), (64, 128)]):
      out = p(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
      n = len(out["scores"])
      assert out["boxes"].shape == (n, 4) and out["masks"].shape == (n, h, w)
      assert out["masks"].dtype == bool
      if n:
        assert out["boxes"][:, 2].max() <= w and out["boxes"][:, 3].max() <= h
      if i == 0:
        seen.clear()   # the first image compiles (or finds it cached)
  assert not seen
  batch = p.predict_batch([rng.integers(0, 255, (128, 128, 3),
                                        dtype=np.uint8)] * 3)
  assert len(batch) == 3


def test_predict_a_folder_of_any_images(trained, tmp_path):
  """Grayscale, RGBA and larger-than-bucket images are predicted; a
  corrupt file gets one line, is skipped and counted."""
  from PIL import Image
  folder = tmp_path / "images"
  folder.mkdir()
  rng = np.random.default_rng(0)
  shape = np.asarray(Image.open(f"{shapes_root()}/val/" + sorted(
      os.listdir(f"{shapes_root()}/val"))[0]).convert("RGB"))
  Image.fromarray(shape).resize((700, 500)).save(folder / "large.jpg")
  Image.fromarray(shape[:, :, 0]).save(folder / "gray.png")
  rgba = np.concatenate([shape, np.full((*shape.shape[:2], 1), 128,
                                        np.uint8)], axis=-1)
  Image.fromarray(rgba[:100, :90], "RGBA").save(folder / "rgba.png")
  (folder / "broken.jpg").write_bytes(rng.bytes(300))
  (folder / "notes.txt").write_text("not an image")
  def predict(out, devices, *args):
    return run_command(
        "-m", "scnet_jax.predict_images", "--config", CONFIG, "--checkpoint",
        str(trained), "--images", str(folder), "--out", str(out),
        "--score_thr=0.0", "--config.model.test.score_thr=0.0", *args,
        *shapes_flags(), devices=devices)

  out = tmp_path / "out"
  p = predict(out, 1, "--pictures")
  assert p.returncode == 0, p.stderr
  lines = (p.stdout + p.stderr).splitlines()
  assert len([ln for ln in lines if "broken.jpg" in ln]) == 1
  assert "predicted 3 images" in p.stdout and "skipped 1" in p.stdout
  results = json.loads((out / "results.json").read_text())
  sizes = {"large.jpg": (500, 700), "gray.png": shape.shape[:2],
           "rgba.png": (100, 90)}
  assert {r["file_name"] for r in results} == set(sizes)
  from pycocotools import mask as mask_utils
  for r in results:
    h, w = sizes[r["file_name"]]
    assert list(mask_utils.decode(r["segmentation"]).shape) == [h, w]
    x, y, bw, bh = r["bbox"]
    assert -1e-3 <= x and x + bw <= w + 1e-3 and y + bh <= h + 1e-3
  assert sorted(os.listdir(out / "vis")) == ["gray.png", "large.png",
                                             "rgba.png"]
  # Two devices with two images each: the same detections.
  p = predict(tmp_path / "two", 2, "--batch_per_device=2")
  assert p.returncode == 0, p.stderr
  two = json.loads((tmp_path / "two" / "results.json").read_text())
  assert [(r["file_name"], r["category_id"]) for r in two] == \
      [(r["file_name"], r["category_id"]) for r in results]
  np.testing.assert_allclose([r["score"] for r in two],
                             [r["score"] for r in results], atol=1e-5)


def test_predict_a_folder_without_images_is_one_line(trained, tmp_path):
  p = run_command("-m", "scnet_jax.predict_images", "--config", CONFIG,
                  "--checkpoint", str(trained), "--images", str(tmp_path),
                  *shapes_flags())
  assert p.returncode == 2
  assert p.stderr.strip().splitlines() == [
      f"error: {tmp_path}: no image files (.jpg, .jpeg, .png, .bmp, .gif, "
      f".tif, .tiff, .webp)"]


def test_export_cli_round_trip(trained, tmp_path):
  from scnet_jax.export import load_exported
  p = run_command("-m", "scnet_jax.export", "--config", CONFIG,
                  "--checkpoint", str(trained), "--out", str(tmp_path / "exp"),
                  *shapes_flags())
  assert p.returncode == 0, p.stderr
  assert "exported step 4" in p.stdout
  predict = load_exported(str(tmp_path / "exp"))
  from scnet_jax.data.shapes import CATEGORIES
  assert predict.meta["class_names"] == list(CATEGORIES)
  images = np.zeros((1, 128, 128, 3), np.uint8)
  out = predict(images, np.array([[128, 128]], np.int32))
  assert out["boxes"].shape == (1, 20, 4)
