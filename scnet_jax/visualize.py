"""Pictures: predictions over images, and what the loader feeds the model.

  python -m scnet_jax.visualize --config configs/scnet_tiny_shapes.py \
      --out runs/samples --num 4

draws loaded, augmented training samples (boxes, masks from their crops,
and the stride-8 semantic map beside them). eval.py --visualize N draws
predictions.
"""
import colorsys
import os

import numpy as np
from absl import flags
from PIL import Image, ImageDraw

from scnet_jax.cli import config_flag, run_cli


def palette(i):
  r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 1.0)
  return int(r * 255), int(g * 255), int(b * 255)


def draw_instances(image, boxes, labels, masks=None, scores=None,
                   class_names=None, alpha=0.45):
  """image [H, W, 3] uint8; boxes [n, 4] xyxy pixels; labels [n];
  masks [n, H, W] bool or None; scores [n] or None -> PIL.Image."""
  out = image.astype(np.float32).copy()
  for i in range(len(boxes)):
    if masks is not None:
      c = np.asarray(palette(int(labels[i]) * 7 + i), np.float32)
      m = masks[i].astype(bool)
      out[m] = out[m] * (1 - alpha) + c * alpha
  pil = Image.fromarray(out.clip(0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(pil)
  for i in range(len(boxes)):
    colour = palette(int(labels[i]) * 7 + i)
    x1, y1, x2, y2 = (float(v) for v in boxes[i])
    draw.rectangle([x1, y1, x2, y2], outline=colour, width=1)
    name = class_names[int(labels[i])] if class_names else str(labels[i])
    text = name if scores is None else f"{name} {float(scores[i]):.2f}"
    draw.text((x1 + 1, max(y1 - 10, 0)), text, fill=colour)
  return pil


def crops_to_masks(crops, windows, hw):
  """Paste the loader's fixed-size crops back into [n, H, W] bool masks."""
  h, w = hw
  out = np.zeros((len(crops), h, w), bool)
  r = crops.shape[-1]
  for i, (crop, (x0, y0, x1, y1)) in enumerate(zip(crops, windows)):
    ys = np.arange(h) + 0.5
    xs = np.arange(w) + 0.5
    cy = np.floor((ys - y0) / max(y1 - y0, 1e-6) * r).astype(int)
    cx = np.floor((xs - x0) / max(x1 - x0, 1e-6) * r).astype(int)
    oky, okx = (cy >= 0) & (cy < r), (cx >= 0) & (cx < r)
    sub = crop[np.clip(cy, 0, r - 1)][:, np.clip(cx, 0, r - 1)]
    out[i] = sub.astype(bool) & oky[:, None] & okx[None, :]
  return out


def semantic_picture(sem, scale=8):
  """Stride-8 label map -> colour picture at image scale (255 = grey)."""
  rgb = np.zeros((*sem.shape, 3), np.uint8)
  for v in np.unique(sem):
    rgb[sem == v] = (90, 90, 90) if v == 255 else palette(int(v) * 7)
  return np.repeat(np.repeat(rgb, scale, 0), scale, 1)


def draw_batch(batch, class_names=None):
  """One picture per example of a loader batch."""
  pics = []
  for i in range(len(batch["image"])):
    n = int(batch["gt_valid"][i].sum())
    hw = batch["image"][i].shape[:2]
    masks = crops_to_masks(batch["gt_mask_crops"][i][:n],
                           batch["gt_mask_windows"][i][:n], hw)
    pic = draw_instances(batch["image"][i], batch["gt_boxes"][i][:n],
                         batch["gt_labels"][i][:n], masks,
                         class_names=class_names)
    if "gt_semantic" in batch:
      sem = Image.fromarray(semantic_picture(batch["gt_semantic"][i]))
      both = Image.new("RGB", (pic.width + sem.width, pic.height))
      both.paste(pic, (0, 0))
      both.paste(sem, (pic.width, 0))
      pic = both
    pics.append(pic)
  return pics


def main(argv):
  del argv
  from scnet_jax.data import loader
  from scnet_jax.data.sources import train_source
  config = flags.FLAGS.config
  src = train_source(config)
  c = config.copy_and_resolve_references()
  c.global_batch = flags.FLAGS.num
  it, _ = loader.train_iterator(src, c, 1)
  os.makedirs(flags.FLAGS.out, exist_ok=True)
  for i, pic in enumerate(draw_batch(next(it), src.class_names)):
    path = os.path.join(flags.FLAGS.out, f"sample_{i}.png")
    pic.save(path)
    print(path)


if __name__ == "__main__":
  config_flag()
  flags.DEFINE_string("out", "samples", "Output folder for the PNGs.")
  flags.DEFINE_integer("num", 4, "Number of samples to draw.")
  run_cli(main)
