"""Prediction overlays for the first N images of a split, drawn from an
evaluation's COCO results file (no second run of the model: a Predictor
here compiled its own program, 15 s of a tiny training run's end)."""
import collections
import json
import os

import numpy as np

from scnet_jax.data.coco import CocoSource, decode_mask
from scnet_jax.errors import DataError
from scnet_jax.drawing import draw_instances, side_by_side


def _detections(results, rec, cat_to_label, score_thr, where):
  """The results of image `rec` with score >= score_thr -> (boxes [n, 4]
  xyxy, labels [n] contiguous, masks [n, H, W] bool or None, scores
  [n])."""
  rs = [r for r in results.get(rec["image_id"], [])
        if r["score"] >= score_thr]
  boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in
                    (r["bbox"] for r in rs)], np.float32).reshape(-1, 4)
  labels = np.array([cat_to_label[r["category_id"]] for r in rs], np.int64)
  scores = np.array([r["score"] for r in rs], np.float32)
  masks = None
  if rs and all("segmentation" in r for r in rs):
    masks = np.stack([decode_mask(r["segmentation"], rec["height"],
                                  rec["width"], where) for r in rs]) > 0
  return boxes, labels, masks, scores


def write_prediction_pictures(results_file, ann_file, image_dir, out_dir,
                              num, score_thr, compare_gt=False,
                              class_names=None):
  """Writes out_dir/pred_{image_id}.png for the split's first `num`
  images: the detections of results_file (COCO results, as eval.py and
  train.py write results.json) with score >= score_thr, and the ground
  truth on the left when compare_gt; returns the paths. class_names:
  default the split's."""
  src = CocoSource(ann_file, image_dir, train=False)
  names = class_names or src.class_names
  try:
    with open(results_file) as f:
      flat = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"{results_file}: cannot read the results ({e})") from e
  results = collections.defaultdict(list)
  for r in flat:
    results[r["image_id"]].append(r)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for rec in src.records[:num]:
    image = src.load_image(rec)
    boxes, labels, masks, scores = _detections(
        results, rec, src.cat_to_label, score_thr,
        f"{results_file}: a result of image {rec['image_id']}")
    pic = draw_instances(
        image, boxes, labels, masks, scores, names,
        caption=f"image {rec['image_id']}: predictions, score >= "
        f"{score_thr:.2f}")
    if compare_gt:
      truth = draw_instances(image, rec["boxes"], rec["labels"],
                             src.load_masks(rec), None, names,
                             caption=f"image {rec['image_id']}: ground truth")
      pic = side_by_side([truth, pic])
    path = os.path.join(out_dir, f"pred_{rec['image_id']}.png")
    pic.save(path)
    paths.append(path)
  return paths
