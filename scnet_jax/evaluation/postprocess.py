"""Host post-processing: padded detections -> COCO results.

Boxes go back to the original image (divided by the resize factors, as
mmdet's rescale does); masks are pasted with `ops.paste_masks`
(mmdet `_do_paste_mask`), thresholded and RLE-encoded.
"""
import numpy as np
from pycocotools import mask as mask_utils

from scnet_jax.ops.paste import paste_masks


def image_results(det, meta, cat_ids, mask_thr=0.5, with_masks=True):
  """One image's detections as COCO result dicts.

  Args:
    det: dict of numpy arrays for one image: boxes [D, 4] (resized-image
      pixels), scores [D], labels [D] (contiguous), masks [D, 28, 28]
      probabilities, num_detections scalar.
    meta: dict with scale [2] (w, h factors), orig_hw [2], image_id.
    cat_ids: [num_classes] original category ids.
  Returns:
    list of {image_id, category_id, bbox [x, y, w, h], score,
    segmentation (compressed RLE with str counts)}.
  """
  n = int(det["num_detections"])
  if n == 0:
    return []
  sx, sy = (float(v) for v in meta["scale"])
  h, w = (int(v) for v in meta["orig_hw"])
  boxes = det["boxes"][:n] / np.array([sx, sy, sx, sy], np.float32)
  scores = det["scores"][:n]
  labels = det["labels"][:n]
  image_id = int(meta["image_id"])
  rles = [None] * n
  if with_masks:
    masks = paste_masks(det["masks"][:n], boxes, (h, w), mask_thr)
    rles = mask_utils.encode(np.asfortranarray(
        masks.transpose(1, 2, 0).astype(np.uint8)))
  out = []
  for i in range(n):
    x1, y1, x2, y2 = (float(v) for v in boxes[i])
    r = {"image_id": image_id, "category_id": int(cat_ids[labels[i]]),
         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores[i])}
    if with_masks:
      rle = dict(rles[i])
      rle["counts"] = rle["counts"].decode("ascii")
      r["segmentation"] = rle
    out.append(r)
  return out


def batch_results(args):
  """Pool-friendly: (det batch, meta batch, cat_ids, mask_thr) -> results of
  the valid rows."""
  dets, metas, cat_ids, mask_thr = args
  out = []
  for i in range(len(metas["image_id"])):
    if not metas["valid"][i]:
      continue
    det = {k: v[i] for k, v in dets.items()}
    meta = {k: v[i] for k, v in metas.items()}
    out.extend(image_results(det, meta, cat_ids, mask_thr))
  return out
