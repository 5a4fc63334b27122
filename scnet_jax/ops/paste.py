"""Pasting 28x28 mask probabilities into the image (host, NumPy).

Two rules, a model's `test.mask_paste`:

"mmdet", mmdetection's `_do_paste_mask`: for every pixel centre (x + 0.5, y + 0.5)
the grid coordinate is (x + 0.5 - x0) / (x1 - x0) * 2 - 1, sampled with
`grid_sample(bilinear, zeros, align_corners=False)`, then thresholded. The
sampling grid is separable, so each paste is Wy @ M @ Wx^T with sparse
interpolation matrices, restricted to the box plus one pixel (outside it
every tap falls in the zero padding).

"torchvision", its `paste_masks_in_image`: the mask padded by one zero
cell on each side, its box scaled by (M + 2) / M about the centre and
truncated to integers, the padded mask resized (bilinear, half-pixel
centres) to the box's integer size + 1 and copied in; probabilities
above the threshold are the mask.
"""
import numpy as np


def _tap_matrix(coords, size):
  """[len(coords), size] bilinear taps of grid_sample (align_corners=False).

  coords are positions in the mask's pixel-index space.
  """
  lo = np.floor(coords)
  frac = coords - lo
  lo = lo.astype(np.int64)
  m = np.zeros((coords.shape[0], size), np.float32)
  rows = np.arange(coords.shape[0])
  for idx, wgt in ((lo, 1.0 - frac), (lo + 1, frac)):
    ok = (idx >= 0) & (idx < size)
    m[rows[ok], idx[ok]] += wgt[ok]
  return m


PASTE_RULES = ("mmdet", "torchvision")


def paste_masks(masks, boxes, image_hw, threshold=0.5, rule="mmdet"):
  """Pastes mask probabilities into full images.

  Args:
    masks: [n, M, M] float mask probabilities (sigmoid already applied).
    boxes: [n, 4] (x1, y1, x2, y2) in the target image's pixels.
    image_hw: (H, W) of the target image.
    threshold: binarisation threshold (mmdet: >=, torchvision: >); None
      returns probabilities.
    rule: one of PASTE_RULES.
  Returns:
    [n, H, W] bool (or float32 probabilities if threshold is None).
  """
  if rule not in PASTE_RULES:
    raise ValueError(f"mask paste rule: one of {PASTE_RULES}, got {rule!r}")
  masks = np.asarray(masks, np.float32)
  boxes = np.asarray(boxes, np.float32)
  h, w = int(image_hw[0]), int(image_hw[1])
  n = masks.shape[0]
  out = np.zeros((n, h, w), bool if threshold is not None else np.float32)
  if n == 0:
    return out
  if rule == "torchvision":
    _paste_torchvision(masks, boxes, out, threshold)
    return out
  mh, mw = masks.shape[1:]
  for i in range(n):
    x0, y0, x1, y1 = boxes[i]
    xa = int(np.clip(np.floor(min(x0, x1)) - 1, 0, w))
    ya = int(np.clip(np.floor(min(y0, y1)) - 1, 0, h))
    xb = int(np.clip(np.ceil(max(x0, x1)) + 1, 0, w))
    yb = int(np.clip(np.ceil(max(y0, y1)) + 1, 0, h))
    if xb <= xa or yb <= ya:
      continue
    # grid value g in [-1, 1] maps to pixel index ((g + 1) * size - 1) / 2.
    gy = (np.arange(ya, yb, dtype=np.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    gx = (np.arange(xa, xb, dtype=np.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    wy = _tap_matrix(((gy + 1) * mh - 1) / 2, mh)
    wx = _tap_matrix(((gx + 1) * mw - 1) / 2, mw)
    region = wy @ masks[i] @ wx.T
    out[i, ya:yb, xa:xb] = region >= threshold if threshold is not None \
        else region
  return out


def _paste_torchvision(masks, boxes, out, threshold):
  """torchvision's rule (module docstring) into out [n, H, W]."""
  h, w = out.shape[1:]
  m = masks.shape[-1]
  padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
  scale = (m + 2.0) / m
  half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
  centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5
  # torch's .to(int64) truncates towards zero.
  expanded = np.trunc(np.concatenate([centre - half, centre + half],
                                     axis=1)).astype(np.int64)
  for i, (x0, y0, x1, y1) in enumerate(expanded):
    bw, bh = max(int(x1 - x0 + 1), 1), max(int(y1 - y0 + 1), 1)
    region = _resize_taps(m + 2, bh) @ padded[i] @ _resize_taps(m + 2, bw).T
    xa, xb = max(x0, 0), min(x1 + 1, w)
    ya, yb = max(y0, 0), min(y1 + 1, h)
    if xb <= xa or yb <= ya:
      continue
    region = region[ya - y0:yb - y0, xa - x0:xb - x0]
    out[i, ya:yb, xa:xb] = region > threshold if threshold is not None \
        else region


def _resize_taps(in_size, out_size):
  """[out_size, in_size] weights of a bilinear resize with half-pixel
  centres (torch interpolate, align_corners=False)."""
  src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5,
                   0.0)
  lo = np.floor(src).astype(np.int64)
  frac = (src - lo).astype(np.float32)
  hi = np.minimum(lo + 1, in_size - 1)
  m = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(m, (rows, lo), 1.0 - frac)
  np.add.at(m, (rows, hi), frac)
  return m


def paste_image_masks(masks, stride, resized_hw, image_hw, threshold=0.5):
  """Canvas-level mask probabilities -> masks of the original image.

  As mmdet's SOLO: upsampled x stride (bilinear) to the padded canvas,
  cropped to the resized image, resized (bilinear) to the original size,
  thresholded. Both resizes are separable, so each mask is Ay @ M @ Ax^T.

  Args:
    masks: [n, Hm, Wm] float probabilities over the padded canvas, at
      1 / stride of its resolution.
    resized_hw: (h, w) of the resized image on the canvas.
    image_hw: (H, W) of the original image.
    threshold: binarisation threshold (>), as mmdet; None returns
      probabilities.
  Returns:
    [n, H, W] bool (or float32 probabilities if threshold is None).
  """
  masks = np.asarray(masks, np.float32)
  mh, mw = masks.shape[1:]
  axes = []
  for m, r, o in zip((mh, mw), resized_hw, image_hw):
    up = _resize_taps(m, m * stride)[:int(r)]
    axes.append(_resize_taps(int(r), int(o)) @ up)
  ay, ax = axes
  out = np.zeros((masks.shape[0], int(image_hw[0]), int(image_hw[1])),
                 bool if threshold is not None else np.float32)
  for i, m in enumerate(masks):
    region = ay @ m @ ax.T
    out[i] = region > threshold if threshold is not None else region
  return out
