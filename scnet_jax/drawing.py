"""Pictures of instances: boxes, masks and labels drawn over an image
(predictions in eval.py --visualize and predict_images --pictures; loader
batches in `python -m scnet_jax.visualize`)."""
import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def palette(i):
  r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 1.0)
  return int(r * 255), int(g * 255), int(b * 255)


def _font(size):
  """PIL's built-in scalable font (a bitmap one on old Pillow)."""
  try:
    return ImageFont.load_default(size=size)
  except TypeError:
    return ImageFont.load_default()


def _overlaps(a, b):
  return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_label(box, size, taken, width, height, top=0):
  """Where a label of `size` (w, h) goes for `box`: above its top-left
  corner, inside it, below it, or the same at its right end, whichever
  first covers no other box or label; the first otherwise. Labels stay in
  the rows [top, height) and columns [0, width)."""
  x1, y1, x2, y2 = box
  w, h = size
  spots = [(x1, y1 - h), (x1, y1), (x1, y2), (x1, y2 - h),
           (x2 - w, y1 - h), (x2 - w, y1), (x2 - w, y2), (x2 - w, y2 - h)]
  inside = [(min(max(x, 0), width - w), min(max(y, top), height - h))
            for x, y in spots]
  for x, y in inside:
    r = (x, y, x + w, y + h)
    if not any(_overlaps(r, t) for t in taken):
      return r
  x, y = inside[0]
  return (x, y, x + w, y + h)


def draw_instances(image, boxes, labels, masks=None, scores=None,
                   class_names=None, caption=None, min_side=512,
                   alpha=0.45):
  """A picture a person can read of instances over an image.

  image [H, W, 3] uint8; boxes [n, 4] xyxy pixels; labels [n] contiguous;
  masks [n, H, W] bool or None; scores [n] or None. Small images are
  upscaled (nearest) so the long side is at least min_side; each class has
  one colour (legend below the image), each instance a shade of it; labels
  are placed where they cover no other box when there is such a place;
  `caption` (e.g. the score threshold) is written above. -> PIL.Image.
  """
  h, w = image.shape[:2]
  k = max(1, int(np.ceil(min_side / max(h, w))))
  big = np.repeat(np.repeat(image, k, 0), k, 1).astype(np.float32)
  labels = [int(v) for v in labels]
  name = lambda c: class_names[c] if class_names else str(c)
  colour = palette
  for i, c in enumerate(labels):
    if masks is not None:
      shade = 0.75 + 0.25 * ((i * 0.37) % 1.0)
      m = np.repeat(np.repeat(masks[i].astype(bool), k, 0), k, 1)
      big[m] = big[m] * (1 - alpha) + np.asarray(colour(c)) * shade * alpha
  font = _font(max(12, min(24, k * 8 + 6)))
  pad = font.size // 3 if hasattr(font, "size") else 3
  line = (font.size if hasattr(font, "size") else 11) + 2 * pad
  classes = sorted(set(labels))
  # Legend entries (swatch, name), wrapped into rows of the picture width.
  rows, x = [[]], 0
  for c in classes:
    entry = line + ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(
        name(c), font=font) + line
    if rows[-1] and x + entry > w * k:
      rows.append([])
      x = 0
    rows[-1].append((c, x))
    x += entry
  top = line if caption else 0
  bottom = line * len(rows) if classes else 0
  pic = Image.new("RGB", (w * k, h * k + top + bottom), (32, 32, 32))
  pic.paste(Image.fromarray(big.clip(0, 255).astype(np.uint8)), (0, top))
  draw = ImageDraw.Draw(pic)
  scaled = [tuple(float(v) * k for v in b) for b in boxes]
  scaled = [(x1, y1 + top, x2, y2 + top) for x1, y1, x2, y2 in scaled]
  for c, b in zip(labels, scaled):
    draw.rectangle(b, outline=colour(c), width=2)
  taken = list(scaled)
  for i, (c, b) in enumerate(zip(labels, scaled)):
    text = name(c) if scores is None else f"{name(c)} {float(scores[i]):.2f}"
    tw = draw.textlength(text, font=font) + 2 * pad
    r = _place_label(b, (tw, line), [t for t in taken if t != b],
                     pic.width, top + h * k, top)
    taken.append(r)
    draw.rectangle(r, fill=colour(c))
    draw.text((r[0] + pad, r[1] + pad), text, fill=(0, 0, 0), font=font)
  if caption:
    draw.text((pad, pad), caption, fill=(255, 255, 255), font=font)
  for i, row in enumerate(rows):  # legend: a swatch per class present
    y = top + h * k + i * line + pad
    for c, x in row:
      draw.rectangle((x + pad, y, x + line - pad, y + line - 2 * pad),
                     fill=colour(c))
      draw.text((x + line, y), name(c), fill=(255, 255, 255), font=font)
  return pic


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


def side_by_side(pictures):
  """PIL images next to each other, top-aligned, on a dark background."""
  out = Image.new("RGB", (sum(p.width for p in pictures),
                          max(p.height for p in pictures)), (32, 32, 32))
  x = 0
  for p in pictures:
    out.paste(p, (x, 0))
    x += p.width
  return out


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
      k = pic.width // hw[1]  # draw_instances' upscaling
      sem = Image.fromarray(semantic_picture(batch["gt_semantic"][i], 8 * k))
      pic = side_by_side([pic, sem])
    pics.append(pic)
  return pics
