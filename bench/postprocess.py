"""Evaluation post-processing per image: paste 100 masks of 28x28 into a
480x640 image, RLE-encode, and score. Ours: separable NumPy paste +
pycocotools RLE + faster-coco-eval. Peer: mmdet's _do_paste_mask
(torch.grid_sample over the image) + pycocotools RLE + pycocotools
COCOeval. Last line: peer time / ours per image.

  python bench/postprocess.py
"""
import contextlib
import io
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from bench.common import machine  # noqa: E402
from scnet_jax.evaluation.coco_eval import coco_metrics  # noqa: E402
from scnet_jax.ops.paste import paste_masks  # noqa: E402

H, W, N, IMAGES = 480, 640, 100, 20


def grid_sample_paste(masks, boxes):
  b = torch.tensor(boxes)
  x0, y0, x1, y1 = [b[:, i:i + 1] for i in range(4)]
  gy = ((torch.arange(H) + 0.5)[None] - y0) / (y1 - y0) * 2 - 1
  gx = ((torch.arange(W) + 0.5)[None] - x0) / (x1 - x0) * 2 - 1
  grid = torch.stack([gx[:, None, :].expand(N, H, W),
                      gy[:, :, None].expand(N, H, W)], dim=3)
  out = F.grid_sample(torch.tensor(masks)[:, None], grid,
                      align_corners=False)[:, 0]
  return (out >= 0.5).numpy()


def encode(binary):
  rles = mask_utils.encode(np.asfortranarray(
      binary.transpose(1, 2, 0).astype(np.uint8)))
  for r in rles:
    r["counts"] = r["counts"].decode()
  return rles


def make_dataset(tmp):
  rng = np.random.default_rng(0)
  images, anns, dets = [], [], []
  for i in range(IMAGES):
    images.append({"id": i + 1, "file_name": f"{i}.png", "height": H,
                   "width": W})
    xy = rng.uniform(0, [W - 100, H - 100], size=(N, 2))
    wh = rng.uniform(20, 100, size=(N, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    masks = rng.uniform(size=(N, 28, 28)).astype(np.float32)
    dets.append((i + 1, boxes, masks))
    for j in range(10):
      x, y, w, h = (float(v) for v in np.r_[xy[j], wh[j]])
      rle = encode(np.pad(np.ones((1, int(h), int(w)), bool),
                          ((0, 0), (int(y), H - int(y) - int(h)),
                           (int(x), W - int(x) - int(w)))))[0]
      anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                   "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                   "segmentation": rle})
  import json
  path = os.path.join(tmp, "gt.json")
  with open(path, "w") as f:
    json.dump({"images": images, "annotations": anns,
               "categories": [{"id": 1, "name": "a"}]}, f)
  return path, dets


def run(paste, evaluator, ann, dets):
  t0 = time.perf_counter()
  results = []
  for image_id, boxes, masks in dets:
    for box, rle in zip(boxes, encode(paste(masks, boxes))):
      results.append({"image_id": image_id, "category_id": 1,
                      "bbox": [float(box[0]), float(box[1]),
                               float(box[2] - box[0]),
                               float(box[3] - box[1])],
                      "score": 0.5, "segmentation": rle})
  t_paste = time.perf_counter() - t0
  with contextlib.redirect_stdout(io.StringIO()):
    metrics, _ = coco_metrics(ann, results, evaluator, iou_types=("segm",))
  return t_paste / IMAGES, (time.perf_counter() - t0) / IMAGES, metrics


def main():
  import tempfile
  torch.set_num_threads(os.cpu_count())
  with tempfile.TemporaryDirectory() as tmp:
    ann, dets = make_dataset(tmp)
    ours = run(lambda m, b: paste_masks(m, b, (H, W)), "faster_coco_eval",
               ann, dets)
    peer = run(grid_sample_paste, "pycocotools", ann, dets)
  assert abs(ours[2]["segm_AP"] - peer[2]["segm_AP"]) < 1e-3
  print(f"machine: {machine()}")
  print(f"paste + RLE per image: peer {peer[0] * 1e3:.1f} ms, ours "
        f"{ours[0] * 1e3:.1f} ms")
  print(f"paste + RLE + metrics per image: peer {peer[1] * 1e3:.1f} ms, "
        f"ours {ours[1] * 1e3:.1f} ms")
  print(f"ratio: {peer[1] / ours[1]:.3f}")


if __name__ == "__main__":
  main()
