"""Host post-processing: padded detections -> COCO results.

Boxes go back to the original image (divided by the resize factors, as
mmdet's rescale does); masks are brought into the original image as their
kind says (structures.Detections: box-relative masks are pasted with
`ops.paste_masks` by the detections' rule, mmdet's `_do_paste_mask` or
torchvision's `paste_masks_in_image`; image-level masks are
resized with `ops.paste_image_masks`), thresholded and RLE-encoded.
"""
import numpy as np
from pycocotools import mask as mask_utils

from scnet_jax.models.structures import BOX_MASKS, IMAGE_MASKS
from scnet_jax.ops.paste import paste_image_masks, paste_masks


def image_detections(dets, i):
  """Image i of a host batch of Detections as a dict of its arrays (all D
  rows; num_detections a scalar) plus mask_kind, mask_stride and
  mask_paste."""
  return {"boxes": dets.boxes[i], "scores": dets.scores[i],
          "labels": dets.labels[i], "masks": dets.masks[i],
          "num_detections": dets.num_detections[i],
          "mask_scores": (None if dets.mask_scores is None else
                          dets.mask_scores[i]),
          "mask_kind": dets.mask_kind, "mask_stride": dets.mask_stride,
          "mask_paste": dets.mask_paste}


def masks_in_image(det, rows, boxes, scale, image_hw, mask_thr):
  """[len(rows), H, W] bool masks of the detections `rows` in the original
  image; boxes [len(rows), 4] are theirs in that image, scale (sx, sy) the
  resize factors."""
  kind = det.get("mask_kind", BOX_MASKS)
  masks = det["masks"][rows]
  if kind == BOX_MASKS:
    return paste_masks(masks, boxes, image_hw, mask_thr,
                       det.get("mask_paste", "mmdet"))
  if kind == IMAGE_MASKS:
    h, w = image_hw
    resized = (int(round(h * scale[1])), int(round(w * scale[0])))
    return paste_image_masks(masks, det["mask_stride"], resized, image_hw,
                             mask_thr)
  raise ValueError(f"unknown mask kind {kind!r}")


def detections_in_image(det, scale, image_hw, score_thr, mask_thr):
  """One image's detections (image_detections) with a score above
  `score_thr`, in the original image (scale (sx, sy): the resize factors;
  image_hw its size): boxes [n, 4] float32 (x1, y1, x2, y2), scores [n]
  float32, labels [n] int64 (contiguous), masks [n, H, W] bool."""
  sx, sy = scale
  n = int(det["num_detections"])
  keep = np.nonzero(det["scores"][:n] > score_thr)[0]
  boxes = det["boxes"][keep] / np.array([sx, sy, sx, sy], np.float32)
  masks = masks_in_image(det, keep, boxes, (sx, sy), image_hw, mask_thr)
  return {"boxes": boxes.astype(np.float32),
          "scores": det["scores"][keep].astype(np.float32),
          "labels": det["labels"][keep].astype(np.int64), "masks": masks}


def image_results(det, meta, cat_ids, mask_thr=0.5, with_masks=True):
  """One image's detections as COCO result dicts.

  Args:
    det: one image's detections (image_detections): boxes [D, 4]
      (resized-image pixels), scores [D], labels [D] (contiguous), masks
      (box-relative [D, M, M] unless mask_kind says otherwise),
      num_detections scalar.
    meta: dict with scale [2] (w, h factors), orig_hw [2], image_id.
    cat_ids: [num_classes] original category ids.
  Returns:
    list of {image_id, category_id, bbox [x, y, w, h], score,
    segmentation (compressed RLE with str counts)}, plus mask_score (the
    segm evaluation's score) when det has mask_scores.
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
    masks = masks_in_image(det, slice(0, n), boxes, (sx, sy), (h, w),
                           mask_thr)
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
      if det.get("mask_scores") is not None:
        r["mask_score"] = float(det["mask_scores"][i])
    out.append(r)
  return out


def batch_results(args):
  """Pool-friendly: (host Detections batch, meta batch, cat_ids, mask_thr)
  -> results of the valid rows."""
  dets, metas, cat_ids, mask_thr = args
  out = []
  for i in range(len(metas["image_id"])):
    if not metas["valid"][i]:
      continue
    meta = {k: v[i] for k, v in metas.items()}
    out.extend(image_results(image_detections(dets, i), meta, cat_ids,
                             mask_thr))
  return out
