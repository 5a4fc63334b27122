"""A procedurally generated instance-segmentation dataset in COCO format.

Several shape categories of varied size, colour and rotation, placed with
overlaps (later shapes occlude earlier ones, whose masks lose the hidden
part) on textured backgrounds. Deterministic by seed. Written as
`<root>/{train,val}/*.png` plus `<root>/annotations/{train,val}.json` with
RLE segmentations, and read back through the same COCO reader as real data.

  python -m scnet_jax.data.shapes --out data/shapes
"""
import argparse
import json
import math
import os

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

CATEGORIES = ("circle", "square", "triangle", "star")
MIN_VISIBLE = 0.4   # drop instances occluded beyond this fraction


def _polygon(kind, cx, cy, r, angle):
  if kind == "square":
    n, radii = 4, [r]
  elif kind == "triangle":
    n, radii = 3, [r]
  else:  # star
    n, radii = 10, [r, 0.45 * r]
  pts = []
  for i in range(n):
    a = angle + 2 * math.pi * i / n
    rr = radii[i % len(radii)]
    pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
  return pts


def _background(rng, size):
  """Smooth colour gradient plus noise and random stripes."""
  h = w = size
  base = rng.uniform(40, 215, size=3)
  tilt = rng.uniform(-60, 60, size=(2, 3))
  yy, xx = np.mgrid[0:h, 0:w] / size
  img = base + yy[..., None] * tilt[0] + xx[..., None] * tilt[1]
  period = rng.uniform(6, 20)
  phase = rng.uniform(0, 2 * math.pi)
  direction = rng.uniform(0, math.pi)
  stripes = np.sin((xx * math.cos(direction) + yy * math.sin(direction))
                   * size / period * 2 * math.pi + phase)
  img = img + stripes[..., None] * rng.uniform(5, 25)
  img = img + rng.normal(0, 8, size=(h, w, 3))
  return img


def _shape_mask(kind, cx, cy, r, angle, size):
  canvas = Image.new("L", (size, size), 0)
  draw = ImageDraw.Draw(canvas)
  if kind == "circle":
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
  else:
    draw.polygon(_polygon(kind, cx, cy, r, angle), fill=1)
  return np.asarray(canvas, dtype=bool)


def make_image(rng, size, max_objects):
  """Returns (uint8 image [size, size, 3], list of (category index, mask))."""
  img = _background(rng, size)
  instances = []
  for _ in range(rng.integers(1, max_objects + 1)):
    kind = int(rng.integers(len(CATEGORIES)))
    r = rng.uniform(0.06, 0.25) * size
    cx, cy = rng.uniform(0.1, 0.9, size=2) * size
    m = _shape_mask(CATEGORIES[kind], cx, cy, r, rng.uniform(0, 2 * math.pi),
                    size)
    if m.sum() < 30:
      continue
    colour = rng.uniform(0, 255, size=3)
    shade = 1.0 + 0.15 * rng.normal(size=(size, size, 1))
    img = np.where(m[..., None], colour * shade, img)
    for _, earlier in instances:
      earlier &= ~m
    instances.append((kind, m))
  kept = [(k, m) for k, m in instances if m.sum() >= 30]
  return np.clip(img, 0, 255).astype(np.uint8), kept


def _annotation(ann_id, image_id, kind, mask):
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  x, y, w, h = mask_utils.toBbox(rle).tolist()
  rle["counts"] = rle["counts"].decode("ascii")
  return {"id": ann_id, "image_id": image_id, "category_id": kind + 1,
          "segmentation": rle, "area": float(mask.sum()),
          "bbox": [x, y, w, h], "iscrowd": 0}


def write_split(root, split, num_images, size, max_objects, seed,
                progress=False):
  """Writes one split (with a progress bar when `progress`); returns the
  path of its annotation file."""
  from scnet_jax.progress import bar as progress_bar
  bar = progress_bar(num_images, f"shapes {split}", "img", progress)
  rng = np.random.default_rng([seed, {"train": 0, "val": 1}[split]])
  image_dir = os.path.join(root, split)
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  images, annotations = [], []
  for i in range(num_images):
    img, instances = make_image(rng, size, max_objects)
    name = f"{i:06d}.png"
    Image.fromarray(img).save(os.path.join(image_dir, name))
    images.append({"id": i + 1, "file_name": name, "height": size,
                   "width": size})
    for kind, m in instances:
      annotations.append(_annotation(len(annotations) + 1, i + 1, kind, m))
    bar.update(1)
  bar.close()
  data = {"images": images, "annotations": annotations,
          "categories": [{"id": i + 1, "name": n, "supercategory": "shape"}
                         for i, n in enumerate(CATEGORIES)]}
  ann_file = os.path.join(root, "annotations", f"{split}.json")
  tmp = ann_file + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f)
  os.replace(tmp, ann_file)  # the JSON's presence marks a complete split
  return ann_file


def ensure_dataset(root, num_train=2000, num_val=200, size=128,
                   max_objects=6, seed=0, log=print, progress=False):
  """Generates the dataset under `root` unless it is already there."""
  stamp = os.path.join(root, "annotations", "params.json")
  params = dict(num_train=num_train, num_val=num_val, size=size,
                max_objects=max_objects, seed=seed)
  if os.path.exists(stamp):
    with open(stamp) as f:
      if json.load(f) == params:
        return
  log(f"Generating the shapes dataset in {root} ({num_train} train, "
      f"{num_val} val images of {size}x{size})...")
  write_split(root, "train", num_train, size, max_objects, seed, progress)
  write_split(root, "val", num_val, size, max_objects, seed, progress)
  with open(stamp, "w") as f:
    json.dump(params, f)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="data/shapes")
  p.add_argument("--num-train", type=int, default=2000)
  p.add_argument("--num-val", type=int, default=200)
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args()
  ensure_dataset(a.out, a.num_train, a.num_val, a.size, seed=a.seed)


if __name__ == "__main__":
  main()
